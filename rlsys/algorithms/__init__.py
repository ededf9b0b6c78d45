"""Pure-torch RL/SFT math: masked reductions, log-probs, KL, advantages and losses."""

from rlsys.algorithms.advantages import (broadcast_to_tokens, estimate_advantages, gae, group_normalized_advantages,
                                         groups_with_spread, reinforce_plus_plus_advantages, rloo_advantages,
                                         token_level_rewards)
from rlsys.algorithms.kl import AdaptiveKLController, FixedKLController, KLController, build_kl_controller, kl_penalty
from rlsys.algorithms.logprobs import cross_entropy_loss, entropy_from_logits, token_logprobs
from rlsys.algorithms.masked import aggregate_loss, masked_mean, masked_sum, masked_var, masked_whiten, weighted_mean
from rlsys.algorithms.policy_losses import kl_loss, policy_loss, value_loss
from rlsys.algorithms.preference_losses import bradley_terry_loss, dpo_loss, kto_loss, orpo_loss

__all__ = [
    "AdaptiveKLController", "FixedKLController", "KLController", "aggregate_loss", "bradley_terry_loss",
    "broadcast_to_tokens", "build_kl_controller", "cross_entropy_loss", "dpo_loss", "entropy_from_logits",
    "estimate_advantages", "gae", "group_normalized_advantages", "groups_with_spread", "kl_loss", "kl_penalty",
    "kto_loss", "masked_mean", "masked_sum", "masked_var", "masked_whiten", "orpo_loss", "policy_loss",
    "reinforce_plus_plus_advantages", "rloo_advantages", "token_level_rewards", "token_logprobs", "value_loss",
    "weighted_mean",
]
