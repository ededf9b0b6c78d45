"""Reward plumbing for RL training: rule rewards, user reward functions, weighted combination."""

from rlsys.errors import RewardConfigError, RewardError
from rlsys.rewards.combined import WeightedReward, build_reward, call_reward, plain_specs
from rlsys.rewards.rules import (RULES, answer_match, boxed_answer_match, extract_answer, format_reward,
                                 make_format_reward, normalize_answer, strip_end_of_turn)
from rlsys.rewards.user_function import load_reward_function

__all__ = [
    "RULES",
    "RewardConfigError",
    "RewardError",
    "WeightedReward",
    "answer_match",
    "boxed_answer_match",
    "build_reward",
    "call_reward",
    "extract_answer",
    "format_reward",
    "load_reward_function",
    "make_format_reward",
    "normalize_answer",
    "plain_specs",
    "strip_end_of_turn",
]
