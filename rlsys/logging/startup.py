"""Where a job's seconds go before its first step, and after its last: one line printed after the first step,
`perf/startup_*` in that step's metrics, and output_dir/timings.json (with `perf/run_s`, the steps with their
evaluations and checkpoints, and `perf/shutdown_s`, from the last step logged to Ray stopped).

The driver's phases follow each other from the process start (`launch`: Python, imports, the composed config;
`setup`: the controller's tokenizer, data and checks; `ray`; `actors`: every role started and ready; `restore`;
`eval`: the evaluation at step 0). Each actor times its own start (`ActorClock`) and the slowest rank of each
role is reported next to the driver's phases: `process` (its process and module imports), then its own phases
(vLLM or DeepSpeed imports, model load, engine set-up).
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path


def process_started() -> float:
    """The wall-clock time this process started (its interpreter, not this module's import)."""
    import psutil

    return psutil.Process().create_time()


class ActorClock:
    """An actor's start, in phases since its process started: `lap(name)` closes the phase that ends now."""

    def __init__(self) -> None:
        self.last = process_started()
        self.times: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.time()
        self.times[name] = self.times.get(name, 0.0) + now - self.last
        self.last = now

    def report(self) -> dict[str, float]:
        import psutil

        used = psutil.Process().cpu_times()
        return {**self.times, "cpu": used.user + used.system, "ready_at": self.last}


def slowest(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """A role's start: each phase (and when it was ready) as its slowest rank had it."""
    return {k: max(r.get(k, 0.0) for r in per_rank) for k in per_rank[0]}


class StartupClock:
    def __init__(self) -> None:
        self.jobs = 0  # begun in this process: the first one counts from the process start
        self._reset(time.time())

    def begin(self, began: float | None = None) -> None:
        """A new job in this process, begun at `began` (by default the process start for the first job, else now)."""
        if began is None:
            began = process_started() if self.jobs == 0 else time.time()
        self.jobs += 1
        self._reset(began)

    def _reset(self, began: float) -> None:
        self.began = self.last = began
        self.phases: dict[str, float] = {}
        self.roles: dict[str, dict[str, float]] = {}
        self.reported = False
        self.first_step_began: float | None = None
        self.finished_at: float | None = None

    def next_job(self) -> None:
        """A job's step loop is set up: after another job of this process was reported (a pipeline's stages), this
        one's time counts from where that one's last phase ended."""
        if self.reported:
            self.begin(self.finished_at or self.last)

    def lap(self, name: str) -> None:
        """The driver's phase `name` ends now (it began where the previous one ended)."""
        now = time.time()
        if not self.reported:
            self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now

    @contextmanager
    def phase(self, name: str):
        """A phase that begins now: what came before it was the controller's set-up (some start Ray in theirs)."""
        self.lap("setup")
        yield
        self.lap(name)

    def role(self, name: str, per_rank: list[dict[str, float]]) -> None:
        """A role's actors are ready, each with its ActorClock report."""
        if not self.reported and per_rank:
            self.roles[name] = slowest(per_rank)

    def first_step(self) -> None:
        """A step begins: the first one ends start-up."""
        if self.first_step_began is None:
            self.lap("other")
            self.first_step_began = self.last

    def metrics(self, first_step_s: float) -> dict[str, float]:
        out = {"perf/startup_s": self.first_step_began - self.began, "perf/startup_first_step_s": first_step_s}
        out.update({f"perf/startup_{k}_s": v for k, v in self.phases.items() if v >= 0.0005})
        for role, times in self.roles.items():
            out[f"perf/startup_{role}_ready_s"] = times["ready_at"] - self.began
            out.update({f"perf/startup_{role}_{k}_s": v for k, v in times.items() if k != "ready_at"})
        return out

    def after_first_step(self, metrics: dict[str, float], title: str, output_dir: str) -> None:
        """The first step of this job is done: its metrics get the start-up's, and one line says where it went."""
        if self.reported or self.first_step_began is None:
            return
        startup = self.metrics(time.time() - self.first_step_began)
        metrics.update(startup)
        self.reported = True
        print(f"[{title}] {self.summary(startup)}", flush=True)
        self.write(output_dir, startup, merge=False)

    def summary(self, startup: dict[str, float]) -> str:
        phases = ", ".join(f"{k} {v:.1f}" for k, v in self.phases.items() if v >= 0.05)
        roles = "; ".join(f"{role} ready at {t['ready_at'] - self.began:.1f} ("
                          + ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k != "ready_at" and v >= 0.05) + ")"
                          for role, t in self.roles.items())
        return (f"start-up {startup['perf/startup_s']:.1f} s to the first step ({phases})"
                + (f"; {roles}" if roles else "") + f"; first step {startup['perf/startup_first_step_s']:.1f} s")

    def finished(self, output_dir: str) -> None:
        """The last step is logged: the steps' seconds (with their evaluations and checkpoints) go into the job's
        timings.json, and what follows is shutdown."""
        self.finished_at = time.time()
        if self.first_step_began is not None:
            self.write(output_dir, {"perf/run_s": self.finished_at - self.first_step_began}, merge=True)

    def shut_down(self, output_dir: str) -> float | None:
        """Shutdown is over: its seconds (from the last step logged) go into timings.json."""
        if self.finished_at is None:
            return None
        seconds = time.time() - self.finished_at
        self.write(output_dir, {"perf/shutdown_s": seconds}, merge=True)
        self.finished_at = None
        return seconds

    @staticmethod
    def write(output_dir: str, figures: dict[str, float], merge: bool) -> None:
        path = Path(output_dir) / "timings.json"
        if not path.parent.is_dir():
            return
        known = json.loads(path.read_text()) if merge and path.exists() else {}
        path.write_text(json.dumps({**known, **{k: round(v, 3) for k, v in figures.items()}}, indent=1))


CLOCK = StartupClock()  # the driver's: one job at a time per process
