"""One liveness watchdog: every remote call of a run, and every call into user code, has a deadline.

A call past its deadline raises `Stalled`, whose message names the role, the call, how long it waited and the
setting (`watchdog.<kind>_s`) to raise. The step loop treats it like a dead actor: it restarts from the last
checkpoint while `fault_tolerance.max_restarts` allows, and otherwise stops the run with that one line.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError

from rlsys.errors import RlsysError

KINDS = ("generate_s", "reward_s", "forward_s", "train_s", "sync_s", "load_s", "start_s")
DEFAULTS = {kind: 1800.0 for kind in KINDS}
_limits: dict[str, float] = dict(DEFAULTS)


class Stalled(RlsysError, TimeoutError):
    """A call that did not return within its deadline; `where`: the line it was running, when known."""

    where = ""


ACTOR_FAILURES = (RayActorError, ActorDiedError, ActorUnavailableError)
RESTARTABLE = (*ACTOR_FAILURES, Stalled)  # what starting the actors again from the latest checkpoint can cure


def configure(watchdog) -> None:
    """Deadlines from the job's `watchdog` section (seconds; 0 means no deadline)."""
    _limits.update({kind: float(watchdog[kind]) for kind in KINDS if kind in watchdog})


def limit(kind: str) -> float | None:
    seconds = _limits[kind]
    return seconds if seconds > 0 else None


def stalled(role: str, call: str, kind: str, waited: float) -> Stalled:
    return Stalled(f"watchdog: {role} did not finish {call} within {waited:.0f}s (watchdog.{kind}); the {role} "
                   f"may hang or be far slower than expected: fix it, or raise watchdog.{kind}")


LIBRARIES = (str(Path(threading.__file__).parent), str(Path(__file__).parent))  # the standard library, rlsys


def where(thread: threading.Thread) -> str:
    """The line a thread is running: the innermost one of the user's code (not a library's), else the innermost."""
    frame = sys._current_frames().get(thread.ident)
    stack = traceback.extract_stack(frame) if frame is not None else []
    if not stack:
        return "an unknown line"
    mine = [f for f in stack if not f.filename.startswith(LIBRARIES) and "site-packages" not in f.filename]
    line = (mine or stack)[-1]
    return f"{line.filename}:{line.lineno} ({(line.line or '').strip()})"


def get(refs: Any, *, role: str, call: str, kind: str) -> Any:
    """ray.get with the deadline of `kind`."""
    began = time.monotonic()
    try:
        return ray.get(refs, timeout=limit(kind))
    except GetTimeoutError:
        raise stalled(role, call, kind, time.monotonic() - began) from None


def wait_one(refs: list, *, role: str, call: str, kind: str) -> list:
    """ray.wait for the first of `refs` to finish, with the deadline of `kind`."""
    began = time.monotonic()
    done, _ = ray.wait(refs, num_returns=1, timeout=limit(kind))
    if not done:
        raise stalled(role, call, kind, time.monotonic() - began)
    return done


def call(function: Callable[..., Any], *args: Any, role: str, call: str, kind: str, **kwargs: Any) -> Any:
    """function(*args, **kwargs) in this process, abandoned past the deadline of `kind`.

    Python cannot stop a thread, so a call that never returns is left on a daemon thread, which ends with the
    process; the run itself does not wait for it."""
    seconds = limit(kind)
    if seconds is None:
        return function(*args, **kwargs)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - re-raised on the caller's thread
            outcome["error"] = err

    worker = threading.Thread(target=run, name=f"rlsys-{role}", daemon=True)
    began = time.monotonic()
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        late = stalled(role, call, kind, time.monotonic() - began)
        late.where = where(worker)
        late.args = (f"{late}; it was at {late.where}",)
        raise late
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
