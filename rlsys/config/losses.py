"""What each training objective reads: a frozen dataclass per kind of loss, built from the config here and only
here, with the config's own names. They cross Ray to the trainer ranks; the type picks the objective
(`rlsys.engine.objectives.objective_for`), and a setting a loss does not have is an AttributeError, never a
silently taken default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union


@dataclass(frozen=True)
class LanguageModelLoss:
    """Next-token cross-entropy on the labelled tokens (pretraining, SFT): nothing to set."""


@dataclass(frozen=True)
class PolicyLoss:
    """The clipped surrogate with the off-policy correction, and the KL and entropy terms (GRPO, PPO, ...)."""
    clip_low: float
    clip_high: float
    dual_clip: Optional[float]
    loss_aggregation: str
    max_new_tokens: int  # seq_mean_token_sum_norm's constant divisor
    kl_coef: float  # the KL loss's weight at this step; 0 when the KL is a reward penalty (algo.kl_in_reward)
    kl_estimator: str
    entropy_coef: float
    temperature: float  # the sampler's: log-probabilities are compared at the temperature they were drawn with
    is_correction: str  # none | tis | mis | reject (auto resolved)
    is_level: str
    is_cap: float
    is_low: float
    is_high: float

    @classmethod
    def from_config(cls, cfg, kl_coef: float) -> "PolicyLoss":
        a, r = cfg.algo, cfg.rollout
        return cls(clip_low=a.clip_low, clip_high=a.clip_high, dual_clip=a.dual_clip,
                   loss_aggregation=a.loss_aggregation, max_new_tokens=r.max_new_tokens,
                   kl_coef=0.0 if a.kl_in_reward else kl_coef, kl_estimator=a.kl_estimator,
                   entropy_coef=a.entropy_coef, temperature=r.temperature, is_correction=is_correction(cfg),
                   is_level=a.is_level, is_cap=a.is_cap, is_low=a.is_low, is_high=a.is_high)


@dataclass(frozen=True)
class ValueLoss:
    """The critic's clipped value regression."""
    value_clip: float
    loss_aggregation: str
    max_new_tokens: int

    @classmethod
    def from_config(cls, cfg) -> "ValueLoss":
        return cls(value_clip=cfg.algo.value_clip, loss_aggregation=cfg.algo.loss_aggregation,
                   max_new_tokens=cfg.rollout.max_new_tokens)


@dataclass(frozen=True)
class PairwiseLoss:
    """A reward model's Bradley-Terry loss; an ensemble's heads each on its own bootstrap of the pairs."""
    reward_margin: float
    seed: int  # the bootstrap's

    @classmethod
    def from_config(cls, cfg) -> "PairwiseLoss":
        return cls(reward_margin=cfg.algo.reward_margin, seed=cfg.seed)


@dataclass(frozen=True)
class PreferenceLoss:
    """DPO and IPO (against the reference), KTO (unpaired rows, against the reference), ORPO (no reference)."""
    preference_loss: str  # sigmoid | ipo | kto | orpo
    beta: float
    label_smoothing: float
    nll_coef: float
    desirable_weight: float
    undesirable_weight: float

    @property
    def averages_logprobs(self) -> bool:
        """IPO and ORPO compare mean per-token log-probabilities; DPO and KTO whole-response sums."""
        return self.preference_loss in ("ipo", "orpo")

    @classmethod
    def from_config(cls, cfg) -> "PreferenceLoss":
        a = cfg.algo
        return cls(preference_loss=a.preference_loss, beta=a.beta, label_smoothing=a.label_smoothing,
                   nll_coef=a.nll_coef, desirable_weight=a.desirable_weight, undesirable_weight=a.undesirable_weight)


Loss = Union[LanguageModelLoss, PolicyLoss, ValueLoss, PairwiseLoss, PreferenceLoss]


def is_correction(cfg) -> str:
    """The off-policy correction in force: `auto` truncates importance weights when sampling runs ahead."""
    mode = cfg.algo.is_correction
    return ("tis" if cfg.rollout.max_staleness > 0 else "none") if mode == "auto" else mode
