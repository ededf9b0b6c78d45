"""Importance weights for samples drawn by another policy than the one trained (async staleness, or the sampler's
own numerics): truncated importance sampling (TIS), masked importance sampling (MIS) and rejection of the
tokens MIS would mask (weight 1 for the rest).

The ratio is trainer / sampler: exp(logp - behaviour_logp), with logp the trained policy before this update
(the PPO "proximal" policy, so clipping still bounds the step) and behaviour_logp what vLLM reported for the
token it sampled. Levels: "token" (each token's own ratio), "sequence" (the product over the response) and
"geometric" (the per-token geometric mean of the sequence's ratios, which does not explode with length).
"""
from __future__ import annotations

import torch

from rlsys.algorithms.masked import masked_sum
from rlsys.config.choices import IS_CORRECTIONS, IS_LEVELS


def importance_weights(logp: torch.Tensor, behaviour_logp: torch.Tensor, mask: torch.Tensor, *, mode: str,
                       level: str = "token", cap: float = 2.0, low: float = 0.5, high: float = 2.0,
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(per-token weights [R, T], no gradient; per-token statistics to average into metrics).

    tis: min(ratio, cap). mis: the ratio where it lies in [low, high], else 0 (the token, or with a sequence
    level the whole response, is left out of the update). reject: the same mask with weight 1 inside it (the
    samples are filtered, not reweighted). none: 1, and the statistics still show the mismatch.
    """
    if mode not in IS_CORRECTIONS or level not in IS_LEVELS:
        raise ValueError(f"importance sampling mode {mode!r} / level {level!r}: expected {IS_CORRECTIONS} / {IS_LEVELS}")
    mask = mask.to(torch.float32)
    with torch.no_grad():
        # NaN: the sampler reported no logprob for this token; it counts as on-policy
        behaviour_logp = torch.where(torch.isnan(behaviour_logp), logp.float(), behaviour_logp.float())
        log_ratio = ((logp.float() - behaviour_logp.float()) * mask).clamp(-20.0, 20.0)
        if level == "token":
            level_log_ratio = log_ratio
        else:
            totals = masked_sum(log_ratio, mask, dim=-1)
            if level == "geometric":
                totals = totals / mask.sum(-1).clamp(min=1)
            level_log_ratio = totals.clamp(-20.0, 20.0).unsqueeze(-1).expand_as(log_ratio)
        ratio = level_log_ratio.exp()
        inside = ((ratio >= low) & (ratio <= high)).float()
        if mode == "tis":
            weights = ratio.clamp(max=cap)
        elif mode == "mis":
            weights = ratio * inside
        elif mode == "reject":
            weights = inside
        else:
            weights = torch.ones_like(ratio)
        stats = {
            # KL(sampler || trainer) per token, k3 estimator over the sampler's tokens: unbiased, never negative
            # (in float64 with expm1: near 1 the ratio's rounding would outweigh the estimate and its sign)
            "logprob_mismatch_kl": (torch.expm1(log_ratio.double()) - log_ratio.double()).float(),
            "is_ratio_mean": ratio,
            "is_masked_frac": 1.0 - inside if mode in ("mis", "reject") else torch.zeros_like(ratio),
            "is_truncated_frac": (ratio > cap).float() if mode == "tis" else torch.zeros_like(ratio),
        }
    return weights * mask, stats
