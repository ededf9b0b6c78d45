"""Multi-turn GRPO end to end on Ray + vLLM (CPU) + DeepSpeed: the retry environment from the SFT model,
exact resume and recovery from a killed rollout engine mid-run, a user's environment from a file that
trains, and an environment that fails too often stopping the run with one message."""
import json
import math
import os
import signal
from pathlib import Path

import pytest

from rlsys.rollouts.episodes import EnvironmentFailed
from tests.e2e.conftest import in_background, run_job
from tests.e2e.test_fault_tolerance import as_crashed_after_step_5, wait_for_step

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent
COMPARED = ("train/policy_loss", "train/grad_norm", "train/entropy", "reward/mean", "env/turns_mean",
            "response/length_mean")


def retry_grpo(sft_model, out, *overrides: str) -> list[dict]:
    return run_job("grpo", out, f"model.path={sft_model[0] / 'checkpoints' / 'final'}", "env=retry",
                   "trainer.batch_size=8", "algo.n_samples=4", "trainer.save_every=2", "trainer.keep_last=4",
                   "trainer.eval_samples=16", "trainer.max_steps=8", "rollout.num_engines=1", *overrides)


def assert_same_steps(expected: list[dict], actual: list[dict], first_step: int) -> None:
    for a, b in zip(expected[first_step - 1:], actual[first_step - 1:]):
        for key in COMPARED:
            assert b[key] == pytest.approx(a[key], abs=1e-6), f"step {a['step']}: {key} {a[key]} != {b[key]}"


@pytest.fixture(scope="module")
def uninterrupted(sft_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("retry")
    return out, retry_grpo(sft_model, out, "logger=[jsonl,wandb]", "wandb.mode=offline")


def test_retry_episodes_are_multi_turn_and_reported(uninterrupted):
    out, metrics = uninterrupted
    steps = [m for m in metrics if "reward/mean" in m]
    assert len(steps) == 8
    for key in ("env/turns_mean", "env/tool_calls_mean", "env/tool_errors", "env/episode_reward", "perf/env_s",
                "reward/env", "eval/turns_mean", "eval/episode_reward", "eval/accuracy"):
        assert metrics[-1].get(key) is not None, key
    assert all(1.0 < m["env/turns_mean"] <= 3.0 for m in steps), "wrong answers are retried"
    assert all(m["env/errors"] == 0 for m in steps)
    table = json.loads(next(out.glob("wandb/*/files/media/table/samples_*.table.json")).read_text())
    assert {"transcript", "turns", "episode_reward"} <= set(table["columns"])
    transcript = table["data"][0][table["columns"].index("transcript")]
    assert transcript.count("<|im_start|>assistant") >= 1 and "<|im_start|>user" in transcript


def test_multi_turn_resume_auto_is_exact(sft_model, uninterrupted, tmp_path):
    crashed = tmp_path / "retry"
    as_crashed_after_step_5(uninterrupted[0], crashed)
    resumed = retry_grpo(sft_model, crashed, "resume=auto")
    assert [m["step"] for m in resumed] == list(range(0, 9)), "no step lost or repeated"
    assert_same_steps([m for m in uninterrupted[1] if m["step"]], [m for m in resumed if m["step"]], first_step=5)


def test_multi_turn_survives_a_killed_rollout_engine(sft_model, uninterrupted, tmp_path):
    out = tmp_path / "retry"
    worker, result = in_background(lambda: retry_grpo(sft_model, out, "fault_tolerance.max_restarts=1"))
    wait_for_step(out, 3)
    os.kill(json.loads((out / "placement.json").read_text())["rollout"][0]["pid"], signal.SIGKILL)
    worker.join(timeout=900)
    assert "error" not in result, result.get("error")
    steps = [m["step"] for m in result["metrics"]]
    assert steps == list(range(0, 9)), f"steps lost or repeated: {steps}"
    assert max(m.get("fault/restarts", 0) for m in result["metrics"]) == 1
    assert_same_steps([m for m in uninterrupted[1] if m["step"]], [m for m in result["metrics"] if m["step"]], 1)


def test_user_environment_from_a_file_trains(sft_model, tmp_path):
    metrics = run_job("grpo", tmp_path, f"model.path={sft_model[0] / 'checkpoints' / 'final'}",
                      f"env.path={HERE / 'user_env.py'}:LeadingOne", "env.max_turns=2", "reward=[]",
                      "trainer.batch_size=16", "trainer.max_steps=24", "trainer.eval_every=0",
                      "trainer.eval_samples=16")
    rewards = [m["env/episode_reward"] for m in metrics if "env/episode_reward" in m]
    before, after = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert after >= before + 0.2, f"env/episode_reward {before:.3f} -> {after:.3f}"
    turns = [m["env/turns_mean"] for m in metrics if "env/turns_mean" in m]
    assert sum(turns[-5:]) < sum(turns[:5]), "fewer hints are needed as the policy learns"


def test_an_environment_failing_too_often_stops_the_run(sft_model, tmp_path):
    with pytest.raises(EnvironmentFailed, match=r"episodes failed, more than env.max_error_rate=0 allows.*"
                                                r"RaisesOnSeven.*ValueError: the tool backend is down"):
        run_job("grpo", tmp_path, f"model.path={sft_model[0] / 'checkpoints' / 'final'}",
                f"env.path={HERE / 'faulty_envs.py'}:RaisesOnSeven", "env.max_error_rate=0", "reward=[]",
                "trainer.batch_size=16", "trainer.max_steps=2", "trainer.eval_every=0", "trainer.eval_samples=16")
    assert (tmp_path / "base_model").exists() or (tmp_path / "config.yaml").exists(), "earlier outputs are kept"


def test_ppo_with_a_critic_trains_on_episodes(sft_model, tmp_path):
    """PPO on multi-turn episodes: the critic's values and GAE over the model's tokens only (test_rl checks
    that the critic learns; here that the masked path runs and stays finite)."""
    metrics = run_job("ppo", tmp_path, f"model.path={sft_model[0] / 'checkpoints' / 'final'}", "env=retry",
                      "trainer.batch_size=8", "algo.n_samples=4", "trainer.max_steps=4", "trainer.eval_every=0",
                      "trainer.eval_samples=8", "rollout.num_engines=1")
    steps = [m for m in metrics if "critic/value_loss" in m]
    assert len(steps) == 4 and all(m["env/turns_mean"] > 1.0 for m in steps)
    assert all(math.isfinite(m[k]) for m in steps for k in ("critic/value_loss", "train/policy_loss", "train/kl"))
