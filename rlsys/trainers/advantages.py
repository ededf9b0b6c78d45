"""From scores and per-token logprobs/values to advantages (and returns for the critic), as the config asks."""
from __future__ import annotations

import torch

from rlsys.algorithms import (broadcast_to_tokens, gae, group_normalized_advantages, kl_penalty, masked_whiten,
                              reinforce_plus_plus_advantages, rloo_advantages, token_level_rewards)


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
