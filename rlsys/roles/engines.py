"""Rollout engines for a role: the policy's (sampling), or another model's (a judge, a distillation teacher).

Each engine is a Ray actor on a bundle of its own (`rollout.tensor_parallel_size` GPUs), or on a slot of the
shared placement group when roles are colocated.
"""
from __future__ import annotations

from rlsys.actors.cluster import node_label_resources
from rlsys.actors.group import Placement, create_placement
from rlsys.actors.rollout import RolloutGroup, RolloutSpec, Sampling
from rlsys.config.jobs import uses_environment


def rollout_spec(cfg, model_path: str, device: str, colocated: bool, max_model_len: int | None = None,
                 weight_sync: str = "object_store") -> RolloutSpec:
    r = cfg.rollout
    episodes = uses_environment(cfg)  # an episode grows past its prompt
    max_model_len = max_model_len or (max(cfg.data.max_length, cfg.env.max_total_tokens) if episodes
                                      else cfg.data.max_length)
    return RolloutSpec(model_path=model_path, device=device, dtype=cfg.model.dtype, seed=cfg.seed,
                       max_model_len=max_model_len, tensor_parallel_size=r.tensor_parallel_size,
                       gpu_memory_utilization=r.gpu_memory_utilization if device == "cuda" else min(r.gpu_memory_utilization, 0.2),
                       enable_sleep=colocated and device == "cuda", weight_sync=weight_sync, lora_rank=cfg.model.lora.r)


def rollout_placement(cfg, device: str, num_engines: int) -> Placement:
    gpus = float(cfg.rollout.tensor_parallel_size) if device == "cuda" else 0
    group = create_placement(num_engines, gpus=gpus, cpus=1.0, strategy=cfg.cluster.placement_strategy,
                             extra_resources=node_label_resources(cfg.cluster, "rollout"))
    return Placement(group, list(range(num_engines)), num_gpus=gpus, num_cpus=1.0)


def start_engines(cfg, model_path: str, device: str, num_engines: int, max_model_len: int | None = None,
                  weight_sync: str = "object_store") -> RolloutGroup:
    """Rollout engines on devices of their own: another model than the policy (a judge, a distillation teacher),
    or the policy of a job without colocation (online DPO), its new weights arriving by `weight_sync`."""
    spec = rollout_spec(cfg, model_path, device, False, max_model_len, weight_sync=weight_sync)
    return RolloutGroup(cfg.rollout.backend, spec, rollout_placement(cfg, device, num_engines))


def rollout_sampling(cfg, stop_token_ids: list[int]) -> Sampling:
    """How the policy samples: algo.n_samples answers per prompt with the rollout.* settings."""
    r = cfg.rollout
    return Sampling(n=cfg.algo.n_samples, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                    max_new_tokens=r.max_new_tokens, stop=list(r.stop), stop_token_ids=stop_token_ids)


def start_judge_engines(cfg, device: str) -> RolloutGroup:
    # the judge's prompt holds the template, the question and the answer: room for four times data.max_length
    return start_engines(cfg, cfg.judge.model, device, cfg.judge.num_engines, cfg.data.max_length * 4)
