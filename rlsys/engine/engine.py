"""The one training engine: a DeepSpeed-wrapped model that every stage (pretrain, SFT, RL, critic) uses.

Stages differ only in the loss function they pass to `train_step`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from rlsys.engine.moe import captured_router_logits, router_terms, routing_of

LossFn = Callable[[torch.nn.Module, dict], "tuple[torch.Tensor, dict[str, float]]"]


@dataclass(frozen=True)
class EngineSettings:
    """Everything the engine reads, built on the driver from the config (rlsys.roles.train_group)."""
    device: str  # cpu | cuda
    dtype: torch.dtype
    world_size: int  # ranks of the group (DeepSpeed averages gradients over them)
    zero_stage: int
    offload_optimizer: bool
    offload_params: bool
    lr: float
    min_lr_ratio: float
    lr_schedule: str
    warmup_steps: int
    total_steps: int
    weight_decay: float
    adam_betas: tuple[float, float]
    adam_eps: float
    grad_clip: float
    max_tokens_per_micro_batch: int
    router_aux_loss_coef: float | None = None  # MoE models: None takes the model config's


def lr_lambda(settings: EngineSettings) -> Callable[[int], float]:
    """Linear warmup, then cosine decay to min_lr_ratio (or constant)."""
    def factor(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        if settings.lr_schedule == "constant":
            return 1.0
        span = max(1, settings.total_steps - settings.warmup_steps)
        progress = min(1.0, (step - settings.warmup_steps) / span)
        return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def deepspeed_config(s: EngineSettings, trainable: bool) -> dict:
    zero: dict = {"stage": s.zero_stage}
    if s.offload_optimizer and trainable:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": s.device == "cuda"}
    if s.offload_params and s.zero_stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": s.device == "cuda"}
    config = {
        # rlsys owns accumulation: micro-batches are sized by tokens, so their number varies between steps;
        # every backward accumulates and step() is the boundary.
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": s.world_size,
        "managed_gradient_accumulation": False,
        "gradient_clipping": s.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": s.dtype == torch.bfloat16},
        "fp16": {"enabled": s.dtype == torch.float16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if trainable:
        # torch's AdamW (fused on GPU) needs no op build; offloading keeps DeepSpeed's CPU Adam.
        params = {"lr": s.lr, "betas": list(s.adam_betas), "eps": s.adam_eps, "weight_decay": s.weight_decay}
        if not s.offload_optimizer:
            params.update(torch_adam=True, **({"fused": True} if s.device == "cuda" else {}))
        config["optimizer"] = {"type": "AdamW", "params": params}
    return config


class TrainEngine:
    """Forward/backward over micro-batches, optimizer steps on accumulation boundaries, checkpoints."""

    def __init__(self, model: torch.nn.Module, settings: EngineSettings, trainable: bool = True):
        import deepspeed

        self.settings = settings
        self.trainable = trainable
        self.offloaded = False  # optimizer states in host memory while colocated engines have the GPU
        self.routing = routing_of(model, settings.router_aux_loss_coef)  # None for a dense model
        if not trainable:
            model.requires_grad_(False)
        if not trainable and settings.zero_stage < 3:
            # A frozen model needs no optimizer state to shard: keep it whole on the device.
            self.module = model.to(settings.device).eval()
            self.engine = None
            return
        params = [p for p in model.parameters() if p.requires_grad] if trainable else None
        scheduler = (lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(settings))) if trainable else None
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=params, lr_scheduler=scheduler,
                                               config=deepspeed_config(settings, trainable))
        self.module = self.engine.module
        if not trainable:
            self.module.eval()

    @property
    def zero3(self) -> bool:
        return self.engine is not None and self.settings.zero_stage == 3

    def train_step(self, micro_batches: list[dict], loss_fn: LossFn) -> dict[str, float]:
        """One optimizer step over any number of micro-batches (the same on every rank).

        Each micro-batch's loss is its share of the mini-batch mean over all ranks (loss weights), so the
        gradients are summed here; DeepSpeed averages them over ranks, which the world size undoes.
        Metrics are shares too and add up the same way.
        """
        self.module.train()
        totals: dict[str, float] = {}
        for batch in micro_batches:
            batch = {k: v.to(self.settings.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with captured_router_logits(self.module, self.routing) as routers:
                loss, metrics = loss_fn(self.engine, batch)
            if routers.logits:  # a MoE model: its load-balancing loss trains beside every objective
                share = float(batch["loss_weight"].sum()) if "loss_weight" in batch else 1.0 / len(micro_batches)
                aux, router_metrics = router_terms(routers, self.routing, batch.get("attention_mask"), share)
                loss, metrics = loss + aux, {**metrics, **router_metrics}
            self.engine.backward(loss * self.settings.world_size, scale_wrt_gas=False)
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value
        self.engine.step()
        grad_norm = self.engine.get_global_grad_norm()
        totals["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
        totals["lr"] = self.engine.get_lr()[0]
        return totals

    @torch.no_grad()
    def forward(self, **inputs):
        self.module.eval()
        inputs = {k: v.to(self.settings.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        return (self.engine or self.module)(**inputs)

    def offload_states(self) -> bool:
        """Optimizer states, fp32 master weights and gradient buffers to host memory, for colocated engines to
        use the GPU; the weights stay (they are sent to the engines). False: nothing to move (a CPU run, a
        frozen model, states DeepSpeed already keeps on the host)."""
        s = self.settings
        if self.offloaded or s.device != "cuda" or self.engine is None or not self.trainable or s.offload_optimizer:
            return False
        optimizer = self.engine.optimizer
        if hasattr(optimizer, "offload_states") and not s.offload_params:  # ZeRO 1-3
            from deepspeed.runtime.zero.offload_config import OffloadStateTypeEnum as State

            self.engine.offload_states(include=[State.optim_states, State.hp_params, State.lp_grads,
                                                State.contiguous_grad_buffer], pin_memory=True)
        else:  # ZeRO 0: torch's optimizer
            _move_optimizer_state(optimizer, "cpu")
        self.offloaded = True
        torch.cuda.empty_cache()
        return True

    def reload_states(self) -> None:
        if not self.offloaded:
            return
        optimizer = self.engine.optimizer
        if hasattr(optimizer, "offload_states") and not self.settings.offload_params:
            self.engine.reload_states()
        else:
            _move_optimizer_state(optimizer, self.settings.device)
        self.offloaded = False

    def save_checkpoint(self, folder: str, client_state: dict | None = None) -> None:
        self.engine.save_checkpoint(folder, tag="deepspeed", client_state=client_state or {}, save_latest=False)

    def load_checkpoint(self, folder: str) -> dict:
        _, client_state = self.engine.load_checkpoint(folder, tag="deepspeed")
        return client_state or {}


def _move_optimizer_state(optimizer, device: str) -> None:
    inner = getattr(optimizer, "optimizer", optimizer)  # DeepSpeed's wrappers hold torch's optimizer
    for state in inner.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0:  # Adam's step counters stay where they are
                state[key] = value.to(device, non_blocking=False)
