"""`rlsys distill`: the teacher's verified answers become SFT data, and the student learns from them: it improves
on its start or reaches the teacher's level (a student that starts level with the teacher has little to gain).
On-policy (distill.on_policy=true): the student's reverse KL to the teacher falls, a crashed run resumes exactly,
and the teacher's weights never change."""
import json

import pytest

from tests.e2e.conftest import run_job

pytestmark = pytest.mark.e2e


def test_distill_writes_a_dataset_and_the_student_improves(pretrained, sft_model, tmp_path):
    teacher, student = sft_model[0] / "checkpoints" / "final", pretrained[0] / "checkpoints" / "final"
    metrics = run_job("distill", tmp_path, f"distill.teacher={teacher}", f"model.path={student}",
                      "distill.n_samples=8", "distill.temperature=1.0", "trainer.max_steps=40",
                      "trainer.eval_every=20")
    rows = [json.loads(line) for line in (tmp_path / "distilled.jsonl").read_text().splitlines()]
    funnel = json.loads((tmp_path / "distill_summary.json").read_text())
    assert funnel["kept"] == len(rows) > 0 and funnel["answers"] == 8 * funnel["prompts"]
    assert all(row["reward"] == 1.0 and row["messages"][-1]["role"] == "assistant" for row in rows)
    accuracy = [m["eval/accuracy"] for m in metrics if m.get("eval/accuracy") is not None]
    teacher_accuracy = [m["eval/accuracy"] for m in sft_model[1] if m.get("eval/accuracy") is not None][-1]
    assert accuracy[-1] >= min(accuracy[0] + 0.03, teacher_accuracy - 0.02), \
        f"student held-out accuracy {accuracy}, teacher {teacher_accuracy}"
    assert (tmp_path / "checkpoints" / "final" / "config.json").exists()


# ---- on-policy: the student samples, the teacher grades every token ------------------------------------------
# the on-policy preset (its learning rate, one policy rank with both cores), smaller
ON_POLICY = ["distill.on_policy=true", "trainer.batch_size=16", "algo.n_samples=4", "trainer.max_steps=8",
             "trainer.save_every=2", "rollout.num_engines=1"]
COMPARED = ("distill/reverse_kl", "distill/teacher_logp_mean", "train/policy_loss", "train/grad_norm", "reward/mean",
            "response/length_mean")


def on_policy(pretrained, sft_model, out, *overrides: str) -> list[dict]:
    """The pretrained student learns from the SFT teacher, which knows the answer format it lacks."""
    return run_job("distill", out, f"model.path={pretrained[0] / 'checkpoints' / 'final'}",
                   f"distill.teacher={sft_model[0] / 'checkpoints' / 'final'}", *ON_POLICY, *overrides)


@pytest.fixture(scope="module")
def on_policy_run(pretrained, sft_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("on_policy")
    return out, on_policy(pretrained, sft_model, out, "trainer.eval_every=4", "trainer.keep_last=4")


def test_on_policy_distillation_pulls_the_student_to_the_teacher(on_policy_run):
    out, metrics = on_policy_run
    kl = [m["distill/reverse_kl"] for m in metrics if "distill/reverse_kl" in m]
    # step 1 samples before any update: the distance the run started from
    assert len(kl) == 8 and sum(kl[-3:]) / 3 < 0.75 * kl[0], f"reverse KL to the teacher per step {kl}"
    assert all(m["distill/teacher_logp_mean"] <= 0 and "reward/mean" in m for m in metrics if "distill/reverse_kl" in m)
    placement = json.loads((out / "placement.json").read_text())
    assert set(placement) == {"policy", "teacher", "rollout"}  # no reference, no critic: the teacher anchors
    assert (out / "checkpoints" / "final" / "config.json").exists()


def test_on_policy_distillation_resumes_exactly(pretrained, sft_model, on_policy_run, tmp_path):
    """The run's folder as a crash after step 5 would leave it: resume=auto logs steps 5-8 as the run did."""
    from tests.e2e.test_fault_tolerance import as_crashed_after_step_5, assert_same_steps

    crashed = tmp_path / "distill"
    as_crashed_after_step_5(on_policy_run[0], crashed)
    resumed = on_policy(pretrained, sft_model, crashed, "trainer.eval_every=4", "resume=auto")
    expected = on_policy_run[1]
    assert [m["step"] for m in resumed] == [m["step"] for m in expected], "no step lost or repeated"
    assert_same_steps(expected, resumed, first_step=5, keys=COMPARED)


def test_the_teacher_is_never_trained(pretrained, sft_model, tmp_path):
    """Three steps move the student's logprobs of fixed responses and leave the teacher's exactly as they were."""
    from rlsys.config.compose import compose_job
    from rlsys.config.validate import to_typed
    from rlsys.trainers.rl import RLController

    cfg = to_typed(compose_job("distill", [
        f"output_dir={tmp_path}", "logger=[jsonl]", f"model.path={pretrained[0] / 'checkpoints' / 'final'}",
        f"distill.teacher={sft_model[0] / 'checkpoints' / 'final'}", *ON_POLICY]))
    controller = RLController(cfg)
    controller.start()
    try:
        probe = {"prompt_ids": controller.row_prompts[:4],
                 "response_ids": controller.tokenizer(["12", "7", "40", "3"])["input_ids"]}
        logprobs = lambda group: group.logprobs(probe, 1.0)["logp"]
        teacher, student = logprobs(controller.roles.teacher), logprobs(controller.roles.policy)
        for step in (1, 2, 3):
            controller.step(step)
        assert logprobs(controller.roles.teacher) == teacher
        assert logprobs(controller.roles.policy) != student
    finally:
        controller.stop()
