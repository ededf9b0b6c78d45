"""The step loop in its parts, against a controller that only records what it is asked: resume, restarts after a
failure, the gold stop, data running out, the final checkpoint and evaluation. Real checkpoints and metrics.jsonl."""
import os
import signal
import time
from pathlib import Path

import pytest
from ray.exceptions import ActorDiedError

from rlsys.config.compose import compose_job
from rlsys.config.validate import to_typed
from rlsys.errors import DataExhausted, EvaluationError, Preempted
from rlsys.logging import read_metrics
from rlsys.loop.checkpoints import Checkpoints
from rlsys.loop.steps import run_steps
from rlsys.watchdog import Stalled


class FakeController:
    """Its model is the number of steps it has trained; a checkpoint holds that number."""

    def __init__(self, fail_at=(), failure=ActorDiedError, exhausted_at=None, gold=None, eval_fails=False):
        self.calls: list = []
        self.trained = 0
        self.fail_at, self.failure = set(fail_at), failure
        self.exhausted_at, self.gold, self.eval_fails = exhausted_at, gold, eval_fails

    def start(self):
        self.calls.append("start")
        self.trained = 0

    def stop(self):
        self.calls.append("stop")

    def restore(self, folder) -> int:
        self.trained = Checkpoints.load(Path(folder), {})["step"]
        self.calls.append(("restore", Path(folder).name))
        return self.trained

    def step(self, step: int) -> dict[str, float]:
        assert step == self.trained + 1, "steps go on from the model's own step"
        if step in self.fail_at:
            self.fail_at.discard(step)  # fails once
            raise self.failure("the actor died") if self.failure is Stalled else self.failure()
        if step == self.exhausted_at:
            raise DataExhausted("every source has been read.")
        self.trained = step
        metrics = {"train/loss": 1.0 / step}
        if self.gold:
            metrics.update({"reward/gold": self.gold[step - 1], "reward/proxy": float(step)})
        return metrics

    def evaluate(self, step: int):
        self.calls.append(("evaluate", step))
        if self.eval_fails and step > 0:
            raise RuntimeError("the judge is down")
        return {"eval/accuracy": self.trained / 10}, []

    def save(self, checkpoints, step: int):
        self.calls.append(("save", step, getattr(checkpoints, "name", "step")))
        checkpoints.save(step, {}, {"job": "fake"})

    def finish(self):
        self.calls.append(("finish", self.trained))


def config(tmp_path, *overrides, job="sft"):
    return to_typed(compose_job(job, [f"output_dir={tmp_path}", "logger=[jsonl]", "trainer.max_steps=6",
                                      "trainer.eval_every=3", "trainer.save_every=2", *overrides]))


def logged_steps(tmp_path) -> list[int]:
    return [m["step"] for m in read_metrics(str(tmp_path))]


def test_every_step_is_logged_checkpointed_evaluated_and_the_run_finishes_once(tmp_path):
    fake = FakeController()
    metrics = run_steps(fake, config(tmp_path), "t")
    assert logged_steps(tmp_path) == [0, 1, 2, 3, 4, 5, 6]
    assert [c for c in fake.calls if c[0] in ("save", "evaluate", "finish")] == [
        ("evaluate", 0), ("save", 2, "step"), ("evaluate", 3), ("save", 4, "step"),
        ("finish", 6), ("evaluate", 6), ("save", 6, "step")]  # the model is safe before its last evaluation
    assert fake.calls[0] == "start" and fake.calls[-1] == "stop"
    assert metrics["eval/accuracy"] == 0.6 and metrics["train/loss"] == pytest.approx(1 / 6)
    assert Checkpoints(str(tmp_path), 2).latest().name == "step_000006"


def test_resume_goes_on_after_the_latest_checkpoint(tmp_path):
    run_steps(FakeController(), config(tmp_path, "trainer.max_steps=4"), "t")
    fake = FakeController()
    run_steps(fake, config(tmp_path, "trainer.max_steps=6", "resume=auto"), "t")
    assert ("restore", "step_000004") in fake.calls and ("evaluate", 0) not in fake.calls
    assert logged_steps(tmp_path) == [0, 1, 2, 3, 4, 5, 6], "no step missing or twice"


def test_resumed_at_the_last_step_it_only_writes_the_final_model(tmp_path):
    run_steps(FakeController(), config(tmp_path), "t")
    fake = FakeController()
    run_steps(fake, config(tmp_path, "resume=auto"), "t")
    assert fake.calls == ["start", ("restore", "step_000006"), ("finish", 6), "stop"]


@pytest.mark.parametrize("failure", [ActorDiedError, Stalled])
def test_a_failure_restarts_from_the_latest_checkpoint(tmp_path, failure):
    fake = FakeController(fail_at={5}, failure=failure)
    metrics = run_steps(fake, config(tmp_path), "t")
    assert fake.calls.count("start") == 2 and fake.calls.count("stop") == 2
    assert ("restore", "step_000004") in fake.calls
    assert logged_steps(tmp_path) == [0, 1, 2, 3, 4, 5, 6], "the steps after the checkpoint are not logged twice"
    assert metrics["fault/restarts"] == 1.0


def test_a_failure_before_any_checkpoint_starts_over(tmp_path):
    fake = FakeController(fail_at={1})
    run_steps(fake, config(tmp_path), "t")
    assert not any(c[0] == "restore" for c in fake.calls if isinstance(c, tuple))
    assert logged_steps(tmp_path) == [0, 1, 2, 3, 4, 5, 6]


def test_restarts_stop_at_max_restarts(tmp_path):
    fake = FakeController(fail_at={3, 4, 5})
    with pytest.raises(ActorDiedError):
        run_steps(fake, config(tmp_path, "trainer.save_every=1", "fault_tolerance.max_restarts=2"), "t")
    assert fake.calls.count("start") == 3 and fake.calls.count("stop") == 3


def test_data_running_out_ends_the_run_with_the_model_it_has(tmp_path):
    fake = FakeController(exhausted_at=4)
    metrics = run_steps(fake, config(tmp_path, "trainer.eval_every=0"), "t")
    assert ("finish", 3) in fake.calls and fake.trained == 3
    assert logged_steps(tmp_path) == [1, 2, 3] and metrics["train/loss"] == pytest.approx(1 / 3)


def test_a_gold_drop_ends_the_run_with_the_best_checkpoint(tmp_path):
    gold = [0.1, 0.2, 0.5, 0.4, 0.3, 0.1]  # best at step 3; step 5 is 0.2 below it while the proxy rose
    cfg = config(tmp_path, "trainer.stop_on_gold_drop=true", "trainer.gold_window=1", "trainer.gold_tolerance=0.15",
                 "reward=[{type:rule,name:format},{type:rule,name:answer_match,monitor:true}]", job="grpo")
    fake = FakeController(gold=gold)
    metrics = run_steps(fake, cfg, "t")
    assert [c for c in fake.calls if c[0] == "save" and c[2] == "best"] == [("save", s, "best") for s in (1, 2, 3)]
    assert fake.calls[-4:] == [("restore", "best"), ("finish", 3), ("evaluate", 5), "stop"]
    assert metrics["gold/stopped"] == 1.0 and metrics["gold/best_step"] == 3.0
    assert metrics["eval/accuracy"] == 0.3, "the final evaluation is the best checkpoint's"
    assert logged_steps(tmp_path)[-1] == 5


def test_a_failed_final_evaluation_keeps_the_model_and_the_steps_metrics(tmp_path):
    fake = FakeController(eval_fails=True)
    with pytest.raises(EvaluationError, match="the judge is down.*saved in .*checkpoints/final"):
        run_steps(fake, config(tmp_path, "trainer.eval_every=0"), "t")
    assert ("finish", 6) in fake.calls
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6] and "eval/accuracy" not in read_metrics(str(tmp_path))[-1]


class PreemptedAt(FakeController):
    """SIGTERM arrives while step `at` runs (as Kubernetes sends it to a pod it will kill)."""

    def __init__(self, at: int, step_s: float = 0.0):
        super().__init__()
        self.at, self.step_s = at, step_s

    def step(self, step: int) -> dict[str, float]:
        if step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(self.step_s)
        return super().step(step)


@pytest.mark.parametrize("at", [3, 4])  # between checkpoints, and on a checkpoint step (saved once)
def test_sigterm_saves_the_step_in_flight_and_resume_goes_on_exactly(tmp_path, at):
    before = signal.getsignal(signal.SIGTERM)
    fake = PreemptedAt(at)
    with pytest.raises(Preempted, match=f"after step {at}, saved in .*step_00000{at}; rerun with resume=auto"):
        run_steps(fake, config(tmp_path), "t")
    assert signal.getsignal(signal.SIGTERM) == before, "the loop's handler is gone with the loop"
    assert [c for c in fake.calls if c[0] == "save"] == [("save", 2, "step"), ("save", at, "step")]
    assert logged_steps(tmp_path) == list(range(at + 1))
    resumed = FakeController()
    run_steps(resumed, config(tmp_path, "resume=auto"), "t")
    assert ("restore", f"step_00000{at}") in resumed.calls
    assert logged_steps(tmp_path) == [0, 1, 2, 3, 4, 5, 6], "no step missing or twice"


def test_a_step_that_outlasts_the_grace_period_is_interrupted(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_steps(PreemptedAt(3, step_s=30), config(tmp_path, "trainer.preempt_grace_s=0.2"), "t")
    assert Checkpoints(str(tmp_path), 2).latest().name == "step_000002", "the latest checkpoint stays"
