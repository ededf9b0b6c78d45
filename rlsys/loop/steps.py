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

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from rlsys import watchdog
from rlsys.errors import DataExhausted, EvaluationError
from rlsys.logging import MetricsLogger
from rlsys.loop.checkpoints import Checkpoints
from rlsys.loop.gold_watch import BEST, STOP, GoldWatch
from rlsys.watchdog import Stalled

ACTOR_FAILURES = (RayActorError, ActorDiedError, ActorUnavailableError)
RESTARTABLE = (*ACTOR_FAILURES, Stalled)
GOLD_STATE = "gold_watch.json"


class Controller(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def restore(self, folder) -> int: ...
    def step(self, step: int) -> dict[str, float]: ...
    def evaluate(self, step: int) -> tuple[dict[str, float], list[dict]]: ...
    def save(self, checkpoints: Checkpoints, step: int) -> None: ...
    def finish(self) -> None: ...


def run_steps(controller: Controller, cfg, title: str) -> dict[str, float]:
    t = cfg.trainer
    watchdog.configure(cfg.watchdog)
    checkpoints = Checkpoints(cfg.output_dir, t.keep_last)
    resume_from = checkpoints.resolve(cfg.resume)
    logger: MetricsLogger | None = None
    restarts = 0

    def evaluate(step: int) -> dict[str, float]:
        metrics, samples = controller.evaluate(step)
        logger.log_samples(step, samples)
        return metrics

    def final_evaluation(step: int, trained: dict[str, float]) -> dict[str, float]:
        try:
            return evaluate(step)
        except RESTARTABLE:
            raise
        except Exception as err:
            logger.log(step, trained)  # the last step's training metrics are not lost either
            final = Path(cfg.output_dir) / "checkpoints" / "final"
            raise EvaluationError(f"the final evaluation failed ({type(err).__name__}: {err}); the trained model "
                                  f"is saved in {final}") from err

    try:
        while True:
            try:
                controller.start()
                start = controller.restore(resume_from) if resume_from else 0
                if logger is None:
                    logger = MetricsLogger(cfg, title, t.max_steps, start, resumed=resume_from is not None)
                else:
                    logger.rewind(start)
                metrics: dict[str, float] = {}
                if start == 0 and t.eval_every:
                    logger.log(0, evaluate(0))
                watch = gold_watch(cfg, resume_from if start else None)
                for step in range(start + 1, t.max_steps + 1):
                    try:
                        metrics = controller.step(step)
                    except DataExhausted as err:  # sources with a number of epochs, all read: the run ends here
                        controller.finish()
                        print(f"[{title}] {str(err).splitlines()[0]} The run ends after step {step - 1}; the model "
                              f"is in {Path(cfg.output_dir) / 'checkpoints' / 'final'}.", flush=True)
                        return metrics
                    if restarts:
                        metrics["fault/restarts"] = float(restarts)
                    verdict = watch.observe(step, metrics) if watch else None
                    if verdict == BEST:
                        controller.save(checkpoints.slot("best"), step)
                    elif verdict == STOP:  # reward hacking: end with the best model by gold
                        print(f"[{title}] step {step}: the gold reward fell more than {t.gold_tolerance} below its "
                              f"best (step {watch.best_step}) while the proxy rose; the run stops with the step "
                              f"{watch.best_step} checkpoint (trainer.stop_on_gold_drop).", flush=True)
                        controller.restore(checkpoints.slot("best").folder)
                        controller.finish()
                        metrics.update(final_evaluation(step, metrics), **watch.metrics(), **{"gold/stopped": 1.0})
                        logger.log(step, metrics)
                        return metrics
                    if watch:
                        metrics.update(watch.metrics())
                    if step == t.max_steps:  # the trained model is safe before the last evaluation can fail
                        controller.finish()
                        metrics.update(final_evaluation(step, metrics))
                    elif t.eval_every and step % t.eval_every == 0:
                        metrics.update(evaluate(step))
                    logger.log(step, metrics)
                    if t.save_every and step % t.save_every == 0:
                        controller.save(checkpoints, step)
                        if watch:  # the watch resumes where it was
                            (checkpoints.latest() / GOLD_STATE).write_text(json.dumps(watch.state_dict()))
                if start >= t.max_steps:  # resumed from the last step's checkpoint
                    controller.finish()
                return metrics
            except RESTARTABLE as err:
                if restarts >= cfg.fault_tolerance.max_restarts:
                    raise
                restarts += 1
                resume_from = checkpoints.latest()
                where = f"checkpoint {resume_from.name}" if resume_from else "the start"
                what = str(err) if isinstance(err, Stalled) else \
                    f"an actor died ({type(err).__name__}: {str(err).splitlines()[0][:160]})"
                print(f"[{title}] {what}; restart {restarts}/{cfg.fault_tolerance.max_restarts} from {where}",
                      flush=True)
            finally:
                controller.stop()
    finally:
        if logger is not None:
            logger.close()


def gold_watch(cfg, resumed_from: Path | None) -> GoldWatch | None:
    """The gold watch of a run with trainer.stop_on_gold_drop, as it was at the checkpoint resumed from."""
    t = cfg.trainer
    if not t.stop_on_gold_drop:
        return None
    watch = GoldWatch(t.gold_window, t.gold_tolerance)
    if resumed_from is not None and (resumed_from / GOLD_STATE).exists():
        watch.load_state_dict(json.loads((resumed_from / GOLD_STATE).read_text()))
    return watch
