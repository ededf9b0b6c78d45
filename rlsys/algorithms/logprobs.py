"""Token-level log-probabilities, cross-entropy and entropy from LM logits."""

from __future__ import annotations

import torch


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels) per position: [B, T, V] x [B, T] -> [B, T] in float32.

    Uses ``gather - logsumexp`` instead of a full ``log_softmax`` so no extra
    [B, T, V] float32 tensor is kept around (the vocab dimension dominates memory).
    Labels equal to -100 (or any negative value) are read at index 0; the caller
    is expected to mask those positions.
    """
    safe_labels = labels.clamp(min=0).unsqueeze(-1)
    picked = torch.gather(logits, -1, safe_labels).squeeze(-1).float()
    return picked - torch.logsumexp(logits.float(), dim=-1)


def cross_entropy_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean negative log-likelihood over non-ignored tokens.

    Returns ``(loss, num_tokens)``; the token count lets callers re-weight losses
    correctly when averaging across micro-batches or data-parallel ranks.
    """
    valid = (labels != ignore_index).float()
    num_tokens = valid.sum()
    nll = -token_logprobs(logits, labels) * valid
    return nll.sum() / num_tokens.clamp(min=1.0), num_tokens


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution per position: [B, T, V] -> [B, T].

    H = logsumexp(z) - sum softmax(z) * z, which avoids computing log(0).
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)
