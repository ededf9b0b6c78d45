"""Reward shaping and advantage estimators (PPO/GAE, GRPO, Dr.GRPO, RLOO, REINFORCE++), and the one the config picks.

Sequence-level tensors are [B]; token-level tensors are [B, T] with ``mask`` = 1
on response tokens.  Outputs are zero outside the mask.
"""

from __future__ import annotations

import torch

from rlsys.algorithms.kl import kl_penalty
from rlsys.algorithms.masked import masked_whiten


def broadcast_to_tokens(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Give every response token of a row that row's sequence-level advantage."""
    return adv.unsqueeze(-1) * mask.to(adv.dtype)


def token_level_rewards(
    scores: torch.Tensor,
    mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> torch.Tensor:
    """Per-token reward: ``-kl_coef * kl`` on each response token, plus the
    sequence score on the last response token (where the reward model judged it).

    The last token is found from the mask, so right padding is handled; rows with
    no response token get no score.
    """
    mask = mask.to(torch.float32)
    rewards = torch.zeros_like(mask)
    if kl is not None and kl_coef != 0.0:
        rewards = rewards - kl_coef * kl.to(torch.float32) * mask
    T = mask.shape[-1]
    last_idx = T - 1 - mask.flip(-1).argmax(dim=-1)
    has_response = mask.sum(-1) > 0
    rows = torch.arange(mask.shape[0], device=mask.device)
    score = scores.to(torch.float32) * has_response
    rewards[rows, last_idx] += score
    return rewards


@torch.no_grad()
def gae(
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
    whiten: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016), returns ``(advantages, returns)``.

    Runs backwards over time.  Masked-out positions are skipped (they carry the
    running value/advantage through unchanged), so padding on either side or
    non-response tokens inside a row do not break the recursion; the value after
    the last response token is 0.  ``returns = advantages + values`` is the value
    target and is never whitened.
    """
    mask = mask.to(torch.float32)
    rewards = token_rewards.float() * mask
    values = values.float() * mask
    B, T = rewards.shape
    next_value = torch.zeros(B, device=rewards.device)
    running_adv = torch.zeros(B, device=rewards.device)
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(T)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running_adv = m * (delta + gamma * lam * running_adv) + (1 - m) * running_adv
        next_value = m * values[:, t] + (1 - m) * next_value
        advantages[:, t] = running_adv
    advantages = advantages * mask
    returns = (advantages + values) * mask
    if whiten:
        advantages = masked_whiten(advantages, mask) * mask
    return advantages, returns


def _grouped(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """View [B] scores as [num_prompts, group_size]; samples of a prompt are contiguous."""
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D [B], got shape {tuple(scores.shape)}")
    if group_size < 1 or scores.numel() % group_size != 0:
        raise ValueError(
            f"group_size must be a positive divisor of the batch size {scores.numel()}, got {group_size}"
        )
    return scores.float().view(-1, group_size)


def group_normalized_advantages(
    scores: torch.Tensor, group_size: int, scale_by_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """GRPO advantage: score minus its group mean, divided by the group std.

    Dr.GRPO sets ``scale_by_std=False`` because dividing by the std up-weights
    prompts that are nearly always right or always wrong.  A group with identical
    scores yields zeros (not NaN) thanks to ``eps``.
    """
    grouped = _grouped(scores, group_size)
    adv = grouped - grouped.mean(dim=-1, keepdim=True)
    if scale_by_std:
        std = grouped.std(dim=-1, keepdim=True, correction=1 if group_size > 1 else 0)
        adv = adv / (std + eps)
    return adv.view(-1)


def groups_with_spread(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B / group_size] bool: does the group hold at least two different scores?  A group whose samples all
    scored the same gets zero group-relative advantage, so it teaches nothing (DAPO's dynamic sampling)."""
    grouped = _grouped(scores, group_size)
    return grouped.amax(dim=-1) > grouped.amin(dim=-1)


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out: score minus the mean of the *other* samples of its prompt,
    an unbiased baseline because it does not depend on the sample itself."""
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for RLOO, got {group_size}")
    grouped = _grouped(scores, group_size)
    others_mean = (grouped.sum(dim=-1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others_mean).view(-1)


@torch.no_grad()
def reinforce_plus_plus_advantages(
    token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0
) -> torch.Tensor:
    """REINFORCE++: discounted return-to-go per token, whitened over all response
    tokens of the batch (a global baseline instead of a critic or group)."""
    mask = mask.to(torch.float32)
    rewards = token_rewards.float() * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]  # skip non-response positions, as in ``gae``
        running = m * (rewards[:, t] + gamma * running) + (1 - m) * running
        returns[:, t] = running
    return masked_whiten(returns, mask) * mask


def estimate_advantages(algo, scores: torch.Tensor, mask: torch.Tensor, old_logp: torch.Tensor,
                        ref_logp: torch.Tensor, values: torch.Tensor | None, kl_coef: float,
                        turn_rewards: torch.Tensor | None = None):
    """(advantages [N, T], returns [N, T] or None). With `kl_in_reward` the KL penalty is part of the reward.

    `turn_rewards` [N, T] holds an episode's rewards before its last turn, at each turn's last token; `scores`
    is every sample's whole reward. Token-level estimators (gae, reinforce_pp) credit each reward from where
    it was earned; sequence-level ones see the sum."""
    penalised = algo.kl_in_reward and ref_logp is not None  # no reference runs when algo.kl_coef is 0
    kl = kl_penalty(old_logp, ref_logp, algo.kl_estimator) * mask if penalised else None
    coef = kl_coef if penalised else 0.0
    if algo.advantage in ("gae", "reinforce_pp"):
        final = scores if turn_rewards is None else scores - turn_rewards.sum(dim=1)
        token_rewards = token_level_rewards(final, mask, kl, coef)
        if turn_rewards is not None:
            token_rewards = token_rewards + turn_rewards
        if algo.advantage == "reinforce_pp":
            return reinforce_plus_plus_advantages(token_rewards, mask, algo.gamma), None
        advantages, returns = gae(token_rewards, values, mask, algo.gamma, algo.lam)
        return masked_whiten(advantages, mask) * mask, returns
    # Sequence-level estimators: a KL penalty in the reward is summed over the response first.
    sequence_scores = scores - coef * (kl.sum(dim=1) if kl is not None else 0.0)
    if algo.advantage == "rloo":
        return broadcast_to_tokens(rloo_advantages(sequence_scores, algo.n_samples), mask), None
    grouped = group_normalized_advantages(sequence_scores, algo.n_samples, scale_by_std=algo.scale_by_std)
    return broadcast_to_tokens(grouped, mask), None
