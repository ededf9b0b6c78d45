"""GRPO and PPO from the SFT checkpoint, on Ray + vLLM (CPU) + DeepSpeed: roles apart, rewards up, critic learns.

The reward is a user function the policy can satisfy in a few dozen steps (see shaped_rewards.py), so a rising
reward tests the whole loop (generation, scoring, advantages, updates, weight sync) within CI's time.
"""
import json
from pathlib import Path

import pytest

from tests.e2e.conftest import run_job

pytestmark = pytest.mark.e2e
SHAPED = f"reward=[{{type: function, path: '{Path(__file__).parent / 'shaped_rewards.py'}:leading_one'}}]"
RL_STEPS = ["trainer.max_steps=40", "trainer.eval_every=20", "trainer.eval_samples=100"]


def reward_gain(metrics: list[dict]) -> tuple[float, float]:
    rewards = [m["reward/mean"] for m in metrics if "reward/mean" in m]
    return sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5


@pytest.fixture(scope="module")
def grpo_run(sft_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo")
    return out, run_job("grpo", out, f"model.path={sft_model[0] / 'checkpoints' / 'final'}", SHAPED, *RL_STEPS,
                        "trainer.batch_size=16", "algo.dynamic_sampling=true", "algo.max_sample_rounds=2")


def test_grpo_raises_the_reward(grpo_run):
    before, after = reward_gain(grpo_run[1])
    assert after >= before + 0.25, f"reward/mean {before:.3f} -> {after:.3f}"


def test_policy_and_rollout_run_in_separate_actors_and_no_reference_without_kl(grpo_run):
    placement = json.loads((grpo_run[0] / "placement.json").read_text())
    assert "reference" not in placement, "with algo.kl_coef=0 nothing reads a reference model"
    pids = {role: {a["pid"] for a in actors} for role, actors in placement.items()}
    assert len(pids["policy"]) == 1 and len(pids["rollout"]) == 2 and not (pids["policy"] & pids["rollout"])
    groups = {role: {a["placement_group"] for a in actors} for role, actors in placement.items()}
    assert len(set.union(*groups.values())) == 2, "each role on its own placement group"


def test_grpo_metrics_are_complete(grpo_run):
    step = grpo_run[1][-1]
    for key in ("reward/mean", "reward/std", "train/entropy", "train/clip_frac", "response/length_mean",
                "perf/gen_s", "perf/score_s", "perf/ref_s", "perf/train_s", "perf/sync_s", "perf/step_s",
                "perf/gen_tokens_per_s", "eval/accuracy"):
        assert step.get(key) is not None, key


def test_dynamic_sampling_draws_more_prompts_when_groups_agree(grpo_run):
    """As the policy learns the shaped reward, more groups score all alike and need a second round."""
    spread = [m["reward/groups_with_spread"] for m in grpo_run[1] if "reward/groups_with_spread" in m]
    rounds = [m["perf/sample_rounds"] for m in grpo_run[1] if "perf/sample_rounds" in m]
    assert min(spread) < 1.0 and max(rounds) > 1 and all(1 <= r <= 2 for r in rounds)
    assert all(r == 1 for r, s in zip(rounds, spread) if s == 1.0), "a full first round needs no second"


def test_ppo_value_loss_falls_and_reward_rises(sft_model, tmp_path):
    metrics = run_job("ppo", tmp_path, f"model.path={sft_model[0] / 'checkpoints' / 'final'}", SHAPED, *RL_STEPS)
    placement = json.loads((tmp_path / "placement.json").read_text())
    pids = {role: {a["pid"] for a in actors} for role, actors in placement.items()}
    assert len(pids["reference"]) == 1 and len(pids["critic"]) == 1, "PPO's KL penalty reads the reference"
    assert len(set.union(*pids.values())) == sum(map(len, pids.values())), "every role in actors of its own"
    assert all("train/kl" in m for m in metrics if "reward/mean" in m)
    value_losses = [m["critic/value_loss"] for m in metrics if "critic/value_loss" in m]
    assert sum(value_losses[-5:]) < 0.5 * sum(value_losses[:5]), "the critic learns the returns"
    before, after = reward_gain(metrics)
    assert after >= before + 0.2, f"reward/mean {before:.3f} -> {after:.3f}"


def test_colocated_grpo_shares_the_policy_devices_and_raises_the_reward(sft_model, tmp_path):
    """cluster.colocate=true: the engine on the policy's placement group, the GPUs handed over each step
    (rlsys/roles/handoff.py; on CPU the engine's sleep and the optimizer's offload have nothing to move)."""
    out = tmp_path / "colocated"
    metrics = run_job("grpo", out, f"model.path={sft_model[0] / 'checkpoints' / 'final'}", SHAPED,
                      "cluster.colocate=true", "rollout.num_engines=1", "trainer.max_steps=30", "trainer.eval_every=0",
                      "trainer.batch_size=16")
    placement = json.loads((out / "placement.json").read_text())
    assert {a["placement_group"] for a in placement["policy"]} == {a["placement_group"] for a in placement["rollout"]}
    before, after = reward_gain(metrics)
    assert after >= before + 0.2, f"reward/mean {before:.3f} -> {after:.3f}"
    assert all(m["perf/sync_mb"] > 0 for m in metrics if "perf/sync_mb" in m)
