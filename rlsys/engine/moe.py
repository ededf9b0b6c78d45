"""Mixture-of-experts models in the training engine: their routers' logits, captured during a forward pass, give
the load-balancing loss that trains beside every objective and the expert load that is logged.

Which modules route is what transformers records as `router_logits` for the architecture (`_can_record_outputs`),
so any transformers MoE (Qwen3-MoE, Mixtral, ...) takes the same path.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from rlsys.algorithms.load_balancing import balance_loss, expert_shares

ROUTER_METRICS = ("aux_loss", "expert_load_max", "expert_load_min")  # logged as train/<name>


@dataclass(frozen=True)
class Routing:
    """A model's routing: which modules return router logits, where in their output, and its top-k."""
    router_class: type
    index: int
    top_k: int
    aux_loss_coef: float


def routing_of(model: torch.nn.Module, aux_loss_coef: float | None = None) -> Routing | None:
    """The routing of a transformers MoE model (under DeepSpeed or LoRA wrappers), None for a dense one."""
    records = lambda m: getattr(m, "_can_record_outputs", None) or {}
    inner = next((m for m in model.modules() if "router_logits" in records(m)), None)
    if inner is None:
        return None
    recorder, config = records(inner)["router_logits"], inner.config
    top_k = getattr(config, "num_experts_per_tok", None)
    if not top_k or not isinstance(getattr(recorder, "target_class", None), type):
        return None
    coef = aux_loss_coef if aux_loss_coef is not None else getattr(config, "router_aux_loss_coef", 0.001)
    return Routing(recorder.target_class, recorder.index or 0, top_k, float(coef))


@dataclass
class RouterLogits:
    """Each router's [tokens, experts] logits from the forward passes run while capturing, in layer order."""
    logits: list[torch.Tensor] = field(default_factory=list)


@contextmanager
def captured_router_logits(model: torch.nn.Module, routing: Routing | None):
    captured = RouterLogits()
    if routing is None:
        yield captured
        return
    hooks = [module.register_forward_hook(lambda _, __, out: captured.logits.append(out[routing.index]))
             for module in model.modules() if isinstance(module, routing.router_class)]
    try:
        yield captured
    finally:
        for hook in hooks:
            hook.remove()


def router_terms(captured: RouterLogits, routing: Routing, mask: torch.Tensor | None,
                 share: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted load-balancing loss to add to a micro-batch's loss, and its metrics (this micro-batch's
    `share` of the mini-batch, so they add up over micro-batches and ranks): `aux_loss`, and the busiest and
    idlest expert's share of the routing relative to an even one (1: balanced)."""
    assigned, probability = expert_shares(captured.logits, routing.top_k, mask)  # assigned: counts, no gradient
    aux = balance_loss(assigned, probability, routing.top_k)
    even = assigned * assigned.numel()
    metrics = {"aux_loss": aux.item() * share, "expert_load_max": even.max().item() * share,
               "expert_load_min": even.min().item() * share}
    return routing.aux_loss_coef * share * aux, metrics
