"""Hand-computed checks for rlsys.algorithms policy/value/KL losses."""

import math

import pytest
import torch

from rlsys.algorithms import kl_loss, policy_loss, value_loss


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(torch.as_tensor(actual).float(), torch.as_tensor(expected).float(), atol=atol, rtol=0)


def logp_pair(ratios):
    """(logp, old_logp) with exp(logp - old_logp) == ratios, one row."""
    return torch.log(torch.tensor([ratios])), torch.zeros(1, len(ratios))


def test_policy_loss_symmetric_clip_and_metrics():
    logp, old = logp_pair([1.5, 0.5, 1.0])
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    mask = torch.ones(1, 3)
    loss, m = policy_loss(logp, old, adv, mask)
    # tok0: max(-1.5, -1.2) = -1.2 (clipped); tok1: max(0.5, 0.8) = 0.8 (clipped); tok2: -1.0
    close(loss, (-1.2 + 0.8 - 1.0) / 3)
    assert m["clip_frac"] == pytest.approx(2 / 3)
    assert m["ratio_mean"] == pytest.approx(1.0)  # (1.5 + 0.5 + 1) / 3
    # 0.5 * (ln1.5^2 + ln0.5^2) / 3 = 0.5 * (0.164402 + 0.480453) / 3
    assert m["approx_kl"] == pytest.approx(0.1074758, abs=1e-6)


def test_policy_loss_clip_higher_and_no_grad_when_clipped():
    logp, old = logp_pair([1.5])
    logp.requires_grad_(True)
    loss, m = policy_loss(logp, old, torch.tensor([[1.0]]), torch.ones(1, 1), clip_low=0.2, clip_high=0.28)
    close(loss, -1.28)  # ratio clipped at 1 + 0.28
    loss.backward()
    close(logp.grad, [[0.0]])  # clipped token contributes no gradient
    # negative advantage with a large ratio is NOT clipped (pessimistic bound): -(-1)*1.5
    loss, m = policy_loss(*logp_pair([1.5]), torch.tensor([[-1.0]]), torch.ones(1, 1))
    close(loss, 1.5)
    assert m["clip_frac"] == 0.0


def test_policy_loss_dual_clip():
    logp, old = logp_pair([5.0, 5.0])
    adv = torch.tensor([[-1.0, 1.0]])
    mask = torch.tensor([[1.0, 0.0]])
    # tok0: max(5, 1.2) = 5, bounded by -3 * -1 = 3
    loss, m = policy_loss(logp, old, adv, mask, dual_clip=3.0)
    close(loss, 3.0)
    assert m["dual_clip_frac"] == 1.0
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(logp, old, adv, mask, dual_clip=1.0)


def test_policy_loss_aggregation_modes_differ():
    logp = torch.zeros(2, 3)  # ratio 1 -> per-token loss = -A
    adv = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    values = {
        mode: policy_loss(logp, logp, adv, mask, aggregation=mode, max_len=4)[0].item()
        for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
    }
    # -(10/4), -(6/3 + 4/1)/2, -(6/4 + 4/4)/2
    assert values == pytest.approx({"token_mean": -2.5, "seq_mean_token_mean": -3.0, "seq_mean_token_sum_norm": -1.25})


def test_value_loss_clipping():
    values = torch.tensor([[1.5, 1.1, 0.5]])
    old = torch.ones(1, 3)
    returns = torch.tensor([[2.0, 0.0, 1.0]])
    # tok0: v_clip 1.2 -> 0.5*max(0.25, 0.64) = 0.32 (clipped)
    # tok1: v_clip 1.1 -> 0.5*1.21 = 0.605; tok2: v_clip 0.8 -> 0.5*max(0.25, 0.04) = 0.125
    loss, m = value_loss(values, old, returns, torch.ones(1, 3), clip_range=0.2)
    close(loss, (0.32 + 0.605 + 0.125) / 3)
    assert m["value_clip_frac"] == pytest.approx(1 / 3)
    loss, m = value_loss(values, old, returns, torch.ones(1, 3), clip_range=None)
    close(loss, 0.5 * (0.25 + 1.21 + 0.25) / 3)
    assert m["value_clip_frac"] == 0.0


def test_kl_loss():
    logp = torch.tensor([[-1.0, -2.0, 0.0]])
    ref = torch.tensor([[-2.0, -1.0, -5.0]])
    mask = torch.tensor([[1, 1, 0]])
    close(kl_loss(logp, ref, mask, estimator="k1"), 0.0)  # (1 - 1) / 2
    close(kl_loss(logp, ref, mask), (math.exp(-1) + math.exp(1) - 2) / 2)  # k3 mean = 0.543081
    with pytest.raises(ValueError, match="estimator"):
        kl_loss(logp, ref, mask, estimator="nope")
