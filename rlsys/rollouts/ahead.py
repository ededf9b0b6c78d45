"""Rollouts sampled ahead of the trainer (async RL): a producer thread and the batches it has ready.

Batch s (the one step s trains on) is sampled by exactly policy version max(0, s - 1 - K), K being
`rollout.max_staleness`; version v is the policy after v updates. So while the trainer runs step s, the engines
sample batch s + K with version s - 1, and each step costs max(train, generate) + weight sync instead of their
sum. Versions are a function of the step, never of timing: a batch is never staler than K, none waits past it
or is dropped, and an async run is as reproducible (and exactly resumable) as a synchronous one.

Weights change only between batches: after step s, `publish` waits for the batch in flight (s + K, the last
one version s - 1 samples), sends version s, and holds the engines until the next `take`. Between two steps
the engines and the buffer are still, so evaluation uses the newest weights and a checkpoint stores exactly the
batches sampled but not yet trained (`buffered`), which `start` puts back on resume.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Batch:
    step: int  # the step that trains on it
    version: int  # the policy version that sampled it
    groups: list  # the groups to train on
    sampled: list  # every group sampled (dynamic sampling draws more than it trains on)
    times: dict[str, float] = field(default_factory=dict)  # perf/gen_s, perf/score_s, perf/rollout_idle_s


def sampling_version(step: int, max_staleness: int) -> int:
    return max(0, step - 1 - max_staleness)


class AheadRollouts:
    """`produce(step, version) -> Batch` runs on a thread of its own, up to `max_staleness` batches ahead."""

    def __init__(self, produce: Callable[[int, int], Batch], max_staleness: int, last_step: int):
        self.produce, self.k, self.last = produce, max_staleness, last_step
        self.cond = threading.Condition()
        self.ready: dict[int, Batch] = {}
        self.version = 0  # on the engines
        self.next_step = 1  # the next batch to sample
        self.busy = False  # sampling a batch now
        self.released = False  # the controller has handed the engines to the producer
        self.stopped = False
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    # ---- the controller's side ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.thread is not None

    def start(self, version: int, buffered: list[Batch]) -> None:
        """Sampling resumes after `version` updates, with the batches a checkpoint kept. Kept batches staler
        than K (a run resumed with a smaller K) are sampled again, with the batches after them."""
        self.version = version
        kept = []
        for batch in sorted(buffered, key=lambda b: b.step):
            if batch.step != version + 1 + len(kept) or batch.step - 1 - batch.version > self.k:
                break
            kept.append(batch)
        self.ready = {b.step: b for b in kept}
        self.next_step = version + 1 + len(kept)
        self.thread = threading.Thread(target=self._run, name="rlsys-rollouts", daemon=True)
        self.thread.start()

    def take(self, step: int) -> tuple[Batch, float]:
        """(batch `step`, seconds the trainer waited for it); the engines are the producer's until `publish`."""
        began = time.perf_counter()
        with self.cond:
            self.released = True
            self.cond.notify_all()
            self._wait(lambda: step in self.ready)
            return self.ready.pop(step), time.perf_counter() - began

    def publish(self, step: int, send_weights: Callable[[], Any]) -> tuple[Any, float]:
        """After update `step`: wait for the batch in flight, send the new weights, hold the engines.

        Returns (what send_weights returned, seconds waited for the producer)."""
        began = time.perf_counter()
        with self.cond:
            self._wait(lambda: self.next_step > min(step + self.k, self.last) and not self.busy)
            self.released = False
        waited = time.perf_counter() - began
        result = send_weights()
        with self.cond:
            self.version = step
        return result, waited

    def buffered(self) -> list[Batch]:
        """The batches sampled and not yet trained (call between steps, when nothing moves)."""
        with self.cond:
            return [self.ready[s] for s in sorted(self.ready)]

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def join(self, timeout_s: float = 60.0) -> None:
        """Wait for the producer to end (after `stop`; a remote call it is in fails once its actors are killed),
        so that it cannot reach actors started after it."""
        if self.thread is not None:
            self.thread.join(timeout=timeout_s)

    def _wait(self, condition: Callable[[], bool]) -> None:
        while not condition():
            if self.error is not None:
                raise self.error
            if self.stopped:
                raise RuntimeError("rollouts were stopped")
            self.cond.wait(timeout=1.0)

    # ---- the producer -------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            idle_from = time.perf_counter()
            with self.cond:
                while not self.stopped and not self._may_sample():
                    self.cond.wait(timeout=1.0)
                if self.stopped:
                    return
                step, self.busy = self.next_step, True
            idle = time.perf_counter() - idle_from
            try:
                batch = self.produce(step, self.version)
            except BaseException as err:  # noqa: BLE001 - handed to the trainer, which raises it
                with self.cond:
                    self.error, self.busy = err, False
                    self.cond.notify_all()
                return
            batch.times["perf/rollout_idle_s"] = idle
            with self.cond:
                self.ready[step] = batch
                self.next_step, self.busy = step + 1, False
                self.cond.notify_all()

    def _may_sample(self) -> bool:
        step = self.next_step
        return self.released and step <= self.last and self.version >= sampling_version(step, self.k)
