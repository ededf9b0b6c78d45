"""Micro-batch planning, loss weights and packed tensors: the update is the same whatever the split."""
import dataclasses
import random

import pytest
import torch

from rlsys.config.compose import compose_job
from rlsys.config.losses import LanguageModelLoss, PolicyLoss, PreferenceLoss
from rlsys.config.validate import to_typed
from rlsys.engine.batch import plan_micro_batches, select, to_tensors, with_loss_weights
from rlsys.engine.objectives import objective_for


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from rlsys.data.task import tokenizer_texts
    from rlsys.models.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts=tokenizer_texts())
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def rl_batch(count: int = 12, seed: int = 0) -> dict[str, list]:
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, 200) for _ in range(rng.randint(3, 9))] for _ in range(count)]
    responses = [[rng.randrange(3, 200) for _ in range(rng.randint(1, 7))] for _ in range(count)]
    return {"prompt_ids": prompts, "response_ids": responses,
            "advantages": [[rng.uniform(-1, 1)] * len(r) for r in responses],
            "old_logp": [[rng.uniform(-6, -4) for _ in r] for r in responses]}


GRPO = to_typed(compose_job("grpo", ["rollout.max_new_tokens=8"]))


def policy(**changes) -> PolicyLoss:
    """GRPO's policy loss settings (clip 0.2, no KL), with `changes`."""
    return dataclasses.replace(PolicyLoss.from_config(GRPO, kl_coef=0.0), **changes)


def test_every_rank_gets_the_same_number_of_micro_batches_within_the_budget():
    lengths = [30, 5, 7, 12, 40, 3, 9, 22, 18]
    for ranks in (1, 2, 3, 4):
        plan = plan_micro_batches(lengths, ranks, max_tokens=50)
        assert len({len(rank) for rank in plan}) == 1
        assert sorted(i for rank in plan for micro in rank for i in micro) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in micro) <= 50 for rank in plan for micro in rank)
    assert plan_micro_batches([5, 5, 5], 4, max_tokens=50)[3] == [[]]  # fewer samples than ranks: an empty one
    assert plan_micro_batches([100], 1, max_tokens=50) == [[[0]]]  # one sample over the budget stands alone


def accumulated(model, batch, settings, ranks: int, max_tokens: int, pad_id: int = 0):
    """What the engine does over all ranks: loss shares summed, gradients summed (DeepSpeed's rank average is
    undone by the world size), metrics summed."""
    model.zero_grad()
    weighted = with_loss_weights(batch, settings)
    total, metrics = 0.0, {}
    for rank in plan_micro_batches([len(p) + len(r) for p, r in zip(batch["prompt_ids"], batch["response_ids"])]
                                   if "response_ids" in batch else [len(x) for x in batch["input_ids"]],
                                   ranks, max_tokens):
        for micro in rank:
            tensors, _ = to_tensors(select(weighted, micro), pad_id, row_tokens=64)
            loss, values = objective_for(settings)(model, tensors)
            loss.backward()
            total += loss.item()
            for k, v in values.items():
                metrics[k] = metrics.get(k, 0.0) + v
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).clone()
    return total, grads, metrics


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_policy_loss_is_the_same_whatever_the_split(model, aggregation):
    batch, hparams = rl_batch(), policy(loss_aggregation=aggregation)
    one, grads_one, metrics_one = accumulated(model, batch, hparams, ranks=1, max_tokens=10_000)
    for ranks, max_tokens in ((1, 20), (2, 30), (3, 16), (5, 12)):
        loss, grads, metrics = accumulated(model, batch, hparams, ranks, max_tokens)
        assert loss == pytest.approx(one, abs=1e-6)
        assert torch.allclose(grads, grads_one, atol=1e-6), (ranks, max_tokens)
        assert metrics["clip_frac"] == pytest.approx(metrics_one["clip_frac"], abs=1e-6)


def test_token_mean_weighs_tokens_not_micro_batches(model):
    """A short micro-batch's tokens weigh as much as a long one's: the mean over all tokens, not of means."""
    batch = {"prompt_ids": [[5, 6, 7]] * 3, "response_ids": [[8], [9, 10, 11, 12, 13, 14], [15, 16]],
             "advantages": [[1.0], [0.5] * 6, [-1.0] * 2], "old_logp": [[-5.0], [-5.0] * 6, [-5.0] * 2]}
    hparams = policy(loss_aggregation="token_mean")
    split, _, _ = accumulated(model, batch, hparams, ranks=3, max_tokens=10)
    tensors, _ = to_tensors(batch, 0)
    whole, _ = objective_for(hparams)(model, tensors)  # no weights: the plain token mean of one batch
    assert split == pytest.approx(whole.item(), abs=1e-6)


def test_lm_loss_is_the_same_whatever_the_split(model):
    rng = random.Random(1)
    sequences = [[rng.randrange(3, 200) for _ in range(rng.randint(4, 30))] for _ in range(10)]
    batch = {"input_ids": sequences, "labels": [[-100] * 2 + s[2:] for s in sequences]}
    one, grads_one, _ = accumulated(model, batch, LanguageModelLoss(), ranks=1, max_tokens=10_000)
    loss, grads, metrics = accumulated(model, batch, LanguageModelLoss(), ranks=2, max_tokens=40)
    assert loss == pytest.approx(one, abs=1e-6)
    assert torch.allclose(grads, grads_one, atol=1e-6)
    assert metrics["tokens"] == sum(len(s) - 2 for s in sequences)  # labels after the first token


def test_packed_and_padded_batches_give_the_same_loss_and_gradients(model):
    """Sequences packed end to end with restarting positions equal one padded row per sequence."""
    from rlsys.data.collate import pad

    batch, hparams = rl_batch(6, seed=3), policy(loss_aggregation="token_mean")
    packed, _ = to_tensors(batch, 0)
    assert packed["input_ids"].shape[0] == 1
    model.zero_grad()
    loss_packed, _ = objective_for(hparams)(model, packed)
    loss_packed.backward()
    grads_packed = [p.grad.clone() for p in model.parameters()]

    sequences = [p + r for p, r in zip(batch["prompt_ids"], batch["response_ids"])]
    padded = {"input_ids": pad(sequences, 0), "attention_mask": pad([[1] * len(s) for s in sequences], 0)}
    width = padded["input_ids"].shape[1] - 1
    for name in ("response_mask", "advantages", "old_logp"):
        padded[name] = torch.zeros(len(sequences), width)
        for i, (p, r) in enumerate(zip(batch["prompt_ids"], batch["response_ids"])):
            values = [1.0] * len(r) if name == "response_mask" else batch[name][i]
            padded[name][i, len(p) - 1:len(p) - 1 + len(r)] = torch.tensor(values)
    model.zero_grad()
    loss_padded, _ = objective_for(hparams)(model, padded)
    loss_padded.backward()
    assert loss_packed.item() == pytest.approx(loss_padded.item(), abs=1e-6)
    for a, b in zip(grads_packed, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-6)


def test_an_empty_micro_batch_is_a_zero_weight_dummy(model):
    empty = select(with_loss_weights(rl_batch(2), policy(loss_aggregation="token_mean")), [])
    tensors, layout = to_tensors(empty, 0)
    loss, _ = objective_for(policy(loss_aggregation="token_mean"))(model, tensors)
    loss.backward()  # joins the backward like any rank, with nothing to add
    assert loss.item() == 0.0 and layout.rows == []


def test_samples_without_advantage_are_not_run_and_the_update_is_unchanged(model):
    """A group that scored alike has zero advantages: leaving its samples out changes no gradient."""
    batch, hparams = rl_batch(8, seed=5), policy(loss_aggregation="token_mean")
    for i in (1, 2, 6):
        batch["advantages"][i] = [0.0] * len(batch["advantages"][i])
    kept = with_loss_weights(batch, hparams)
    assert len(kept["prompt_ids"]) == 5 and sum(kept["loss_weight"][0:1]) == 1 / sum(map(len, batch["response_ids"]))

    def gradient(weighted: dict) -> torch.Tensor:
        model.zero_grad()
        tensors, _ = to_tensors(weighted, 0)
        loss, metrics = objective_for(hparams)(model, tensors)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()]), metrics

    full = {**batch, "loss_weight": kept["loss_weight"][:1] * 8}  # every sample run, same weights
    grads_full, _ = gradient(full)
    grads_kept, metrics = gradient(kept)
    assert torch.allclose(grads_full, grads_kept, atol=1e-7)
    plain = {k: v for k, v in kept.items() if k not in ("loss_weight", "metric_weight")}
    _, plain_metrics = gradient(plain)  # no weights: token means over the samples run
    for key in ("ratio_mean", "clip_frac", "entropy"):
        assert metrics[key] == pytest.approx(plain_metrics[key], abs=1e-6), key
    with_entropy = with_loss_weights(batch, dataclasses.replace(hparams, entropy_coef=0.01))
    assert len(with_entropy["prompt_ids"]) == 8, "an entropy term moves every sample"


def test_preference_pairs_are_padded_rows_chosen_first_with_their_share_of_the_loss():
    pairs = {"prompt_ids": [[5, 6], [7]], "chosen_ids": [[8, 9], [10]], "rejected_ids": [[11], [12, 13, 14]],
             "ref_chosen": [-1.0, -2.0], "ref_rejected": [-3.0, -4.0]}
    weighted = with_loss_weights(pairs, PreferenceLoss.from_config(to_typed(compose_job("dpo"))))
    tensors, _ = to_tensors(select(weighted, [1]), 0)
    assert tensors["input_ids"].tolist() == [[7, 10, 0, 0], [7, 12, 13, 14]]
    assert tensors["response_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert tensors["loss_weight"].tolist() == [0.5] and tensors["ref_rejected"].tolist() == [-4.0]
