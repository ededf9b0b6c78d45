"""Connect to Ray (or start it) and give each role a place: its own placement group, or a shared one."""
from __future__ import annotations

import os

import ray

from rlsys.actors import capacity
from rlsys.actors.group import Placement, create_placement
from rlsys.config.jobs import demand
from rlsys.errors import ClusterError
from rlsys.logging.startup import CLOCK

# Library chatter that would bury rlsys's own progress lines (errors still come through).
QUIET_ENV = {"TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "VLLM_LOGGING_LEVEL": "ERROR", "PYTHONWARNINGS": "ignore::FutureWarning,ignore::UserWarning"}


def resolve_device(cluster) -> str:
    if cluster.device != "auto":
        return cluster.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def reserve(cfg, device: str) -> None:
    """Join `cluster.address`, or start a local Ray sized for the job's roles (rlsys/config/jobs.py), and check
    that the cluster has the CPUs, GPUs and memory they ask for, before any actor starts."""
    need = demand(cfg, device)
    if cfg.cluster.num_cpus:  # the local Ray gets exactly these: more would wait for ever
        capacity.check_cpus(cfg, device, cfg.cluster.num_cpus, "this machine (cluster.num_cpus)", exact=True)
    address = None if ray.is_initialized() else join_address(cfg.cluster)
    joined = address is not None or ray.is_initialized()
    if not joined:  # checked before this machine starts anything
        import psutil

        capacity.check_memory(cfg, device, psutil.virtual_memory().available / capacity.GB, "this machine")
        note = capacity.check_cpus(cfg, device, os.cpu_count() or 1, "this machine", exact=False)
        if note:
            print(note, flush=True)
    with CLOCK.phase("ray"):
        connect(cfg.cluster, need.cpus, address)
    if joined:  # a cluster holds to its logical CPUs and memory
        resources = ray.cluster_resources()
        capacity.check_cpus(cfg, device, resources.get("CPU", 0), "the cluster", exact=True)
        capacity.check_memory(cfg, device, resources.get("memory", 0) / capacity.GB, "the cluster")
    if need.gpus > (available := ray.cluster_resources().get("GPU", 0)):
        raise ClusterError(f"the roles ask for {need.gpus:g} GPUs but the cluster has {available:g}. Lower "
                           "cluster.<role>.num_ranks / gpus_per_rank or rollout.num_engines, set "
                           "cluster.colocate=true to share devices, or add nodes.")


def join_address(cluster) -> str | None:
    """The cluster a job joins: `cluster.address`; with none, a cluster that `ray start` runs on this machine
    (jobs then start in seconds), unless the job sizes its own (cluster.num_cpus / num_gpus) or asks for a fresh
    one (cluster.address=local). None: start a local Ray."""
    if cluster.address:
        return None if cluster.address == "local" else cluster.address
    if cluster.num_cpus or cluster.num_gpus is not None:
        return None
    from ray._private import services

    try:  # the last `ray start` on this machine, if its GCS process still runs
        started = services.find_bootstrap_address(None)
        return started if started and started in services.find_gcs_addresses() else None
    except Exception:  # noqa: BLE001 - Ray's discovery is best effort: without it a local Ray starts
        return None


def connect(cluster, cpus_needed: float, address: str | None) -> None:
    """Join `address`, or start a local Ray with at least `cpus_needed` logical CPUs (they may exceed the cores)."""
    if ray.is_initialized():
        return
    env = {"env_vars": QUIET_ENV}
    if address:
        if not cluster.address:  # `ray start` here turned on token authentication: its token is in ~/.ray
            from ray._private.authentication import authentication_token_setup

            authentication_token_setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        ray.init(address=address, runtime_env=env, log_to_driver=True)
        if not cluster.address:
            print(f"joined the Ray cluster running at {address} (`ray stop` ends it; cluster.address=local starts "
                  "a cluster for this job only)", flush=True)
        return
    num_gpus = cluster.num_gpus
    if num_gpus is None:
        import torch

        num_gpus = torch.cuda.device_count()
    num_cpus = cluster.num_cpus or max(os.cpu_count() or 1, int(cpus_needed + 0.999))
    # address="local": a new cluster of our own
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, runtime_env=env, include_dashboard=False,
             log_to_driver=True, configure_logging=False)


def node_label_resources(cluster, role: str) -> dict[str, float]:
    """A sliver of the role's node label resource: bundles then only fit on nodes that carry the label."""
    label = cluster.node_labels.get(role)
    return {label: 0.001} if label else {}


def place_group(role: str, resources, device: str, cluster, *, gpus_override: float | None = None) -> Placement:
    """A placement group of one bundle per rank for one role."""
    gpus = (gpus_override if gpus_override is not None else resources.gpus_per_rank) if device == "cuda" else 0
    group = create_placement(resources.num_ranks, gpus=gpus, cpus=resources.cpus_per_rank,
                             strategy=cluster.placement_strategy, extra_resources=node_label_resources(cluster, role))
    return Placement(group, list(range(resources.num_ranks)), num_gpus=gpus, num_cpus=resources.cpus_per_rank)


def shared_placement(num_bundles: int, roles_sharing: int, device: str, cluster) -> tuple:
    """Colocation: one bundle per device; each role's actor on a bundle takes a share of its GPU and CPU."""
    group = create_placement(num_bundles, gpus=1 if device == "cuda" else 0, cpus=float(roles_sharing),
                             strategy=cluster.placement_strategy)

    def slots(count: int) -> Placement:
        share = 1.0 / roles_sharing if device == "cuda" else 0
        return Placement(group, [i % num_bundles for i in range(count)], num_gpus=share, num_cpus=1.0)
    return group, slots
