"""A group of Ray actors on one placement group, called as one object.

A worker method declares how a call on the group reaches its ranks (`@dispatch(...)`), so worker code
reads as single-process code and controller code as one call:
    ALL      every rank gets the same arguments; the list of results comes back
    SPLIT    the first argument (a dict of equal-length lists) is cut into one contiguous shard per rank;
             per-rank results (dicts of lists) are concatenated back in order
    RANK0    every rank runs it (ZeRO-3 collectives need all of them); rank 0's result comes back
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Callable

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ALL, SPLIT, RANK0 = "all", "split", "rank0"


def dispatch(mode: str) -> Callable:
    def mark(method: Callable) -> Callable:
        method.dispatch_mode = mode
        return method
    return mark


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


def split_batch(batch: dict[str, list], parts: int) -> list[dict[str, list]]:
    """Contiguous, nearly equal shards of a dict of equal-length lists (samples of one prompt stay together)."""
    size = len(next(iter(batch.values())))
    bounds = [size * i // parts for i in range(parts + 1)]
    return [{k: v[bounds[i]:bounds[i + 1]] for k, v in batch.items()} for i in range(parts)]


def concat_results(results: list[Any]) -> Any:
    if results and isinstance(results[0], dict) and all(isinstance(v, list) for v in results[0].values()):
        return {k: [x for r in results for x in r[k]] for k in results[0]}
    return [x for r in results for x in r] if results and isinstance(results[0], list) else results


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
                 env: dict[str, str] | None = None, **kwargs: Any):
        self.name = name
        self.worker_cls = worker_cls
        self.placement = placement
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

    def __getattr__(self, method: str) -> Callable:
        mode = getattr(getattr(self.worker_cls, method, None), "dispatch_mode", None)
        if mode is None:
            raise AttributeError(f"{self.worker_cls.__name__}.{method} is not a @dispatch method")

        def call(*args: Any, **kwargs: Any) -> Any:
            if mode == SPLIT:
                shards = split_batch(args[0], self.world_size)
                refs = [getattr(a, method).remote(s, *args[1:], **kwargs) for a, s in zip(self.actors, shards)]
                return concat_results(ray.get(refs))
            results = ray.get(self.call_async(method, *args, **kwargs))
            return results[0] if mode == RANK0 else results
        return call

    def locations(self) -> list[dict]:
        return ray.get([actor.location.remote() for actor in self.actors])

    def kill(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        release(self.placement.group)
