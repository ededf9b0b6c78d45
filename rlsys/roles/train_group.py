"""A group of TrainWorkers for one role (policy, reference, critic, reward model), sized and placed from the config."""
from __future__ import annotations

import os

from omegaconf import OmegaConf

from rlsys.actors.cluster import place_group
from rlsys.actors.group import ActorGroup
from rlsys.actors.train_worker import TrainWorker, WorkerSpec
from rlsys.engine.engine import EngineSettings
from rlsys.models.builders import resolve_dtype


def engine_settings(cfg, device: str, world_size: int, lr: float | None = None) -> EngineSettings:
    """The engine's settings from trainer.*, deepspeed.* and model.dtype (`lr`: a role's own, e.g. the critic's)."""
    t, d = cfg.trainer, cfg.deepspeed
    return EngineSettings(device=device, dtype=resolve_dtype(cfg.model.dtype, device), world_size=world_size,
                          zero_stage=d.zero_stage, offload_optimizer=d.offload_optimizer,
                          offload_params=d.offload_params, lr=lr or t.lr, min_lr_ratio=t.min_lr_ratio,
                          lr_schedule=t.lr_schedule, warmup_steps=t.warmup_steps, total_steps=t.max_steps,
                          weight_decay=t.weight_decay, adam_betas=tuple(t.adam_betas), adam_eps=t.adam_eps,
                          grad_clip=t.grad_clip, max_tokens_per_micro_batch=t.max_tokens_per_micro_batch,
                          router_aux_loss_coef=cfg.model.router_aux_loss_coef)


def start_train_group(role: str, cfg, model_path: str, device: str, *, trainable: bool, lr: float | None = None,
                      placement=None, resources=None, wait: bool = True) -> ActorGroup:
    """A group of TrainWorkers forming one torch.distributed world (NCCL on GPU, gloo on CPU).

    Sized by `cluster.<role>` unless `resources` says otherwise (the trained model of rm is sized by cluster.policy).
    With wait=False it returns while the ranks still load their models (other roles start meanwhile), and
    `group.wait_ready()` waits for them.
    """
    resources = resources or cfg.cluster[role]
    placement = placement or place_group(role, resources, device, cfg.cluster)
    engine = engine_settings(cfg, device, len(placement.bundle_indices), lr)  # a rank a bundle
    spec = WorkerSpec(role=role, model_path=model_path, device=device, trainable=trainable,
                      seed=cfg.seed, cpu_threads=max(1, int(resources.cpus_per_rank)), max_length=cfg.data.max_length,
                      gradient_checkpointing=cfg.model.gradient_checkpointing,
                      attn_implementation=cfg.model.attn_implementation,
                      lora=OmegaConf.to_object(cfg.model.lora) if role == "policy" else None, engine=engine,
                      reward_heads=cfg.algo.reward_heads if cfg.job == "rm" else 1)
    env = {"TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0")} if device == "cuda" else {}
    group = ActorGroup(role, TrainWorker, placement, spec, env=env,
                       max_tokens_per_micro_batch=cfg.trainer.max_tokens_per_micro_batch)
    address = group.actors[0].node_address.remote()  # every rank's setup waits for it, not the driver
    group.starting = [actor.setup.remote(rank, group.world_size, address) for rank, actor in enumerate(group.actors)]
    if wait:
        group.wait_ready()
    return group
