"""Loss functions the engine trains with, one per kind of training, over tensors built by `batch.py`.

Each takes (model, batch, hparams) and returns (loss, metrics). Per-token tensors are aligned with the
shifted targets: position t holds the token input_ids[:, t + 1].
"""
from __future__ import annotations

from rlsys.algorithms import (aggregate_loss, bradley_terry_loss, cross_entropy_loss, dpo_loss, entropy_from_logits,
                              kl_loss, kl_penalty, masked_mean, masked_sum, policy_loss, token_logprobs, value_loss)


def lm_objective(model, batch: dict, hparams: dict):
    """Next-token cross-entropy on the labelled tokens (all tokens when pretraining, assistant turns in SFT)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss, tokens = cross_entropy_loss(logits[:, :-1], batch["labels"][:, 1:])
    return loss, {"loss": loss.item(), "tokens": float(tokens)}


def response_logprobs(model, batch: dict, temperature: float = 1.0, with_entropy: bool = False):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature  # the sampler's distribution, so ratios compare like with like
    logp = token_logprobs(logits, batch["input_ids"][:, 1:])
    return logp, (entropy_from_logits(logits) if with_entropy else None)


def policy_objective(model, batch: dict, hparams: dict):
    """Clipped surrogate on response tokens, plus KL to the reference as a loss (GRPO) and an entropy bonus."""
    mask = batch["response_mask"]
    logp, entropy = response_logprobs(model, batch, hparams.get("temperature", 1.0), with_entropy=True)
    # On-policy (one update per batch) the sampling policy is this one: no separate forward pass needed.
    old_logp = batch["old_logp"] if "old_logp" in batch else logp.detach()
    loss, metrics = policy_loss(logp, old_logp, batch["advantages"], mask,
                                clip_low=hparams["clip_low"], clip_high=hparams["clip_high"],
                                aggregation=hparams["aggregation"], max_len=hparams.get("max_len"),
                                dual_clip=hparams.get("dual_clip"))
    metrics = {"policy_loss": loss.item(), **metrics}
    if "ref_logp" in batch:  # k3: unbiased and never negative
        metrics["kl"] = masked_mean(kl_penalty(old_logp, batch["ref_logp"], "k3"), mask).item()
    if hparams.get("kl_loss_coef", 0.0) > 0 and "ref_logp" in batch:
        kl = kl_loss(logp, batch["ref_logp"], mask, estimator=hparams["kl_estimator"],
                     aggregation=hparams["aggregation"], max_len=hparams.get("max_len"))
        loss = loss + hparams["kl_loss_coef"] * kl
        metrics["kl_loss"] = kl.item()
    entropy_mean = aggregate_loss(entropy, mask, hparams["aggregation"], hparams.get("max_len"))
    if hparams.get("entropy_coef", 0.0) > 0:
        loss = loss - hparams["entropy_coef"] * entropy_mean
    metrics["entropy"] = entropy_mean.item()
    return loss, metrics


def value_objective(model, batch: dict, hparams: dict):
    """Clipped value regression on response positions (the state before each response token)."""
    values = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1, 0].float()
    loss, metrics = value_loss(values, batch["old_values"], batch["returns"], batch["response_mask"],
                               clip_range=hparams["value_clip"], aggregation=hparams["aggregation"],
                               max_len=hparams.get("max_len"))
    metrics = {"value_loss": loss.item(), **metrics,
               "value_error": masked_mean((values - batch["returns"]).abs(), batch["response_mask"]).item()}
    return loss, metrics


def sequence_scores(model, batch: dict):
    """A reward model's score of each whole sequence (its head on the last non-padding token)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].float()


def response_logprob_totals(logp, mask, average: bool = False):
    """Log-probability of each whole response: the sum over its tokens (DPO), or the mean (IPO)."""
    totals = masked_sum(logp, mask, dim=-1)
    return totals / mask.sum(-1).clamp(min=1) if average else totals


def pairwise_objective(model, batch: dict, hparams: dict):
    """Bradley-Terry: the reward model should score the chosen response above the rejected one."""
    chosen, rejected = sequence_scores(model, batch).chunk(2)
    loss, metrics = bradley_terry_loss(chosen, rejected, hparams.get("margin", 0.0))
    return loss, {"loss": loss.item(), **metrics}


def dpo_objective(model, batch: dict, hparams: dict):
    """DPO / IPO on log-ratios against the reference's response log-probabilities (computed by its actors)."""
    logp, _ = response_logprobs(model, batch)
    mask = batch["response_mask"]
    totals = response_logprob_totals(logp, mask, average=hparams["loss_type"] == "ipo")
    chosen, rejected = totals.chunk(2)
    loss, metrics = dpo_loss(chosen - batch["ref_chosen"], rejected - batch["ref_rejected"], beta=hparams["beta"],
                             loss_type=hparams["loss_type"], label_smoothing=hparams["label_smoothing"])
    metrics["preference_loss"] = loss.item()
    chosen_nll = -response_logprob_totals(logp, mask, average=True).chunk(2)[0].mean()
    metrics["chosen_nll"] = chosen_nll.item()
    if hparams.get("nll_coef", 0.0) > 0:
        loss = loss + hparams["nll_coef"] * chosen_nll
    return loss, {"loss": loss.item(), **metrics}


OBJECTIVES = {"lm": lm_objective, "policy": policy_objective, "value": value_objective,
              "pairwise": pairwise_objective, "dpo": dpo_objective}
