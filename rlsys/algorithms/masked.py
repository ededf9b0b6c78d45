"""Reductions over padded [B, T] tensors where ``mask`` marks the response tokens."""

from __future__ import annotations

import torch

from rlsys.config.choices import LOSS_AGGREGATIONS


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` over entries where ``mask`` is 1 (whole tensor when ``dim`` is None)."""
    x = x * mask.to(x.dtype)
    return x.sum() if dim is None else x.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over masked entries; an all-zero mask yields 0 rather than NaN."""
    mask = mask.to(x.dtype)
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1.0)


def weighted_mean(x: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """A metric's mean: its share of the mini-batch mean with loss weights, else the masked mean."""
    return (x * weights.to(x.dtype)).sum() if weights is not None else masked_mean(x, mask)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over masked entries (Bessel-corrected when more than one entry)."""
    mask = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        count = mask.sum()
        if count > 1:
            var = var * count / (count - 1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise ``x`` to unit variance using statistics of the masked entries only.

    Padding must not leak into the statistics, otherwise short responses would be
    pulled towards zero.  With ``shift_mean=False`` the mean is added back so only
    the scale changes (as in some PPO implementations for rewards).
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


def aggregate_loss(
    loss_mat: torch.Tensor, mask: torch.Tensor, mode: str, max_len: int | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss [B, T] to a scalar.

    With ``weights`` (per token, zero off the mask) the result is ``sum(loss * weights)``: the caller
    has spread the aggregation over the whole mini-batch (all micro-batches and ranks), so this micro-batch
    contributes exactly its share; ``mode`` is then already in the weights.

    * ``token_mean`` (DAPO): every token weighs the same, so long responses are not
      down-weighted.
    * ``seq_mean_token_mean`` (original GRPO): every sequence weighs the same.
    * ``seq_mean_token_sum_norm`` (Dr.GRPO): token sums divided by a constant
      ``max_len`` so there is no length bias from per-sequence normalisation.
    """
    if weights is not None:
        return (loss_mat * weights.to(loss_mat.dtype)).sum()
    mask = mask.to(loss_mat.dtype)
    if mode == "token_mean":
        return masked_mean(loss_mat, mask)
    if mode == "seq_mean_token_mean":
        return masked_mean(loss_mat, mask, dim=-1).mean()
    if mode == "seq_mean_token_sum_norm":
        if max_len is None or max_len <= 0:
            raise ValueError(f"max_len must be a positive int for mode {mode!r}, got {max_len!r}")
        return (masked_sum(loss_mat, mask, dim=-1) / max_len).mean()
    raise ValueError(f"Unknown aggregation mode {mode!r}; allowed modes: {', '.join(LOSS_AGGREGATIONS)}")
