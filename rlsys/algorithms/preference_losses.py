"""Preference losses: Bradley-Terry for reward models; DPO / IPO / conservative DPO, ORPO and KTO for policies.

Inputs are one value per pair: reward-model scores, the policy-minus-reference log-ratio of the whole
response (summed over tokens for DPO, averaged for IPO), or the policy's mean per-token log-probability of
each response (ORPO, no reference). KTO takes one value per unpaired response and its desirable label.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PAIR_LOGRATIO_LOSSES = ("sigmoid", "ipo")  # what dpo_loss computes


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0,
                       weights: torch.Tensor | None = None):
    """-log sigmoid(r_chosen - r_rejected - margin): the chosen answer must outscore the rejected by `margin`.

    Scores are [pairs] or [pairs, heads] (an ensemble; `weights` [pairs, heads] is each head's bootstrap of the
    pairs). Metrics are those of the heads' mean.
    """
    diff = chosen - rejected
    losses = -F.logsigmoid(diff - margin)
    loss = (losses * weights if weights is not None else losses).mean()
    mean_diff = diff.mean(-1) if diff.dim() > 1 else diff
    metrics = {"accuracy": (mean_diff > 0).float().mean().item(), "margin": mean_diff.mean().item(),
               "chosen_score": chosen.mean().item(), "rejected_score": rejected.mean().item()}
    if diff.dim() > 1 and diff.shape[1] > 1:
        metrics["head_std"] = diff.std(-1).mean().item()  # how much the heads disagree about a pair
    return loss, metrics


def dpo_loss(chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor, beta: float,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0):
    """DPO (Rafailov et al. 2023), conservative DPO (label smoothing) and IPO (Azar et al. 2023).

    The implicit rewards are beta * log(pi / pi_ref) of each response; `train/margin` is their gap.
    """
    h = chosen_logratio - rejected_logratio
    if loss_type == "sigmoid":
        # with probability label_smoothing the label is flipped: the expected loss under that noise
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2  # regress the log-ratio gap to 1 / (2 tau)
    else:
        raise ValueError(f"unknown preference loss {loss_type!r} for dpo_loss; choose one of {PAIR_LOGRATIO_LOSSES} "
                         "(kto and orpo have their own functions)")
    chosen_reward, rejected_reward = beta * chosen_logratio.detach(), beta * rejected_logratio.detach()
    return losses.mean(), {"chosen_reward": chosen_reward.mean().item(),
                           "rejected_reward": rejected_reward.mean().item(),
                           "margin": (chosen_reward - rejected_reward).mean().item(),
                           "accuracy": (chosen_reward > rejected_reward).float().mean().item()}


def orpo_loss(chosen_avg_logp: torch.Tensor, rejected_avg_logp: torch.Tensor, beta: float):
    """ORPO's odds-ratio term (Hong et al. 2024), beta * -log sigmoid(log odds(chosen) - log odds(rejected)).

    Inputs are each response's mean per-token log-probability under the policy, so p = exp(avg_logp) and
    odds = p / (1 - p); no reference model. The chosen response's NLL, ORPO's other term, is the caller's.
    Rewards are beta * avg_logp, as TRL reports them; `log_odds_ratio` is the mean log-odds gap.
    """
    log_odds = log_odds_of(chosen_avg_logp) - log_odds_of(rejected_avg_logp)
    loss = beta * -F.logsigmoid(log_odds).mean()
    chosen_reward, rejected_reward = beta * chosen_avg_logp.detach(), beta * rejected_avg_logp.detach()
    return loss, {"log_odds_ratio": log_odds.detach().mean().item(),
                  "accuracy": (log_odds.detach() > 0).float().mean().item(),
                  "chosen_reward": chosen_reward.mean().item(), "rejected_reward": rejected_reward.mean().item(),
                  "margin": (chosen_reward - rejected_reward).mean().item()}


def log_odds_of(avg_logp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) from x = log p, with log(1 - p) = log(-expm1(x)), exact as p nears 1. A response the
    policy is certain of (mean log-prob 0 in float) is held just below p = 1, where its odds would be infinite."""
    return avg_logp - torch.log(-torch.expm1(avg_logp.clamp(max=-1e-7)))


def kto_loss(logratios: torch.Tensor, desirable: torch.Tensor, beta: float, reference_point: torch.Tensor,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
    """KTO (Ethayarajh et al. 2024): unpaired responses, each desirable or not, against a reference point z0.

    `logratios` is each whole response's policy-minus-reference log-probability (summed over tokens) and
    `reference_point` z0 an estimate of KL(policy || reference): no gradient flows through it, and being a
    KL it is never below 0. A desirable response loses w_d * (1 - sigmoid(beta * (r - z0))), an undesirable
    one w_u * (1 - sigmoid(beta * (z0 - r))); the loss is their mean over rows.
    """
    good = desirable.bool()
    z0 = torch.as_tensor(reference_point, dtype=logratios.dtype, device=logratios.device).detach().clamp(min=0)
    losses = torch.where(good, desirable_weight * (1 - torch.sigmoid(beta * (logratios - z0))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (z0 - logratios))))
    rewards = beta * logratios.detach()
    return losses.mean(), {"desirable_reward": rewards[good].mean().item() if good.any() else 0.0,
                           "undesirable_reward": rewards[~good].mean().item() if (~good).any() else 0.0,
                           "kl": z0.item(), "desirable": float(good.sum()), "undesirable": float((~good).sum())}
