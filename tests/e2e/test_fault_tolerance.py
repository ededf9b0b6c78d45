"""SIGKILL a policy rank, the rollout engine and the reference actor during a real GRPO run: the job restarts the
actors from the latest checkpoint and ends with every planned step logged exactly once."""
import json
import os
import signal
import threading
import time

import pytest

from tests.e2e.conftest import run_job

pytestmark = pytest.mark.e2e


def wait_for_step(out, step: int, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = out / "metrics.jsonl"
        if path.exists() and any(json.loads(l)["step"] >= step for l in path.read_text().splitlines() if l):
            return
        time.sleep(0.5)
    raise TimeoutError(f"step {step} never logged")


def test_grpo_survives_killed_actors(pretrained, tmp_path):
    out = tmp_path / "grpo"
    kills = [(3, "policy"), (5, "rollout"), (7, "reference")]
    result: dict = {}

    def run() -> None:
        try:
            result["metrics"] = run_job("grpo", out, f"model.path={pretrained[0] / 'checkpoints' / 'final'}",
                                        "trainer.max_steps=8", "trainer.save_every=2", "trainer.eval_every=0",
                                        "trainer.eval_samples=8", "fault_tolerance.max_restarts=3")
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            result["error"] = err

    worker = threading.Thread(target=run)
    worker.start()
    for step, role in kills:
        wait_for_step(out, step)
        victim = json.loads((out / "placement.json").read_text())[role][-1]["pid"]
        os.kill(victim, signal.SIGKILL)
    worker.join(timeout=900)
    assert "error" not in result, result.get("error")
    steps = [m["step"] for m in result["metrics"]]
    assert steps == list(range(1, 9)), f"steps lost or repeated: {steps}"
    assert max(m.get("fault/restarts", 0) for m in result["metrics"]) == 3
    assert (out / "checkpoints" / "final" / "model.safetensors").exists()
