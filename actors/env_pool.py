"""Environments in a pool of Ray actors, so a slow or crashing tool cannot stall the trainer.

Each worker holds the environments of the episodes given to it (one instance per episode) and runs every
call into user code on a thread of its own with the deadline env.timeout_s; `async def` methods run on an
event loop there. A call that raises, hangs or returns what the protocol does not allow comes back as that
episode's error, not as an exception: the episode ends and the run counts it. A worker that dies (user code
that kills its process) costs its episodes, and a new worker takes its place.
"""
from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any, Callable

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from rlsys.envs.base import check_messages, check_step
from rlsys.envs.loading import EnvSpec

SLACK_S = 60.0  # beyond env.timeout_s: a worker that does not answer at all is stuck, not slow


class UserCall:
    """function() started on a daemon thread; `outcome` waits for it up to a deadline. A hung call is left on
    its thread, which ends with the process."""

    def __init__(self, function: Callable[[], Any]):
        self.function, self.value, self.error = function, None, None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            self.value = self.function()
        except BaseException as err:  # noqa: BLE001 - reported as the episode's error
            self.error = f"{type(err).__name__}: {err}"

    def outcome(self, deadline: float | None, timeout_s: float) -> dict:
        self.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():
            return {"error": f"did not return within env.timeout_s={timeout_s:g}s"}
        return {"error": self.error} if self.error else self.value


def settled(value):
    """What a user method returned, awaited on an event loop of this thread when it is `async def`."""
    return asyncio.run(_awaited(value)) if inspect.isawaitable(value) else value


async def _awaited(value):
    return await value


class EnvWorker:
    def __init__(self, spec: EnvSpec):
        self.spec = spec
        self.envs: dict[int, Any] = {}

    def reset(self, items: list[tuple[int, dict]]) -> list[dict]:
        return self._each(items, self._reset)

    def step(self, items: list[tuple[int, dict]]) -> list[dict]:
        return self._each(items, self._step)

    def close(self, episode_ids: list[int]) -> None:
        for episode in episode_ids:
            self.envs.pop(episode, None)

    def _reset(self, episode: int, row: dict) -> dict:
        env = self.spec.cls(**self.spec.kwargs)
        self.envs[episode] = env
        return {"messages": check_messages(settled(env.reset(row)), "reset()")}

    def _step(self, episode: int, message: dict) -> dict:
        result = check_step(settled(self.envs[episode].step(message)))
        return {"observations": result.observations, "reward": result.reward, "done": result.done,
                "info": result.info}

    def _each(self, items: list[tuple[int, Any]], method) -> list[dict]:
        """method(episode, argument) for every item at once, each within env.timeout_s."""
        timeout = self.spec.timeout_s
        deadline = time.monotonic() + timeout if timeout > 0 else None
        calls = [UserCall(lambda e=episode, a=argument: method(e, a)) for episode, argument in items]
        return [call.outcome(deadline, timeout) for call in calls]


class EnvPool:
    """`num_workers` EnvWorker actors; episode e lives on worker e % num_workers."""

    def __init__(self, spec: EnvSpec, num_workers: int, cpus_per_worker: float = 0.0):
        self.spec, self.cpus = spec, cpus_per_worker
        self.workers = [self._start() for _ in range(max(1, num_workers))]

    def _start(self):
        return ray.remote(EnvWorker).options(num_cpus=self.cpus).remote(self.spec)

    def reset(self, rows: dict[int, dict]) -> dict[int, dict]:
        """Each episode starts from its row: its first messages, or {"error": ...}."""
        return self._call("reset", rows)

    def step(self, messages: dict[int, dict]) -> dict[int, dict]:
        """Each episode's assistant message to its environment: observations, reward, done, info (or error)."""
        return self._call("step", messages)

    def close(self, episodes: list[int]) -> None:
        """The finished episodes' environments are dropped (the workers stay for the next batch)."""
        ray.get([w.close.remote(episodes) for w in self.workers])

    def _call(self, method: str, arguments: dict[int, Any]) -> dict[int, dict]:
        shares: dict[int, list[int]] = {}
        for episode in arguments:
            shares.setdefault(episode % len(self.workers), []).append(episode)
        refs = {w: getattr(self.workers[w], method).remote([(e, arguments[e]) for e in episodes])
                for w, episodes in shares.items()}
        outcomes: dict[int, dict] = {}
        deadline = time.monotonic() + self.spec.timeout_s + SLACK_S
        for w, ref in refs.items():
            try:
                results = ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
            except (GetTimeoutError, RayActorError) as err:
                why = "stopped answering" if isinstance(err, GetTimeoutError) else "died"
                results = [{"error": f"the environment worker {why} ({type(err).__name__})"}] * len(shares[w])
                ray.kill(self.workers[w], no_restart=True)
                self.workers[w] = self._start()
            outcomes.update(zip(shares[w], results))
        return outcomes

    def kill(self) -> None:
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []
