"""Importance weights for samples drawn by another policy: values by hand, and what they do to an update."""
import math

import pytest
import torch

from rlsys.algorithms import policy_loss
from rlsys.algorithms.off_policy import importance_weights

LOGP = torch.log(torch.tensor([[0.5, 0.2, 0.3]]))
BEHAVIOUR = torch.log(torch.tensor([[0.25, 0.4, 0.3]]))  # token ratios 2, 0.5, 1
MASK = torch.tensor([[1.0, 1.0, 0.0]])  # the third token is padding


def weights(mode, level="token", **bounds):
    return importance_weights(LOGP, BEHAVIOUR, MASK, mode=mode, level=level, **bounds)


def test_truncated_weights_are_the_ratio_cut_at_the_cap():
    w, stats = weights("tis", cap=1.5)
    assert w.tolist()[0] == pytest.approx([1.5, 0.5, 0.0])
    assert stats["is_ratio_mean"][0, :2].tolist() == pytest.approx([2.0, 0.5])
    assert stats["is_truncated_frac"][0, :2].tolist() == [1.0, 0.0]


def test_masked_weights_keep_the_ratio_inside_the_bounds_and_leave_out_the_rest():
    w, stats = weights("mis", low=0.6, high=2.5)
    assert w.tolist()[0] == pytest.approx([2.0, 0.0, 0.0])  # ratio 2 kept as it is, 0.5 is below the band
    assert stats["is_masked_frac"][0, :2].tolist() == [0.0, 1.0]
    w, _ = weights("mis", low=0.4, high=1.5)
    assert w.tolist()[0] == pytest.approx([0.0, 0.5, 0.0])


def test_rejection_keeps_the_same_tokens_with_weight_one():
    w, stats = weights("reject", low=0.6, high=2.5)
    assert w.tolist()[0] == [1.0, 0.0, 0.0]
    assert stats["is_masked_frac"][0, :2].tolist() == [0.0, 1.0]


def test_sequence_and_geometric_levels_use_the_whole_response():
    w, _ = weights("tis", level="sequence", cap=10.0)  # 2 x 0.5 = 1 for both tokens
    assert w.tolist()[0] == pytest.approx([1.0, 1.0, 0.0])
    behaviour = torch.log(torch.tensor([[0.25, 0.1, 0.3]]))  # ratios 2 and 2: product 4, geometric mean 2
    w, _ = importance_weights(LOGP, behaviour, MASK, mode="tis", level="sequence", cap=10.0)
    assert w.tolist()[0] == pytest.approx([4.0, 4.0, 0.0])
    w, _ = importance_weights(LOGP, behaviour, MASK, mode="tis", level="geometric", cap=10.0)
    assert w.tolist()[0] == pytest.approx([2.0, 2.0, 0.0])
    w, _ = importance_weights(LOGP, behaviour, MASK, mode="mis", level="sequence", low=0.5, high=3.0)
    assert w.tolist()[0] == [0.0, 0.0, 0.0]  # the whole response is left out
    w, _ = importance_weights(LOGP, behaviour, MASK, mode="mis", level="sequence", low=0.5, high=5.0)
    assert w.tolist()[0] == pytest.approx([4.0, 4.0, 0.0])  # inside the band: the sequence's ratio


def test_mismatch_kl_is_zero_on_policy_and_positive_off_it():
    _, same = importance_weights(LOGP, LOGP.clone(), MASK, mode="none")
    assert same["logprob_mismatch_kl"].abs().max() < 1e-7
    _, stats = weights("none")
    assert stats["logprob_mismatch_kl"][0, 0] == pytest.approx((2 - 1) - math.log(2))


def test_a_token_without_sampler_logprob_counts_as_on_policy():
    behaviour = BEHAVIOUR.clone()
    behaviour[0, 0] = float("nan")
    w, _ = importance_weights(LOGP, behaviour, MASK, mode="tis", cap=1.5)
    assert w.tolist()[0] == pytest.approx([1.0, 0.5, 0.0])


@pytest.mark.parametrize("gap", [1.0, 4.0, 8.0])
def test_a_stale_sample_moves_the_corrected_update_a_bounded_amount(gap):
    """A token the stale sampler found unlikely (its logprob `gap` below the trainer's), with a negative
    advantage. PPO that takes the sampler's logprobs as its old policy has ratio e^gap outside the clip range,
    so its gradient grows as e^gap; decoupled from the sampler (the proximal policy is the trainer's own) with
    truncated importance weights it is at most is_cap times the on-policy gradient."""
    logits = torch.zeros(1, 4, 8)

    def grad_norm(old_from_sampler: bool, corrected: bool) -> float:
        x = logits.clone().requires_grad_(True)
        logp = torch.log_softmax(x, -1)[..., 0]
        mask, advantages = torch.ones(1, 4), -torch.ones(1, 4)
        behaviour = logp.detach() - gap
        old = behaviour if old_from_sampler else logp.detach()
        is_weights = importance_weights(logp.detach(), behaviour, mask, mode="tis", cap=2.0)[0] if corrected else None
        loss, _ = policy_loss(logp, old, advantages, mask, is_weights=is_weights)
        loss.backward()
        return x.grad.norm().item()

    on_policy = grad_norm(old_from_sampler=False, corrected=False)
    assert grad_norm(old_from_sampler=True, corrected=False) == pytest.approx(on_policy * math.exp(gap), rel=1e-4)
    assert grad_norm(old_from_sampler=False, corrected=True) <= 2.0 * on_policy + 1e-6
