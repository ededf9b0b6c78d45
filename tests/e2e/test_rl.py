"""GRPO and PPO from the SFT checkpoint, on Ray + vLLM (CPU) + DeepSpeed: roles apart, accuracy up, critic learns."""
import json

import pytest

from tests.e2e.conftest import last, run_job

pytestmark = pytest.mark.e2e


def heldout_gain(metrics: list[dict]) -> tuple[float, float]:
    accuracy = [m["eval/accuracy"] for m in metrics if m.get("eval/accuracy") is not None]
    return accuracy[0], accuracy[-1]


@pytest.fixture(scope="module")
def grpo_run(sft_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo")
    return out, run_job("grpo", out, f"model.path={sft_model[0] / 'checkpoints' / 'final'}")


def test_grpo_raises_heldout_accuracy(grpo_run):
    before, after = heldout_gain(grpo_run[1])
    # eval is greedy on the same 200 held-out prompts, so the gap is the policy's, not sampling noise
    assert after >= before + 0.05, f"held-out accuracy {before:.3f} -> {after:.3f}"


def test_policy_reference_and_rollout_run_in_separate_actors(grpo_run):
    placement = json.loads((grpo_run[0] / "placement.json").read_text())
    pids = {role: {a["pid"] for a in actors} for role, actors in placement.items()}
    assert len(pids["policy"]) == 2 and len(pids["reference"]) == 1 and len(pids["rollout"]) == 1
    assert not (pids["policy"] & pids["reference"]) and not (pids["policy"] & pids["rollout"])
    groups = {role: {a["placement_group"] for a in actors} for role, actors in placement.items()}
    assert len(set.union(*groups.values())) == 3, "each role on its own placement group"


def test_grpo_metrics_are_complete(grpo_run):
    step = grpo_run[1][-1]
    for key in ("reward/mean", "reward/std", "train/kl", "train/entropy", "train/clip_frac", "response/length_mean",
                "perf/gen_s", "perf/score_s", "perf/ref_s", "perf/train_s", "perf/sync_s", "perf/step_s",
                "perf/gen_tokens_per_s", "eval/accuracy"):
        assert step.get(key) is not None, key


def test_ppo_value_loss_falls_and_accuracy_rises(sft_model, tmp_path):
    metrics = run_job("ppo", tmp_path, f"model.path={sft_model[0] / 'checkpoints' / 'final'}")
    value_losses = [m["critic/value_loss"] for m in metrics if "critic/value_loss" in m]
    assert sum(value_losses[-5:]) < 0.5 * sum(value_losses[:5]), "the critic learns the returns"
    before, after = heldout_gain(metrics)
    assert after >= before + 0.03, f"held-out accuracy {before:.3f} -> {after:.3f}"
