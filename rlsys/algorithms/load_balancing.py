"""Mixture-of-experts routing: the load-balancing loss (Switch Transformer, eqs. 4-6, as Qwen3-MoE and Mixtral
train with it) and how the tokens spread over the experts."""
from __future__ import annotations

import torch


def expert_shares(router_logits: list[torch.Tensor], top_k: int,
                  mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(share of top-k assignments per expert, mean router probability per expert), each [experts], over all
    layers' [tokens, experts] logits and the tokens `mask` keeps (padding left out)."""
    experts = router_logits[0].shape[-1]
    assigned = torch.zeros(experts, device=router_logits[0].device)
    probability = torch.zeros(experts, device=router_logits[0].device)
    rows = torch.zeros((), device=router_logits[0].device)
    for logits in router_logits:
        probs = logits.float().softmax(-1)
        keep = torch.ones(probs.shape[0], device=probs.device) if mask is None else mask.reshape(-1).float()
        chosen = probs.topk(top_k, dim=-1).indices
        assigned = assigned.scatter_add(0, chosen.reshape(-1), keep.repeat_interleave(top_k))
        probability = probability + (probs * keep[:, None]).sum(0)
        rows = rows + keep.sum()
    rows = rows.clamp(min=1)
    return assigned / (rows * top_k), probability / rows


def load_balancing_loss(router_logits: list[torch.Tensor], top_k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """experts * top_k * sum_e f_e * P_e, with f_e the share of assignments to expert e (no gradient through the
    top-k) and P_e its mean router probability: top_k when both are even, up to experts * top_k when one expert
    takes everything."""
    return balance_loss(*expert_shares(router_logits, top_k, mask), top_k)


def balance_loss(assigned: torch.Tensor, probability: torch.Tensor, top_k: int) -> torch.Tensor:
    """load_balancing_loss from expert_shares' two vectors."""
    return assigned.numel() * top_k * (assigned * probability).sum()
