"""Hand-computed checks for rlsys.algorithms: masked reductions, log-probs, KL, advantages."""

import math

import pytest
import torch
import torch.nn.functional as F

from rlsys.algorithms import (AdaptiveKLController, FixedKLController, aggregate_loss, broadcast_to_tokens,
                              build_kl_controller, cross_entropy_loss, entropy_from_logits, gae,
                              group_normalized_advantages, groups_with_spread, kl_penalty, masked_mean, masked_sum,
                              masked_whiten, reinforce_plus_plus_advantages, rloo_advantages, token_level_rewards,
                              token_logprobs)


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(torch.as_tensor(actual).float(), torch.as_tensor(expected).float(), atol=atol, rtol=0)


# ---------------------------------------------------------------- masked reductions
def test_masked_mean_sum_ignore_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    close(masked_sum(x, mask), 10.0)  # 1+2+3+4
    close(masked_mean(x, mask), 2.5)  # 10 / 4 tokens
    close(masked_mean(x, mask, dim=-1), [2.0, 4.0])
    close(masked_mean(x, torch.zeros_like(mask)), 0.0)  # empty mask -> 0, not NaN


def test_masked_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # mean 2, unbiased var (1+0+1)/2 = 1 -> (x-2)/1
    close(masked_whiten(x, mask)[:, :3], [[-1.0, 0.0, 1.0]])
    close(masked_whiten(x, mask, shift_mean=False)[:, :3], [[1.0, 2.0, 3.0]])


def test_aggregation_modes_differ_on_unequal_lengths():
    loss = torch.tensor([[1.0, 2.0, 3.0, 50.0], [4.0, 50.0, 50.0, 50.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    close(aggregate_loss(loss, mask, "token_mean"), 2.5)  # (1+2+3+4) / 4
    close(aggregate_loss(loss, mask, "seq_mean_token_mean"), 3.0)  # (6/3 + 4/1) / 2
    close(aggregate_loss(loss, mask, "seq_mean_token_sum_norm", max_len=4), 1.25)  # (6/4 + 4/4) / 2


def test_aggregation_errors():
    loss, mask = torch.ones(1, 2), torch.ones(1, 2)
    with pytest.raises(ValueError, match="max_len"):
        aggregate_loss(loss, mask, "seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="token_mean"):
        aggregate_loss(loss, mask, "sum")


# ---------------------------------------------------------------- supervised
def test_token_logprobs_hand_value_and_matches_cross_entropy():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # softmax = [0.25, 0.75]
    close(token_logprobs(logits, torch.tensor([[1]])), [[math.log(0.75)]])

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 4, -100], [0, 2, 3]])
    ref = -F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")  # 0 at -100
    lp = token_logprobs(logits, labels)
    assert lp.dtype == torch.float32 and lp.shape == (2, 3)
    valid = labels != -100
    close(lp[valid], ref[valid])
    assert token_logprobs(logits.bfloat16(), labels).dtype == torch.float32


def test_cross_entropy_loss_matches_torch_and_counts_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 4, -100], [0, -100, 3]])
    loss, n_tokens = cross_entropy_loss(logits, labels)
    close(loss, F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100))
    close(n_tokens, 4.0)


def test_entropy_from_logits():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -1e9, -1e9]]])
    # uniform over 4 -> ln 4 = 1.386294; [0.25, 0.75] -> -(.25 ln .25 + .75 ln .75) = 0.562335
    close(entropy_from_logits(logits), [[1.386294, 0.562335]])


# ---------------------------------------------------------------- KL
def test_kl_estimators():
    logp = torch.tensor([-1.0, -2.0])
    ref = torch.tensor([-2.0, -1.0])  # log ratio = [1, -1]
    close(kl_penalty(logp, ref, "k1"), [1.0, -1.0])
    close(kl_penalty(logp, ref, "k2"), [0.5, 0.5])  # 0.5 * 1^2
    # k3 = e^{ref-logp} - (ref-logp) - 1: e^-1 + 1 - 1 = 0.367879; e^1 - 1 - 1 = 0.718282
    close(kl_penalty(logp, ref, "k3"), [0.367879, 0.718282])
    close(kl_penalty(logp, ref, "abs"), [1.0, 1.0])
    # the policy far above the reference (log ratio 100): e^-100 + 100 - 1 = 99, no cap on this side; the
    # reference far above the policy: the exponent is capped at 20, e^20 - 21, finite
    extreme = kl_penalty(torch.tensor([0.0, -100.0]), torch.tensor([-100.0, 0.0]), "k3")
    close(extreme[0], 99.0)
    assert extreme[1].item() == pytest.approx(math.exp(20.0) - 21.0, rel=1e-6)
    with pytest.raises(ValueError, match="estimator"):
        kl_penalty(logp, ref, "k4")


def test_k3_keeps_its_gradient_where_the_policy_runs_far_above_the_reference():
    """d k3 / d logp = 1 - e^{ref - logp}: about 1 at a log ratio of 30 (a clamp there would make it 0)."""
    logp = torch.tensor([0.0, 0.0], requires_grad=True)
    ref = torch.tensor([-30.0, -1.0])
    kl_penalty(logp, ref, "k3").sum().backward()
    close(logp.grad, [1.0 - math.exp(-30.0), 1.0 - math.exp(-1.0)])


def test_adaptive_kl_controller_moves_and_round_trips():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=12.0, n_steps=100)  # error clip(12/6-1)=0.2 -> x(1 + 0.2*100/1e4) = 1.002
    assert ctl.value == pytest.approx(0.1002)
    ctl.update(current_kl=6.6, n_steps=100)  # error 0.1 -> x1.001
    assert ctl.value == pytest.approx(0.1002 * 1.001)

    down = AdaptiveKLController(0.1, 6.0, 10000)
    down.update(current_kl=3.0, n_steps=100)  # error clip(-0.5) = -0.2 -> x0.998
    assert down.value == pytest.approx(0.0998)

    restored = AdaptiveKLController(1.0, 1.0, 1)
    restored.load_state_dict(ctl.state_dict())
    restored.update(5.0, 10)
    ctl.update(5.0, 10)
    assert restored.value == ctl.value


def test_fixed_kl_controller_and_builder():
    fixed = build_kl_controller("fixed", kl_coef=0.05)
    assert isinstance(fixed, FixedKLController)
    fixed.update(100.0, 1000)
    assert fixed.value == 0.05
    other = FixedKLController(0.0)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.05
    adaptive = build_kl_controller("adaptive", kl_coef=0.1, target=6.0, horizon=100)
    assert isinstance(adaptive, AdaptiveKLController)
    with pytest.raises(ValueError, match="kind"):
        build_kl_controller("linear", kl_coef=0.1)
    with pytest.raises(ValueError, match="target"):
        build_kl_controller("adaptive", kl_coef=0.1)


# ---------------------------------------------------------------- advantages
def test_token_level_rewards_score_on_last_response_token():
    scores = torch.tensor([1.0, 2.0, 3.0])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    kl = torch.full((3, 4), 0.5)  # -0.1 * 0.5 = -0.05 on response tokens only
    expected = [[-0.05, -0.05, 0.95, 0.0], [-0.05, 1.95, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    close(token_level_rewards(scores, mask, kl, kl_coef=0.1), expected)
    close(token_level_rewards(scores[:2], mask[:2]), [[0, 0, 1.0, 0], [0, 2.0, 0, 0]])


def test_gae_hand_computed_with_padding():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 7.0]])  # 7 and value 9 are padding garbage
    values = torch.tensor([[0.5, 0.6, 0.7, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # t2: d=1 + 0.9*0 - 0.7 = 0.3;        A2 = 0.3
    # t1: d=0 + 0.9*0.7 - 0.6 = 0.03;     A1 = 0.03 + 0.72*0.3   = 0.246
    # t0: d=0 + 0.9*0.6 - 0.5 = 0.04;     A0 = 0.04 + 0.72*0.246 = 0.21712
    close(adv, [[0.21712, 0.246, 0.3, 0.0]])
    close(ret, [[0.71712, 0.846, 1.0, 0.0]])  # A + V
    # same response left-padded gives the same numbers, shifted
    adv_left, _ = gae(rewards.roll(1, -1), values.roll(1, -1), mask.roll(1, -1), 0.9, 0.8)
    close(adv_left, [[0.0, 0.21712, 0.246, 0.3]])
    white, ret_w = gae(rewards, values, mask, 0.9, 0.8, whiten=True)
    close(masked_mean(white, mask), 0.0)
    close(ret_w, ret)  # returns are never whitened


def test_group_normalized_advantages():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # group 1: mean 0.5, unbiased std sqrt(4*0.25/3) = 0.57735 -> +-0.5/0.57735 = +-0.866025
    # group 2: all equal -> zeros thanks to eps (no NaN)
    close(group_normalized_advantages(scores, 4), [0.866025, -0.866025, -0.866025, 0.866025, 0, 0, 0, 0])
    close(group_normalized_advantages(scores, 4, scale_by_std=False), [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="group_size"):
        group_normalized_advantages(scores, 3)


def test_groups_with_spread():
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5, 0.5, 0.2, 0.7, 0.7, 0.7])
    # groups of 3: mixed, mixed, mixed (0.5 vs 0.2), all 0.7
    assert groups_with_spread(scores, 3).tolist() == [True, True, True, False]
    assert groups_with_spread(torch.tensor([1.0, 1.0, 0.0, 0.0]), 2).tolist() == [False, False]
    with pytest.raises(ValueError, match="group_size"):
        groups_with_spread(scores, 5)


def test_rloo_advantages():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # 1 - (0+0+1)/3 = 2/3 ; 0 - (1+0+1)/3 = -2/3
    close(rloo_advantages(scores, 4), [2 / 3, -2 / 3, -2 / 3, 2 / 3])
    close(rloo_advantages(torch.tensor([3.0, 1.0]), 2), [2.0, -2.0])  # 3-1, 1-3
    with pytest.raises(ValueError, match="group_size"):
        rloo_advantages(scores, 1)


def test_reinforce_plus_plus_advantages():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])  # 5.0 is padding
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # returns-to-go, gamma 0.5: row0 [0.25, 0.5, 1], row1 [1, 2]; mean 4.75/5 = 0.95
    # deviations [-0.7, -0.45, 0.05 | 0.05, 1.05], unbiased var 1.8/4 = 0.45, std 0.670820
    expected = [[-1.043498, -0.670820, 0.074536], [0.074536, 1.565248, 0.0]]
    close(reinforce_plus_plus_advantages(rewards, mask, gamma=0.5), expected)


def test_broadcast_to_tokens():
    close(broadcast_to_tokens(torch.tensor([2.0, -1.0]), torch.tensor([[1, 1, 0], [1, 0, 0]])), [[2, 2, 0], [-1, 0, 0]])


def test_overlong_penalty_ramps_over_the_buffer_before_the_limit():
    from rlsys.algorithms.shaping import overlong_penalty

    penalty = overlong_penalty([4, 12, 14, 16, 20], max_new_tokens=16, buffer=4, factor=0.5)
    assert penalty.tolist() == [0.0, 0.0, -0.25, -0.5, -0.5]
    assert overlong_penalty([16], 16, 0, 1.0).tolist() == [0.0], "buffer 0: off"
