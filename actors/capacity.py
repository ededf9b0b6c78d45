"""What a job's roles need against what the cluster has, checked before any actor starts.

GPUs are counted exactly. Memory is a floor per process: what importing torch and its kind of actor takes, plus,
where the model lives in host memory (CPU runs, offloaded state), its weights, and for trained models their
gradients and AdamW state as the ZeRO stage shards them. A request above the floor can still fail later; one
below it cannot run, so it is refused with the role that asks most and the setting that sizes it. CPUs beyond the
cores are shared (slower, but it runs): a warning, once.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from rlsys.config.jobs import JOBS, Role
from rlsys.errors import ClusterError

GB = 2**30
PROCESS_GB = {"trainer": 0.8, "frozen": 0.8, "engine": 1.0, "light": 0.2}  # torch, transformers / vLLM imported
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# the roles that hold model.path's model (judges, teachers and reward models hold models of their own)
MODEL_ROLES = {"policy", "reference", "critic", "colocated", "rollout", "reward_model"}


def parameter_count(model_path: str | None) -> float:
    """The model's parameters, from its weight files' size and stored dtype (0 for a tiny model built here)."""
    folder = Path(model_path).expanduser() if model_path else None
    if folder is None or not folder.is_dir():
        return 0.0
    stored = sum(p.stat().st_size for p in folder.glob("*") if p.suffix in (".safetensors", ".bin"))
    try:
        dtype = json.loads((folder / "config.json").read_text()).get("torch_dtype") or "float32"
    except (OSError, ValueError):
        dtype = "float32"
    return stored / DTYPE_BYTES.get(str(dtype), 4)


def host_gb_per_process(role: Role, cfg, device: str, params: float) -> float:
    """The floor of one process's host memory; `params`: the size of model.path's model."""
    base = PROCESS_GB.get(role.kind, PROCESS_GB["light"])
    on_host = device == "cpu"
    # fp32 on CPU; on GPUs the weights live in device memory. Judges, teachers, reward models: sizes unknown here.
    weights = params * 4 if on_host and role.name in MODEL_ROLES else 0.0
    if role.kind == "engine":
        kv = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE", 1)) * GB if on_host else 0.0
        return base + (weights + kv) / GB
    if role.kind != "trainer" or cfg.model.lora.enabled or role.name not in MODEL_ROLES:
        return base + weights / GB
    ranks, z = max(role.actors, 1), cfg.deepspeed
    # fp32 gradients and AdamW's two moments, sharded over the ranks from ZeRO stage 2 / 1 on; stage 3 shards
    # the weights too
    grads = params * 4 / (ranks if z.zero_stage >= 2 else 1)
    moments = params * 8 / (ranks if z.zero_stage >= 1 else 1)
    weights = weights / (ranks if z.zero_stage == 3 else 1)
    trained = (grads + moments) if on_host else (moments if z.offload_optimizer else 0.0)
    return base + (weights + trained) / GB


@dataclass(frozen=True)
class RoleNeed:
    role: Role
    memory_gb: float  # all its processes together


def needs(cfg, device: str) -> list[list[RoleNeed]]:
    """Each phase's roles with the host memory they take at least."""
    params = parameter_count(cfg.model.path)
    return [[RoleNeed(r, r.actors * r.processes * host_gb_per_process(r, cfg, device, params)) for r in phase]
            for phase in JOBS[cfg.job].phases(cfg) or [[]]]


def check_memory(cfg, device: str, available_gb: float, where: str) -> None:
    """Refuse a phase whose roles cannot fit in `available_gb`, naming the role that asks most."""
    for phase in needs(cfg, device):
        total = sum(n.memory_gb for n in phase)
        if total <= available_gb:
            continue
        largest = max(phase, key=lambda n: n.memory_gb)
        role = largest.role
        parts = ", ".join(f"{n.role.name} {n.role.actors} x {n.memory_gb / max(n.role.actors, 1):.1f} GB"
                          for n in sorted(phase, key=lambda n: -n.memory_gb) if n.memory_gb >= 0.05)
        raise ClusterError(f"the roles need at least {total:.1f} GB of memory ({parts}); {where} has "
                           f"{available_gb:.1f} GB. Lower {role.setting or role.name} (the {role.name}: "
                           f"{role.actors}), or run on a larger machine or cluster.")


def check_cpus(cfg, device: str, available: float, where: str, exact: bool) -> str | None:
    """A cluster holds to its logical CPUs (a request above them would wait for ever): refused, naming the role
    that asks most. This machine's local Ray is started with as many as the roles ask for, and they share the
    cores: a note to print."""
    for phase in JOBS[cfg.job].phases(cfg) or [[]]:
        needed = sum(r.actors * r.cpus for r in phase)
        if needed <= available:
            continue
        if not exact:
            return (f"note: the roles ask for {needed:g} CPUs and {where} has {available:g} cores; they share "
                    "them, which is slower than giving each its own")
        role = max(phase, key=lambda r: r.actors * r.cpus)
        raise ClusterError(f"the roles ask for {needed:g} CPUs and {where} has {available:g}. Lower "
                           f"{role.setting or role.name} (the {role.name}: {role.actors} x {role.cpus:g} CPUs), "
                           f"or add nodes.")
    return None
