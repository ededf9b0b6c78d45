"""Loss functions the engine trains with, one per kind of training, over tensors built by `batch.py`.

Each takes (model, batch, settings) and returns (loss, metrics); the settings' type (rlsys/config/losses.py)
picks the objective. Per-token tensors are aligned with the
shifted targets: position t holds the token input_ids[:, t + 1]. With `loss_weight` in the batch (see
`batch.py`) loss and metrics are this micro-batch's share of the mini-batch mean, so they add up over
micro-batches and ranks.
"""
from __future__ import annotations

import torch

from rlsys.algorithms import (aggregate_loss, bradley_terry_loss, dpo_loss, entropy_from_logits, kl_loss, kl_penalty,
                              kto_loss, masked_sum, orpo_loss, policy_loss, token_logprobs, value_loss, weighted_mean)
from rlsys.algorithms.ensemble import bootstrap_weights
from rlsys.algorithms.off_policy import importance_weights
from rlsys.config.losses import (LanguageModelLoss, Loss, PairwiseLoss, PolicyLoss, PreferenceLoss,
                                 ValueLoss)
from rlsys.data.collate import IGNORE


def model_inputs(batch: dict) -> dict:
    """Packed rows carry position ids (attention stays inside each sequence); padded rows a mask."""
    if "position_ids" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def selected_logprobs(logits, targets, mask, temperature: float = 1.0, entropy: str = "none"):
    """log p(target) at the masked positions, as a [R, T] tensor (zero elsewhere), and optionally the entropy.

    Only the masked positions' logits are taken to fp32 ([N, V], not another [R, T, V]); `entropy` is
    "none", "metric" (computed without gradient) or "loss" (with gradient, for an entropy bonus).
    """
    picked = logits[mask].float()
    if temperature != 1.0:
        picked = picked / temperature  # the sampler's distribution, so ratios compare like with like
    logp = torch.zeros(mask.shape, dtype=torch.float32, device=logits.device)
    logp = logp.masked_scatter(mask, token_logprobs(picked, targets[mask]))
    if entropy == "none":
        return logp, None
    with torch.set_grad_enabled(entropy == "loss" and torch.is_grad_enabled()):
        values = entropy_from_logits(picked)
    return logp, torch.zeros_like(logp).masked_scatter(mask, values)


def lm_objective(model, batch: dict, settings: LanguageModelLoss):
    """Next-token cross-entropy on the labelled tokens (all tokens when pretraining, assistant turns in SFT)."""
    logits = model(**model_inputs(batch)).logits[:, :-1]
    labels = batch["labels"]
    mask = labels != IGNORE
    logp, _ = selected_logprobs(logits, labels.clamp(min=0), mask)
    weights = batch.get("loss_weight")
    loss = -(aggregate_loss(logp, mask, "token_mean", weights=weights))
    return loss, {"loss": loss.item(), "tokens": float(mask.sum())}


def response_logprobs(model, batch: dict, temperature: float = 1.0, entropy: str = "none"):
    logits = model(**model_inputs(batch)).logits[:, :-1]
    mask = batch["response_mask"] > 0
    return selected_logprobs(logits, batch["input_ids"][:, 1:], mask, temperature, entropy)


def policy_objective(model, batch: dict, settings: PolicyLoss):
    """Clipped surrogate on response tokens, plus KL to the reference as a loss (GRPO) and an entropy bonus.

    Metrics are means over the samples run (`metric_weight`: samples without a learning signal may be left out).
    """
    mask, weights = batch["response_mask"], batch.get("loss_weight")
    metric_weights = batch.get("metric_weight", weights)
    entropy_coef = settings.entropy_coef
    logp, entropy = response_logprobs(model, batch, settings.temperature,
                                      entropy="loss" if entropy_coef > 0 else "metric")
    # On-policy (one update per batch) the sampling policy is this one: no separate forward pass needed.
    old_logp = batch["old_logp"] if "old_logp" in batch else logp.detach()
    aggregation = {"aggregation": settings.loss_aggregation, "max_len": settings.max_new_tokens, "weights": weights}
    is_weights, is_metrics = off_policy_weights(old_logp, batch, settings, metric_weights)
    loss, metrics = policy_loss(logp, old_logp, batch["advantages"], mask, clip_low=settings.clip_low,
                                clip_high=settings.clip_high, dual_clip=settings.dual_clip,
                                metric_weights=metric_weights, is_weights=is_weights, **aggregation)
    metrics = {"policy_loss": loss.item(), **metrics, **is_metrics}
    if "ref_logp" in batch:  # k3: unbiased and never negative
        metrics["kl"] = weighted_mean(kl_penalty(old_logp, batch["ref_logp"], "k3"), mask, metric_weights).item()
    if settings.kl_coef > 0 and "ref_logp" in batch:
        kl = kl_loss(logp, batch["ref_logp"], mask, estimator=settings.kl_estimator, **aggregation)
        loss = loss + settings.kl_coef * kl
        metrics["kl_loss"] = kl.item()
    if entropy_coef > 0:
        loss = loss - entropy_coef * aggregate_loss(entropy, mask, settings.loss_aggregation,
                                                    settings.max_new_tokens, weights)
    metrics["entropy"] = weighted_mean(entropy.detach(), mask, metric_weights).item()
    return loss, metrics


def off_policy_weights(old_logp, batch: dict, settings: PolicyLoss, metric_weights):
    """Importance weights of the sampler's tokens against the policy before this update, and their metrics
    (`is/...`); (None, {}) without the sampler's logprobs."""
    if "behaviour_logp" not in batch:
        return None, {}
    mode = settings.is_correction
    is_weights, stats = importance_weights(old_logp, batch["behaviour_logp"], batch["response_mask"], mode=mode,
                                           level=settings.is_level, cap=settings.is_cap, low=settings.is_low,
                                           high=settings.is_high)
    metrics = {f"is/{k}": weighted_mean(v, batch["response_mask"], metric_weights).item() for k, v in stats.items()}
    return (is_weights if mode != "none" else None), metrics


def value_objective(model, batch: dict, settings: ValueLoss):
    """Clipped value regression on response positions (the state before each response token)."""
    values = model(**model_inputs(batch)).logits[:, :-1, 0].float()
    mask, weights = batch["response_mask"], batch.get("loss_weight")
    loss, metrics = value_loss(values, batch["old_values"], batch["returns"], mask, clip_range=settings.value_clip,
                               aggregation=settings.loss_aggregation, max_len=settings.max_new_tokens, weights=weights)
    metrics = {"value_loss": loss.item(), **metrics,
               "value_error": weighted_mean((values - batch["returns"]).abs(), mask, weights).item()}
    return loss, metrics


def sequence_scores(model, batch: dict):
    """A reward model's scores of each whole sequence, [rows, heads] (its heads on the last non-padding token)."""
    return model(**model_inputs(batch)).logits.float()


def response_logprob_totals(logp, mask, average: bool = False):
    """Log-probability of each whole response: the sum over its tokens (DPO), or the mean (IPO)."""
    totals = masked_sum(logp, mask, dim=-1)
    return totals / mask.sum(-1).clamp(min=1) if average else totals


def pairwise_objective(model, batch: dict, settings: PairwiseLoss):
    """Bradley-Terry: the reward model should score the chosen response above the rejected one."""
    chosen, rejected = sequence_scores(model, batch).chunk(2)
    weights = None
    if chosen.shape[1] > 1:  # an ensemble: each head learns from its own bootstrap of the pairs
        ids = batch["pair_id"].long().tolist()
        weights = torch.as_tensor(bootstrap_weights(ids, chosen.shape[1], settings.seed),
                                  dtype=chosen.dtype, device=chosen.device)
    loss, metrics = bradley_terry_loss(chosen, rejected, settings.reward_margin, weights)
    return pair_share(loss, {"loss": loss.item(), **metrics}, batch)


def pair_share(loss, metrics: dict[str, float], batch: dict):
    """A micro-batch's pair-mean loss and metrics scaled to its share of the mini-batch's pairs."""
    if "loss_weight" not in batch:
        return loss, metrics
    share = batch["loss_weight"].sum()
    return loss * share, {k: v * share.item() for k, v in metrics.items()}


def dpo_objective(model, batch: dict, settings: PreferenceLoss):
    """DPO / IPO on log-ratios against the reference's response log-probabilities (computed by its actors)."""
    logp, _ = response_logprobs(model, batch)
    mask = batch["response_mask"]
    totals = response_logprob_totals(logp, mask, average=settings.averages_logprobs)
    chosen, rejected = totals.chunk(2)
    loss, metrics = dpo_loss(chosen - batch["ref_chosen"], rejected - batch["ref_rejected"], beta=settings.beta,
                             loss_type=settings.preference_loss, label_smoothing=settings.label_smoothing)
    metrics["preference_loss"] = loss.item()
    chosen_nll = -response_logprob_totals(logp, mask, average=True).chunk(2)[0].mean()
    metrics["chosen_nll"] = chosen_nll.item()
    if settings.nll_coef > 0:
        loss = loss + settings.nll_coef * chosen_nll
    return pair_share(loss, {"loss": loss.item(), **metrics}, batch)


def orpo_objective(model, batch: dict, settings: PreferenceLoss):
    """ORPO: the chosen response's NLL plus the odds-ratio penalty, on the policy alone (no reference)."""
    logp, _ = response_logprobs(model, batch)
    chosen, rejected = response_logprob_totals(logp, batch["response_mask"], average=True).chunk(2)
    preference, metrics = orpo_loss(chosen, rejected, beta=settings.beta)
    chosen_nll = -chosen.mean()
    loss = chosen_nll + preference
    metrics = {"loss": loss.item(), "preference_loss": preference.item(), "chosen_nll": chosen_nll.item(), **metrics}
    return pair_share(loss, metrics, batch)


def kto_objective(model, batch: dict, settings: PreferenceLoss):
    """KTO on unpaired responses labelled `desirable` (1) or not (0), against the reference's summed
    log-probability of each (`ref_total`); with nll_coef > 0 also the desirable responses' NLL (the mean of
    their per-token means). Loss and metrics are the micro-batch's share of the mini-batch's rows."""
    logp, _ = response_logprobs(model, batch)
    mask, desirable = batch["response_mask"], batch["desirable"] > 0.5
    logratios = response_logprob_totals(logp, mask) - batch["ref_total"]
    # z0, the reference point: the micro-batch's mean log-ratio estimates KL(policy || reference); a KL is never
    # negative, and responses are measured against it without moving it (no gradient)
    kl = logratios.detach().mean().clamp(min=0)
    loss, metrics = kto_loss(logratios, desirable, settings.beta, kl, settings.desirable_weight,
                             settings.undesirable_weight)
    # counts would not add up over micro-batches; shares of the rows do
    good, bad = metrics.pop("desirable"), metrics.pop("undesirable")
    metrics = {"preference_loss": loss.item(), **metrics, "desirable_frac": good / (good + bad)}
    averages = response_logprob_totals(logp, mask, average=True)
    nll = -averages[desirable].mean() if desirable.any() else averages.new_zeros(())  # every rank reports it
    metrics["desirable_nll"] = nll.item()
    if settings.nll_coef > 0:
        loss = loss + settings.nll_coef * nll
    return pair_share(loss, {"loss": loss.item(), **metrics}, batch)


PREFERENCE_OBJECTIVES = {"sigmoid": dpo_objective, "ipo": dpo_objective, "orpo": orpo_objective, "kto": kto_objective}


def objective_for(settings: Loss):
    """The loss function (model, batch) -> (loss, metrics) its settings describe."""
    if isinstance(settings, PreferenceLoss):
        function = PREFERENCE_OBJECTIVES[settings.preference_loss]
    else:
        function = {LanguageModelLoss: lm_objective, PolicyLoss: policy_objective, ValueLoss: value_objective,
                    PairwiseLoss: pairwise_objective}[type(settings)]
    return lambda model, batch: function(model, batch, settings)
