"""Async GRPO on the real stack: batches sampled up to K policy versions ahead of the trainer.

Staleness stays within K; a resumed run, and one whose rollout engine and policy rank are killed mid-run, log
the same per-step metrics as an uninterrupted one (the batches sampled ahead live in the checkpoints); a reward
function that never returns ends the run with the watchdog's message instead of hanging it."""
import json
import os
import signal

import pytest

from rlsys.watchdog import Stalled
from tests.e2e.conftest import in_background, run_job
from tests.e2e.test_fault_tolerance import as_crashed_after_step_5, wait_for_step

pytestmark = pytest.mark.e2e

K = 2
# on 2 cores the sampler and the trainer each get one
ASYNC = [f"rollout.max_staleness={K}", "rollout.num_engines=1", "cluster.policy.cpus_per_rank=1",
         "trainer.save_every=2", "trainer.eval_every=0", "trainer.eval_samples=8", "trainer.max_steps=8"]
COMPARED = ("train/policy_loss", "train/grad_norm", "train/entropy", "reward/mean", "response/length_mean",
            "rollout/is_ratio_mean", "rollout/staleness_max")


def grpo_async(pretrained, out, *overrides: str) -> list[dict]:
    return run_job("grpo", out, f"model.path={pretrained[0] / 'checkpoints' / 'final'}", *ASYNC, *overrides)


def assert_same_steps(expected: list[dict], actual: list[dict]) -> None:
    assert [m["step"] for m in actual] == [m["step"] for m in expected], "no step lost or repeated"
    for a, b in zip(expected, actual):
        for key in COMPARED:
            assert b[key] == pytest.approx(a[key], abs=1e-6), f"step {a['step']}: {key} {a[key]} != {b[key]}"


@pytest.fixture(scope="module")
def uninterrupted(pretrained, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo_async")
    return out, grpo_async(pretrained, out, "trainer.keep_last=4")


def test_staleness_never_exceeds_k_and_checkpoints_keep_the_batches_ahead(uninterrupted):
    out, metrics = uninterrupted
    assert [m["rollout/staleness_max"] for m in metrics] == [min(m["step"] - 1, K) for m in metrics]
    assert all(m["rollout/staleness_mean"] <= K for m in metrics)
    # off-policy correction is on (auto: truncated IS) and sees the lag: ratios move off 1
    assert any(abs(m["rollout/is_ratio_mean"] - 1) > 1e-4 for m in metrics[K:])
    assert all(m["rollout/logprob_mismatch_kl"] >= 0 and "perf/trainer_idle_s" in m for m in metrics)
    state = json.loads((out / "checkpoints" / "step_000004" / "trainer_state.json").read_text())
    assert [(b["step"], b["version"]) for b in state["rollout_buffer"]] == [(5, 2), (6, 3)]


def test_async_resume_auto_is_exact(pretrained, uninterrupted, tmp_path):
    """The run's folder as a crash after step 5 would leave it; resume=auto continues from step 4's checkpoint
    with the two batches it had sampled ahead, and logs steps 5-8 as the uninterrupted run did."""
    crashed = tmp_path / "grpo"
    as_crashed_after_step_5(uninterrupted[0], crashed)
    assert_same_steps(uninterrupted[1], grpo_async(pretrained, crashed, "resume=auto"))


def test_async_survives_a_killed_rollout_engine_and_policy_rank(pretrained, uninterrupted, tmp_path):
    out = tmp_path / "grpo"
    worker, result = in_background(lambda: grpo_async(pretrained, out, "fault_tolerance.max_restarts=2"))
    for step, role in [(3, "rollout"), (5, "policy")]:
        wait_for_step(out, step)
        os.kill(json.loads((out / "placement.json").read_text())[role][-1]["pid"], signal.SIGKILL)
    worker.join(timeout=900)
    assert "error" not in result, result.get("error")
    assert max(m.get("fault/restarts", 0) for m in result["metrics"]) == 2
    assert_same_steps(uninterrupted[1], result["metrics"])


def test_a_reward_function_that_never_returns_ends_the_run_with_one_line(pretrained, tmp_path):
    stuck = tmp_path / "stuck.py"
    stuck.write_text("import time\n\ndef never(prompts, completions, **_):\n    time.sleep(10**6)\n")
    with pytest.raises(Stalled) as stalled:
        grpo_async(pretrained, tmp_path / "grpo", f"reward=[{{type: function, path: '{stuck}:never'}}]",
                   "watchdog.reward_s=3", "fault_tolerance.max_restarts=0")
    message = str(stalled.value)
    assert "\n" not in message and "reward (never)" in message and "watchdog.reward_s" in message, message
