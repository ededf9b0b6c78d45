"""The step loop every controller shares: resume, evaluate, log, checkpoint, and recover from dead actors.

A controller provides start() / stop() (its actors), restore(folder) -> step, step(n) -> metrics,
evaluate(n) -> metrics, save(checkpoints, n) and finish() (the final Hugging Face checkpoint).
When an actor dies (killed, out of memory, node lost) or a call outlives its watchdog deadline, the actors are
started again, the latest checkpoint is loaded and the run goes on from there, up to
`fault_tolerance.max_restarts` times; metrics.jsonl is rewound to the checkpoint so no step is missing or
repeated. A streamed job whose sources have all been read as many epochs as they allow ends early, finished.
With `trainer.stop_on_gold_drop` a run whose gold reward falls while its proxy rises stops early and ends with
its best checkpoint by gold (`gold_watch.py`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from rlsys import watchdog
from rlsys.errors import DataExhausted, EvaluationError, Preempted
from rlsys.logging import MetricsLogger
from rlsys.logging.startup import CLOCK
from rlsys.loop.checkpoints import Checkpoints
from rlsys.loop.gold_watch import BEST, STOP, GoldWatch
from rlsys.loop.preemption import Preemption
from rlsys.watchdog import RESTARTABLE, Stalled
GOLD_STATE = "gold_watch.json"


class Controller(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def restore(self, folder) -> int: ...
    def step(self, step: int) -> dict[str, float]: ...
    def evaluate(self, step: int) -> tuple[dict[str, float], list[dict]]: ...
    def save(self, checkpoints: Checkpoints, step: int) -> None: ...
    def finish(self) -> None: ...


class StepLoop:
    """A run of a controller's steps, in parts: `resume` (actors started, state restored, the log opened), one
    step at a time (`after_step`: the final checkpoint and evaluation, periodic evaluations, the log,
    checkpoints), the run's early ends (`end_exhausted`, `end_with_best`), and `run`, which starts it again from
    the latest checkpoint after a dead actor or a stalled call."""

    def __init__(self, controller: Controller, cfg, title: str):
        self.controller, self.cfg, self.title = controller, cfg, title
        self.trainer = cfg.trainer
        self.checkpoints = Checkpoints(cfg.output_dir, cfg.trainer.keep_last)
        self.resume_from: Path | None = self.checkpoints.resolve(cfg.resume)
        self.logger: MetricsLogger | None = None
        self.watch: GoldWatch | None = None
        self.restarts = 0
        self.preemption = Preemption(cfg.trainer.preempt_grace_s)
        CLOCK.next_job()
        CLOCK.lap("setup")  # the controller's tokenizer, data and checks

    def run(self) -> dict[str, float]:
        """The metrics of the last step (with the final evaluation's)."""
        watchdog.configure(self.cfg.watchdog)
        try:
            with self.preemption:
                return self.run_with_restarts()
        finally:
            if self.logger is not None:
                self.logger.close()

    def run_with_restarts(self) -> dict[str, float]:
        while True:
            try:
                metrics = self.attempt()
                CLOCK.finished(self.cfg.output_dir)
                return metrics
            except RESTARTABLE as err:
                if self.restarts >= self.cfg.fault_tolerance.max_restarts:
                    raise
                self.restart_from_latest(err)
            finally:
                self.controller.stop()

    def attempt(self) -> dict[str, float]:
        start = self.resume()
        metrics: dict[str, float] = {}
        for step in range(start + 1, self.trainer.max_steps + 1):
            CLOCK.first_step()
            try:
                metrics = self.controller.step(step)
            except DataExhausted as err:  # sources with a number of epochs, all read: the run ends here
                return self.end_exhausted(step, err, metrics)
            CLOCK.after_first_step(metrics, self.title, self.cfg.output_dir)
            if self.restarts:
                metrics["fault/restarts"] = float(self.restarts)
            if self.gold_says_stop(step, metrics):
                return self.end_with_best(step, metrics)
            self.after_step(step, metrics)
            if self.preemption.requested and step < self.trainer.max_steps:
                self.end_preempted(step)
        if start >= self.trainer.max_steps:  # resumed from the last step's checkpoint
            self.controller.finish()
        return metrics

    def resume(self) -> int:
        """The actors started and restored from the checkpoint resumed from (none: step 0), the log opened (after
        a restart: rewound to that step), the gold watch as the checkpoint left it; the step to go on after."""
        self.controller.start()
        CLOCK.lap("actors")
        self.preemption.arm()
        start = self.controller.restore(self.resume_from) if self.resume_from else 0
        CLOCK.lap("restore")
        if self.logger is None:
            self.logger = MetricsLogger(self.cfg, self.title, self.trainer.max_steps, start,
                                        resumed=self.resume_from is not None)
        else:  # after a restart: what was logged after the checkpoint goes (without one: everything)
            self.logger.rewind(start if self.resume_from else -1)
        if start == 0 and self.trainer.eval_every:
            self.logger.log(0, self.evaluate(0))
        CLOCK.lap("eval")
        self.watch = gold_watch(self.cfg, self.resume_from if start else None)
        return start

    def gold_says_stop(self, step: int, metrics: dict[str, float]) -> bool:
        """The gold watch's verdict on this step: a new best is saved as checkpoints/best; True: stop now."""
        if self.watch is None:
            return False
        verdict = self.watch.observe(step, metrics)
        if verdict == BEST:
            self.controller.save(self.checkpoints.slot("best"), step)
        if verdict != STOP:
            metrics.update(self.watch.metrics())
        return verdict == STOP

    def after_step(self, step: int, metrics: dict[str, float]) -> None:
        """The last step: the final checkpoint, then the final evaluation; before it, an evaluation every
        eval_every steps; the step logged; a checkpoint every save_every steps."""
        t = self.trainer
        if step == t.max_steps:  # the trained model is safe before the last evaluation can fail
            self.controller.finish()
            metrics.update(self.final_evaluation(step, metrics))
        elif t.eval_every and step % t.eval_every == 0:
            metrics.update(self.evaluate(step))
        self.logger.log(step, metrics)
        if t.save_every and step % t.save_every == 0:
            self.save(step)

    def save(self, step: int) -> Path:
        self.controller.save(self.checkpoints, step)
        saved = self.checkpoints.latest()
        if self.watch is not None:  # the watch resumes where it was
            (saved / GOLD_STATE).write_text(json.dumps(self.watch.state_dict()))
        return saved

    def end_preempted(self, step: int) -> None:
        """SIGTERM: the step just done is saved (unless it just was), and the run stops."""
        t = self.trainer
        saved = self.checkpoints.latest() if t.save_every and step % t.save_every == 0 else self.save(step)
        raise Preempted(f"stopped by SIGTERM after step {step}, saved in {saved}; rerun with resume=auto to go on "
                        f"from there")

    def end_exhausted(self, step: int, err: DataExhausted, metrics: dict[str, float]) -> dict[str, float]:
        """Every source read as many epochs as it allows: the model as it is after step - 1 is the final one."""
        self.controller.finish()
        print(f"[{self.title}] {str(err).splitlines()[0]} The run ends after step {step - 1}; the model is in "
              f"{Path(self.cfg.output_dir) / 'checkpoints' / 'final'}.", flush=True)
        return metrics

    def end_with_best(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """Reward hacking caught: the run ends with its best checkpoint by gold, evaluated."""
        print(f"[{self.title}] step {step}: the gold reward fell more than {self.trainer.gold_tolerance} below its "
              f"best (step {self.watch.best_step}) while the proxy rose; the run stops with the step "
              f"{self.watch.best_step} checkpoint (trainer.stop_on_gold_drop).", flush=True)
        self.controller.restore(self.checkpoints.slot("best").folder)
        self.controller.finish()
        metrics.update(self.final_evaluation(step, metrics), **self.watch.metrics(), **{"gold/stopped": 1.0})
        self.logger.log(step, metrics)
        return metrics

    def restart_from_latest(self, err: BaseException) -> None:
        self.restarts += 1
        self.resume_from = self.checkpoints.latest()
        where = f"checkpoint {self.resume_from.name}" if self.resume_from else "the start"
        what = str(err) if isinstance(err, Stalled) else \
            f"an actor died ({type(err).__name__}: {str(err).splitlines()[0][:160]})"
        print(f"[{self.title}] {what}; restart {self.restarts}/{self.cfg.fault_tolerance.max_restarts} from {where}",
              flush=True)

    def evaluate(self, step: int) -> dict[str, float]:
        metrics, samples = self.controller.evaluate(step)
        self.logger.log_samples(step, samples)
        return metrics

    def final_evaluation(self, step: int, trained: dict[str, float]) -> dict[str, float]:
        """The final evaluation; when it fails (not for a dead actor: that restarts), the step's training metrics
        are logged and the error says where the trained model is."""
        try:
            return self.evaluate(step)
        except RESTARTABLE:
            raise
        except Exception as err:
            self.logger.log(step, trained)
            final = Path(self.cfg.output_dir) / "checkpoints" / "final"
            raise EvaluationError(f"the final evaluation failed ({type(err).__name__}: {err}); the trained model "
                                  f"is saved in {final}") from err


def run_steps(controller: Controller, cfg, title: str) -> dict[str, float]:
    return StepLoop(controller, cfg, title).run()


def gold_watch(cfg, resumed_from: Path | None) -> GoldWatch | None:
    """The gold watch of a run with trainer.stop_on_gold_drop, as it was at the checkpoint resumed from."""
    t = cfg.trainer
    if not t.stop_on_gold_drop:
        return None
    watch = GoldWatch(t.gold_window, t.gold_tolerance)
    if resumed_from is not None and (resumed_from / GOLD_STATE).exists():
        watch.load_state_dict(json.loads((resumed_from / GOLD_STATE).read_text()))
    return watch
