"""KTO and ORPO: the losses against hand-computed values, their gradients, and the engine objectives on a tiny
causal LM built from the same list batches the engine trains on."""

import math

import pytest
import torch

from rlsys.algorithms import dpo_loss, kto_loss, orpo_loss
from rlsys.config.losses import PreferenceLoss
from rlsys.engine.batch import response_values, select, to_tensors, with_loss_weights
from rlsys.engine.objectives import objective_for, response_logprob_totals, response_logprobs


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def log_odds(avg_logp: float) -> float:
    p = math.exp(avg_logp)
    return math.log(p / (1 - p))


# ---- the losses -----------------------------------------------------------------------------------------
def test_orpo_loss_is_beta_times_the_odds_ratio_term():
    chosen, rejected = [-0.5, -2.0], [-1.0, -1.2]
    loss, metrics = orpo_loss(torch.tensor(chosen), torch.tensor(rejected), beta=0.1)
    gaps = [log_odds(c) - log_odds(r) for c, r in zip(chosen, rejected)]
    assert loss.item() == pytest.approx(0.1 * sum(-math.log(sigmoid(g)) for g in gaps) / 2, abs=1e-6)
    assert metrics["log_odds_ratio"] == pytest.approx(sum(gaps) / 2, abs=1e-5)
    assert metrics["accuracy"] == 0.5  # the second pair's chosen answer is the less likely one
    assert metrics["chosen_reward"] == pytest.approx(0.1 * -1.25)
    assert metrics["rejected_reward"] == pytest.approx(0.1 * -1.1)
    assert metrics["margin"] == pytest.approx(0.1 * (-1.25 + 1.1))


def test_orpo_stays_finite_for_a_response_the_policy_is_sure_of():
    loss, _ = orpo_loss(torch.tensor([0.0]), torch.tensor([-1.0]), beta=0.1)
    assert math.isfinite(loss.item())


def kto_by_hand(r, desirable, beta, z0, wd, wu):
    z0 = max(z0, 0.0)
    losses = [wd * (1 - sigmoid(beta * (x - z0))) if d else wu * (1 - sigmoid(beta * (z0 - x)))
              for x, d in zip(r, desirable)]
    return sum(losses) / len(losses)


def test_kto_loss_weighs_each_side_against_the_reference_point():
    r, desirable = [2.0, -1.0, 0.5, -3.0], [1.0, 0.0, 1.0, 0.0]
    loss, metrics = kto_loss(torch.tensor(r), torch.tensor(desirable), beta=0.5, reference_point=torch.tensor(0.4),
                             desirable_weight=1.0, undesirable_weight=2.0)
    assert loss.item() == pytest.approx(kto_by_hand(r, desirable, 0.5, 0.4, 1.0, 2.0), abs=1e-6)
    assert metrics["desirable_reward"] == pytest.approx(0.5 * (2.0 + 0.5) / 2)
    assert metrics["undesirable_reward"] == pytest.approx(0.5 * (-1.0 - 3.0) / 2)
    assert metrics["kl"] == pytest.approx(0.4)
    assert metrics["desirable"] == 2.0 and metrics["undesirable"] == 2.0


def test_kto_reference_point_below_zero_is_clamped_and_a_missing_side_reports_zero():
    r, desirable = [0.3, -0.2], [1.0, 1.0]
    loss, metrics = kto_loss(torch.tensor(r), torch.tensor(desirable), beta=0.1, reference_point=torch.tensor(-0.7),
                             desirable_weight=1.5)
    assert loss.item() == pytest.approx(kto_by_hand(r, desirable, 0.1, 0.0, 1.5, 1.0), abs=1e-6)
    assert metrics["kl"] == 0.0 and metrics["undesirable_reward"] == 0.0 and metrics["undesirable"] == 0.0


def test_orpo_gradient_raises_chosen_and_lowers_rejected():
    chosen = torch.tensor([-1.0], requires_grad=True)
    rejected = torch.tensor([-1.0], requires_grad=True)
    orpo_loss(chosen, rejected, beta=0.1)[0].backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()


def test_kto_gradient_raises_desirable_and_lowers_undesirable_and_not_the_reference_point():
    desirable = torch.tensor([1.0, 0.0, 1.0, 0.0])
    r, fixed = (torch.tensor([0.5, 0.5, -0.5, -0.5], requires_grad=True) for _ in range(2))
    kto_loss(r, desirable, beta=0.1, reference_point=r.mean())[0].backward()  # z0 is detached inside
    assert (r.grad[desirable > 0] < 0).all() and (r.grad[desirable == 0] > 0).all()
    kto_loss(fixed, desirable, beta=0.1, reference_point=torch.tensor(0.0))[0].backward()
    assert torch.allclose(r.grad, fixed.grad)


@pytest.mark.parametrize("loss_type", ["kto", "orpo"])
def test_dpo_loss_refuses_the_losses_that_are_not_pair_log_ratios(loss_type):
    with pytest.raises(ValueError, match=loss_type):
        dpo_loss(torch.zeros(1), torch.zeros(1), beta=0.1, loss_type=loss_type)


# ---- the objectives on a tiny model ---------------------------------------------------------------------
@pytest.fixture()
def model():
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    return AutoModelForCausalLM.from_config(config).float()


PAIRS = {"prompt_ids": [[1, 2, 3], [4, 5], [6, 7, 8]], "chosen_ids": [[10, 11, 12], [13, 14], [15]],
         "rejected_ids": [[20, 21], [22, 23, 24], [25, 26]]}
ROWS = {"prompt_ids": [[1, 2, 3], [4, 5], [6, 7, 8], [9, 2]],
        "response_ids": [[10, 11, 12], [20, 21], [13, 14], [22, 23, 24]], "desirable": [1.0, 0.0, 1.0, 0.0]}


def preference(loss: str, beta: float, nll_coef: float = 0.0) -> PreferenceLoss:
    return PreferenceLoss(preference_loss=loss, beta=beta, label_smoothing=0.0, nll_coef=nll_coef,
                          desirable_weight=1.0, undesirable_weight=1.0)


def train(model, tensors: dict, settings: PreferenceLoss, steps: int) -> list[dict]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss, metrics = objective_for(settings)(model, tensors)
        loss.backward()
        optimizer.step()
        history.append(metrics)
    return history


def test_orpo_objective_raises_the_log_odds_ratio(model):
    tensors, _ = to_tensors(with_loss_weights(PAIRS, preference("orpo", 0.5)), pad_id=0)
    history = train(model, tensors, preference("orpo", 0.5), steps=8)
    first, last = history[0], history[-1]
    assert last["log_odds_ratio"] > first["log_odds_ratio"] and last["loss"] < first["loss"]
    assert first["loss"] == pytest.approx(first["chosen_nll"] + first["preference_loss"], abs=1e-6)


def test_orpo_micro_batch_shares_add_up_to_the_whole_batch(model):
    weighted = with_loss_weights(PAIRS, preference("orpo", 0.1))
    whole, _ = objective_for(preference("orpo", 0.1))(model, to_tensors(weighted, 0)[0])
    parts = [objective_for(preference("orpo", 0.1))(model, to_tensors(select(weighted, micro), 0)[0])[0]
             for micro in ([0, 2], [1], [])]  # an empty micro-batch is a zero-weight dummy
    assert sum(p.item() for p in parts) == pytest.approx(whole.item(), abs=1e-6)


def initial_totals(model, rows: dict) -> list[float]:
    """The model's summed log-probability of each response, through the rows' own tensors and layout."""
    tensors, layout = to_tensors(rows, pad_id=0)
    with torch.no_grad():
        logp, _ = response_logprobs(model, tensors)
    per_token = response_values(logp, layout)
    assert [len(v) for v in per_token] == [len(r) for r in rows["response_ids"]]
    totals = response_logprob_totals(logp, tensors["response_mask"]).tolist()
    assert totals == pytest.approx([sum(v) for v in per_token], abs=1e-5)
    return totals


def test_kto_rows_are_one_padded_row_each_with_their_fields(model):
    rows = with_loss_weights({**ROWS, "ref_total": [-1.0, -2.0, -3.0, -4.0]}, preference("kto", 0.1))
    assert rows["loss_weight"] == [0.25] * 4
    tensors, layout = to_tensors(select(rows, [1, 2]), pad_id=0)
    assert tensors["input_ids"].tolist() == [[4, 5, 20, 21, 0], [6, 7, 8, 13, 14]]
    assert tensors["response_mask"].tolist() == [[0, 1, 1, 0], [0, 0, 1, 1]]
    assert tensors["ref_total"].tolist() == [-2.0, -3.0] and tensors["desirable"].tolist() == [0.0, 1.0]
    assert tensors["loss_weight"].tolist() == [0.25, 0.25] and layout.rows == [0, 1]
    initial_totals(model, select(rows, [1, 2]))


def test_kto_objective_separates_desirable_from_undesirable(model):
    rows = {**ROWS, "ref_total": initial_totals(model, ROWS)}  # the reference is the model as it starts: r = 0
    kto = preference("kto", 0.5)
    tensors, _ = to_tensors(with_loss_weights(rows, kto), pad_id=0)
    first = train(model, tensors, kto, steps=1)[0]
    assert first["desirable_reward"] == pytest.approx(0.0, abs=1e-5) and first["kl"] == pytest.approx(0.0, abs=1e-5)
    last = train(model, tensors, kto, steps=6)[-1]
    assert last["desirable_reward"] > 0 > last["undesirable_reward"]
    assert last["desirable_frac"] == pytest.approx(0.5)


def test_kto_nll_coef_adds_the_desirable_rows_nll(model):
    rows = {**ROWS, "ref_total": [-20.0, -21.0, -22.0, -23.0]}
    tensors, _ = to_tensors(with_loss_weights(rows, preference("kto", 0.1)), pad_id=0)
    plain, metrics = objective_for(preference("kto", 0.1))(model, tensors)
    with_nll, _ = objective_for(preference("kto", 0.1, nll_coef=0.5))(model, tensors)
    assert with_nll.item() == pytest.approx(plain.item() + 0.5 * metrics["desirable_nll"], abs=1e-6)
    assert metrics["desirable_nll"] > 0
