"""SIGTERM (Kubernetes before it kills a pod, `ray job stop`, a cluster scheduler) ends a run without losing steps:
the step in flight finishes, a checkpoint of it is saved, and the run stops, so `resume=auto` goes on exactly
from there. A step that cannot finish and be saved within `trainer.preempt_grace_s` is interrupted where it is,
and the latest checkpoint stays the one to resume from."""
from __future__ import annotations

import signal
import threading


class Preemption:
    """Once armed (on the main thread, where Python handles signals) and until the `with` block ends, SIGTERM asks
    the loop to stop after the step in flight; the handler that was there before comes back afterwards."""

    NOT_ARMED = object()

    def __init__(self, grace_s: float):
        self.grace_s = grace_s
        self.requested = False
        self.previous = self.NOT_ARMED
        self.deadline: threading.Timer | None = None

    def arm(self) -> None:
        """Called once the actors run: `ray.init` installs a SIGTERM handler of its own, which this one replaces."""
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self.on_sigterm)
            if self.previous is self.NOT_ARMED:
                self.previous = previous

    def __enter__(self) -> "Preemption":
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not self.NOT_ARMED:  # None: a handler set outside Python, the default for all we know
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self.previous is None else self.previous)
        if self.deadline is not None:
            self.deadline.cancel()

    def on_sigterm(self, signum, frame) -> None:
        if self.requested:  # a second SIGTERM, or the grace period over: stop where the run is
            raise KeyboardInterrupt("SIGTERM again, or trainer.preempt_grace_s passed")
        self.requested = True
        print(f"SIGTERM: saving the step in flight, then stopping (within trainer.preempt_grace_s="
              f"{self.grace_s:g}s)", flush=True)
        # past the grace period this handler runs again, on the main thread, and interrupts it there (a signal
        # also breaks a blocking wait; SIGINT's handler may not be Python's own under other libraries)
        main = threading.main_thread().ident
        self.deadline = threading.Timer(self.grace_s, signal.pthread_kill, (main, signal.SIGTERM))
        self.deadline.daemon = True
        self.deadline.start()
