"""Losses over preference pairs: Bradley-Terry for reward models, DPO / IPO / conservative DPO for policies.

Inputs are one value per pair: reward-model scores, or the policy-minus-reference log-ratio of the whole
response (summed over tokens for DPO, averaged for IPO).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PREFERENCE_LOSSES = ("sigmoid", "ipo")


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0):
    """-log sigmoid(r_chosen - r_rejected - margin): the chosen answer must outscore the rejected by `margin`."""
    diff = chosen - rejected
    loss = -F.logsigmoid(diff - margin).mean()
    return loss, {"accuracy": (diff > 0).float().mean().item(), "margin": diff.mean().item(),
                  "chosen_score": chosen.mean().item(), "rejected_score": rejected.mean().item()}


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
        raise ValueError(f"unknown preference loss {loss_type!r}; choose one of {PREFERENCE_LOSSES}")
    chosen_reward, rejected_reward = beta * chosen_logratio.detach(), beta * rejected_logratio.detach()
    return losses.mean(), {"chosen_reward": chosen_reward.mean().item(),
                           "rejected_reward": rejected_reward.mean().item(),
                           "margin": (chosen_reward - rejected_reward).mean().item(),
                           "accuracy": (chosen_reward > rejected_reward).float().mean().item()}
