"""A user's own task, not the embedded arithmetic: jsonl files with columns of their own, a reward function file,
SFT with data.eval, then GRPO with that reward, each evaluated on the user's rows by the user's reward. The
`solution` column is both SFT's response (mapped) and what the reward reads (by its own name), as in TRL."""
import json
import random

import pytest

from tests.e2e.conftest import run_job

pytestmark = pytest.mark.e2e

REWARD = '''
def larger(prompts, completions, solution, difficulty):
    """1 for the larger number, 0.5 for the other one (the model read the question), else 0."""
    assert set(difficulty) <= {"easy", "hard"}, difficulty
    scores = []
    for prompt, completion, answer in zip(prompts, completions, solution):
        said = completion.strip()
        scores.append(1.0 if said == answer else 0.5 if said and said in prompt else 0.0)
    return scores
'''


def write_task(folder, count: int, seed: int) -> str:
    rng = random.Random(seed)
    path = folder / f"larger_{seed}.jsonl"
    with path.open("w") as f:
        for _ in range(count):
            a, b = rng.sample(range(10, 100), 2)
            f.write(json.dumps({"question": f"Which is larger, {a} or {b}?", "solution": str(max(a, b)),
                                "difficulty": "hard" if abs(a - b) < 10 else "easy"}) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def user_task(pretrained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_task")
    (folder / "rewards.py").write_text(REWARD)
    common = [f"data.train={write_task(folder, 3000, 0)}", f"data.eval={write_task(folder, 64, 1)}",
              "data.columns.prompt=question", "data.columns.response=solution",
              f"reward=[{{type: function, path: '{folder / 'rewards.py'}:larger'}}]", "trainer.eval_samples=64"]
    sft = run_job("sft", folder / "sft", f"model.path={pretrained[0] / 'checkpoints' / 'final'}", *common,
                  "trainer.max_steps=150", "trainer.eval_every=150")
    grpo = run_job("grpo", folder / "grpo", f"model.path={folder / 'sft' / 'checkpoints' / 'final'}", *common,
                   "trainer.max_steps=30", "trainer.eval_every=30", "trainer.batch_size=16")
    return folder, common, sft, grpo


def test_sft_and_grpo_are_evaluated_by_the_users_reward_on_the_users_rows(user_task):
    for metrics in user_task[2:]:
        evals = [m for m in metrics if "eval/reward" in m]
        assert [m["step"] for m in evals] == [0, metrics[-1]["step"]]
        assert evals[0]["eval/larger"] == evals[0]["eval/reward"]
        assert "eval/accuracy" not in evals[-1], "the user's rows have no answer column: no arithmetic check"
    sft, grpo = ([m["eval/reward"] for m in metrics if "eval/reward" in m] for metrics in user_task[2:])
    assert sft[1] > sft[0] + 0.3, f"SFT eval/reward {sft}"
    assert grpo[1] > grpo[0], f"GRPO eval/reward {grpo}"


def test_rlsys_eval_scores_both_checkpoints_and_judges_them_against_the_sft_model(user_task):
    from rlsys.config.compose import compose_job
    from rlsys.launchers.run import run_config

    folder, common, sft_metrics, grpo_metrics = user_task
    sft, grpo = (str(folder / job / "checkpoints" / "final") for job in ("sft", "grpo"))
    out = folder / "eval"
    run_config(compose_job("eval", [f"output_dir={out}", f"eval.models=[{sft},{grpo}]", f"eval.against={sft}",
                                    f"judge.model={sft}", *common]))
    summary = json.loads((out / "eval.json").read_text())
    assert list(summary["models"]) == [sft, grpo] and summary["rows"] == 64
    # the same greedy answers as each job's own final evaluation (GRPO's came from vLLM too, SFT's from HF)
    for model, metrics in ((sft, sft_metrics), (grpo, grpo_metrics)):
        assert summary["models"][model]["eval/reward"] == pytest.approx(metrics[-1]["eval/reward"], abs=0.05)
    for model in (sft, grpo):
        rates = summary["models"][model]
        assert rates["eval/pairwise/win_rate"] + rates["eval/pairwise/tie_rate"] + \
            rates["eval/pairwise/loss_rate"] == pytest.approx(1.0)
    # against itself every pair is two identical answers: asked in both orders, no verdict can favour either
    assert summary["models"][sft]["eval/pairwise/win_rate"] == summary["models"][sft]["eval/pairwise/loss_rate"] == 0
    samples = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 128 and {"completion", "reward", "reference_completion", "outcome"} <= set(samples[0])
