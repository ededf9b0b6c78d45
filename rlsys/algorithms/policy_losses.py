"""PPO/GRPO losses on per-token log-probs: clipped policy surrogate, clipped value loss, KL loss."""

from __future__ import annotations

import torch

from rlsys.algorithms.kl import kl_penalty
from rlsys.algorithms.masked import aggregate_loss, weighted_mean


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    aggregation: str = "token_mean",
    max_len: int | None = None,
    dual_clip: float | None = None,
    weights: torch.Tensor | None = None,
    metric_weights: torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate ``max(-A*r, -A*clip(r, 1-clip_low, 1+clip_high))``.

    ``clip_high > clip_low`` is DAPO's clip-higher, leaving room for low-probability
    tokens to grow.  ``dual_clip = c > 1`` (Ye et al. 2020) additionally bounds the
    loss by ``-c*A`` for negative advantages, so a huge ratio on a bad token cannot
    produce an unbounded update. ``weights``: see ``aggregate_loss``; metrics are weighted the same way, or
    by ``metric_weights`` when given. ``is_weights`` (per token, no gradient) scale each token's term: the
    off-policy correction of samples drawn by another policy (see ``off_policy.importance_weights``).
    """
    metric_weights = metric_weights if metric_weights is not None else weights
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip_low and clip_high must be >= 0, got {clip_low}, {clip_high}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    mask = mask.to(torch.float32)
    advantages = advantages.float()
    # Clamp the log ratio so exp() cannot overflow on a stale/unstable batch.
    log_ratio = (logp.float() - old_logp.float()).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_mat = torch.maximum(unclipped, clipped)
    metrics: dict[str, float] = {}
    if dual_clip is not None:
        lower_bound = -dual_clip * advantages
        dual_active = (advantages < 0) & (loss_mat > lower_bound)
        loss_mat = torch.where(advantages < 0, torch.minimum(loss_mat, lower_bound), loss_mat)
        metrics["dual_clip_frac"] = weighted_mean(dual_active.float(), mask, metric_weights).item()
    if is_weights is not None:
        loss_mat = loss_mat * is_weights
    loss = aggregate_loss(loss_mat, mask, aggregation, max_len, weights)
    with torch.no_grad():
        metrics["clip_frac"] = weighted_mean((clipped > unclipped).float(), mask, metric_weights).item()
        metrics["approx_kl"] = weighted_mean(0.5 * log_ratio.square(), mask, metric_weights).item()
        metrics["ratio_mean"] = weighted_mean(ratio, mask, metric_weights).item()
    return loss, metrics


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float | None = 0.2,
    aggregation: str = "token_mean",
    max_len: int | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped critic loss ``0.5 * max((v-R)^2, (v_clip-R)^2)`` with
    ``v_clip = old + clip(v - old, -clip_range, clip_range)``; keeps the critic
    from moving far from the values used to compute the advantages.
    ``clip_range=None`` disables clipping."""
    mask = mask.to(torch.float32)
    values, old_values, returns = values.float(), old_values.float(), returns.float()
    unclipped = (values - returns).square()
    if clip_range is None:
        loss_mat, clip_active = unclipped, torch.zeros_like(unclipped)
    else:
        if clip_range < 0:
            raise ValueError(f"clip_range must be >= 0 or None, got {clip_range}")
        values_clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
        clipped = (values_clipped - returns).square()
        loss_mat, clip_active = torch.maximum(unclipped, clipped), (clipped > unclipped).float()
    loss = aggregate_loss(0.5 * loss_mat, mask, aggregation, max_len, weights)
    with torch.no_grad():
        metrics = {
            "value_clip_frac": weighted_mean(clip_active, mask, weights).item(),
            "value_mean": weighted_mean(values, mask, weights).item(),
        }
    return loss, metrics


def kl_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    estimator: str = "k3",
    aggregation: str = "token_mean",
    max_len: int | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL to the reference policy used directly as a loss term (GRPO) rather than
    folded into the reward (PPO)."""
    return aggregate_loss(kl_penalty(logp, ref_logp, estimator), mask.to(torch.float32), aggregation, max_len, weights)
