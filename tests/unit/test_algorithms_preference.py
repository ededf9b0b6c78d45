"""Hand-computed checks for the preference losses: Bradley-Terry, DPO, conservative DPO, IPO."""

import math

import pytest
import torch

from rlsys.algorithms import bradley_terry_loss, dpo_loss


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_bradley_terry_loss_and_accuracy():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    loss, metrics = bradley_terry_loss(chosen, rejected)
    assert loss.item() == pytest.approx(-(logsig(1.0) + logsig(-1.0)) / 2, abs=1e-6)
    assert metrics["accuracy"] == 0.5 and metrics["margin"] == pytest.approx(0.0)


def test_bradley_terry_margin_demands_a_wider_gap():
    chosen, rejected = torch.tensor([2.0]), torch.tensor([1.0])
    loss, _ = bradley_terry_loss(chosen, rejected, margin=0.5)
    assert loss.item() == pytest.approx(-logsig(0.5), abs=1e-6)


def test_dpo_sigmoid_loss_and_implicit_rewards():
    chosen, rejected = torch.tensor([1.0, -0.5]), torch.tensor([-1.0, 0.5])
    loss, metrics = dpo_loss(chosen, rejected, beta=0.5)
    # h = [2, -1] -> beta * h = [1, -0.5]
    assert loss.item() == pytest.approx(-(logsig(1.0) + logsig(-0.5)) / 2, abs=1e-6)
    assert metrics["chosen_reward"] == pytest.approx(0.5 * 0.25)
    assert metrics["rejected_reward"] == pytest.approx(0.5 * -0.25)
    assert metrics["margin"] == pytest.approx(0.25)
    assert metrics["accuracy"] == 0.5


def test_conservative_dpo_mixes_both_labels():
    chosen, rejected = torch.tensor([1.0]), torch.tensor([0.0])
    loss, _ = dpo_loss(chosen, rejected, beta=1.0, label_smoothing=0.1)
    assert loss.item() == pytest.approx(-0.9 * logsig(1.0) - 0.1 * logsig(-1.0), abs=1e-6)


def test_ipo_regresses_the_gap_to_half_over_beta():
    chosen, rejected = torch.tensor([3.0, 1.0]), torch.tensor([0.0, 0.0])
    loss, _ = dpo_loss(chosen, rejected, beta=0.5, loss_type="ipo")  # target gap 1 / (2 * 0.5) = 1
    assert loss.item() == pytest.approx(((3 - 1) ** 2 + (1 - 1) ** 2) / 2)


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([0.0], requires_grad=True)
    loss, _ = dpo_loss(chosen, rejected, beta=0.1)
    loss.backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()


def test_unknown_loss_type_is_named():
    with pytest.raises(ValueError, match="hinge"):
        dpo_loss(torch.zeros(1), torch.zeros(1), beta=0.1, loss_type="hinge")
