"""A group of Ray actors on one placement group, called as one object.

A worker method declares how a call on the group reaches its ranks (`@dispatch(...)`), so worker code
reads as single-process code and controller code as one call:
    ALL      every rank gets the same arguments; the list of results comes back (or what `gather` makes of it)
    SPLIT    the first argument (a dict of equal-length lists: one entry per sample) is planned into
             micro-batches by tokens, the same number on every rank; each rank gets its list of micro-batches.
             Per-sample results (dicts of lists) come back in batch order; `gather` may combine them otherwise
             (training metrics), `prepare` may add to the whole batch first (loss weights)
    RANK0    every rank runs it (ZeRO-3 collectives need all of them); rank 0's result comes back

`group.submit(method, ...)` starts a call and returns a `Pending`, so calls on different groups overlap.
Every call has a deadline: the method declares which of `watchdog.*_s` applies (forward passes by default).
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Callable

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlsys.logging.startup import CLOCK

ALL, SPLIT, RANK0 = "all", "split", "rank0"


def dispatch(mode: str, prepare: Callable | None = None, gather: Callable | None = None,
             deadline: str = "forward_s") -> Callable:
    def mark(method: Callable) -> Callable:
        method.dispatch_mode, method.prepare, method.gather, method.deadline = mode, prepare, gather, deadline
        return method
    return mark


@dataclass
class Pending:
    """A call running on a group's ranks; result() waits for it (up to its deadline) and combines what the
    ranks returned."""
    refs: list
    combine: Callable[[list], Any]
    role: str  # the group's name, for the watchdog's message
    call: str
    deadline: str  # which watchdog.*_s applies

    def result(self) -> Any:
        from rlsys import watchdog

        return self.combine(watchdog.get(self.refs, role=self.role, call=self.call, kind=self.deadline))


@dataclass
class Placement:
    """Where a group's ranks go: a placement group of one bundle per rank, or slots of a shared one."""
    group: PlacementGroup
    bundle_indices: list[int]
    num_gpus: float  # per actor (a fraction when roles share a device)
    num_cpus: float


def create_placement(num_bundles: int, *, gpus: float, cpus: float, strategy: str = "PACK",
                     extra_resources: dict[str, float] | None = None, timeout_s: float = 60.0) -> PlacementGroup:
    bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {}), **(extra_resources or {})}
    group = placement_group([dict(bundle) for _ in range(num_bundles)], strategy=strategy)
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(group)
        from rlsys.errors import ClusterError

        raise ClusterError(f"the cluster cannot place {num_bundles} x {bundle} (strategy {strategy}) within "
                           f"{timeout_s:.0f}s; free now: {free_devices()}. Ask for fewer ranks or "
                           "devices, or add nodes.")
    return group


def free_devices() -> dict[str, float]:
    available = ray.available_resources()
    return {name: available.get(name, 0.0) for name in ("CPU", "GPU")}


def release(group: PlacementGroup) -> None:
    """Give a placement group's resources back (a no-op when it is already gone, e.g. shared by roles)."""
    try:
        remove_placement_group(group)
    except Exception:  # noqa: BLE001 - removed already
        pass


def in_batch_order(plan: list[list[list[int]]], results: list[dict[str, list]]) -> dict[str, list]:
    """Per-rank results (each rank's samples in its micro-batches' order) put back in batch order."""
    order = [i for rank in plan for micro in rank for i in micro]
    merged = {k: [x for r in results for x in r[k]] for k in results[0]}
    out: dict[str, list] = {k: [None] * len(order) for k in merged}
    for k, values in merged.items():
        for position, i in enumerate(order):
            out[k][i] = values[position]
    return out


def actor_location() -> dict[str, str | int | None]:
    """Where the calling actor runs: process, node and placement group (for placement reports and tests)."""
    import os

    context = ray.get_runtime_context()
    return {"pid": os.getpid(), "node_id": context.get_node_id(), "placement_group": context.get_placement_group_id(),
            "gpus": ",".join(map(str, ray.get_gpu_ids()))}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


class ActorGroup:
    """`num_ranks` instances of `worker_cls`, each pinned to a bundle; calls dispatched by the method's mode."""

    def __init__(self, name: str, worker_cls: type, placement: Placement, *args: Any,
                 env: dict[str, str] | None = None, max_tokens_per_micro_batch: int = 4096, **kwargs: Any):
        self.name = name
        self.worker_cls = worker_cls
        self.placement = placement
        self.starting: list = []  # calls the ranks finish before the group is used (their model load)
        self.max_tokens = max_tokens_per_micro_batch
        remote_cls = ray.remote(worker_cls)
        self.actors = [
            remote_cls.options(
                name=None, num_cpus=placement.num_cpus, num_gpus=placement.num_gpus,
                runtime_env={"env_vars": env or {}},
                scheduling_strategy=PlacementGroupSchedulingStrategy(placement.group, placement_group_bundle_index=b),
            ).remote(*args, **kwargs)
            for b in placement.bundle_indices
        ]

    @property
    def world_size(self) -> int:
        return len(self.actors)

    def call_async(self, method: str, *args: Any, **kwargs: Any) -> list[ray.ObjectRef]:
        """Start `method` on every rank with the same arguments; the refs let the caller overlap work."""
        return [getattr(actor, method).remote(*args, **kwargs) for actor in self.actors]

    def submit(self, method: str, *args: Any, **kwargs: Any) -> Pending:
        """Start a @dispatch method on the group; the Pending's result() is what calling it returns."""
        from rlsys.engine.batch import plan_micro_batches, sample_lengths, select

        function = getattr(self.worker_cls, method, None)
        mode = getattr(function, "dispatch_mode", None)
        if mode is None:
            raise AttributeError(f"{self.worker_cls.__name__}.{method} is not a @dispatch method")
        names = dict(role=self.name, call=f"{method}()", deadline=function.deadline)
        if mode != SPLIT:
            refs = self.call_async(method, *args, **kwargs)
            return Pending(refs, function.gather or ((lambda results: results[0]) if mode == RANK0 else list), **names)
        batch = function.prepare(args[0], *args[1:], **kwargs) if function.prepare else args[0]
        plan = plan_micro_batches(sample_lengths(batch), self.world_size, self.max_tokens)
        refs = [getattr(actor, method).remote([select(batch, micro) for micro in rank], *args[1:], **kwargs)
                for actor, rank in zip(self.actors, plan)]
        return Pending(refs, function.gather or (lambda results: in_batch_order(plan, results)), **names)

    def __getattr__(self, method: str) -> Callable:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self.submit(method, *args, **kwargs).result()

    def wait_ready(self) -> None:
        """The calls in `starting` (the ranks' model loads) are done, a failed one raised here, and the ranks' start
        (`startup_times`) is in the start-up report."""
        from rlsys import watchdog

        if not self.starting:
            return
        watchdog.get(self.starting, role=self.name, call="model load", kind="start_s")
        self.starting = []
        CLOCK.role(self.name, watchdog.get([actor.startup_times.remote() for actor in self.actors], role=self.name,
                                           call="startup_times()", kind="start_s"))

    def locations(self) -> list[dict]:
        return ray.get([actor.location.remote() for actor in self.actors])

    def kill(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        release(self.placement.group)
