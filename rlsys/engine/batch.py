"""From lists (what crosses Ray) to padding-free tensors (what the model eats), and back.

A sample is either a token sequence with labels (`input_ids`, `labels`, optional `position_ids` when it holds
several packed examples) or a prompt and a response (`prompt_ids`, `response_ids`) with per-response-token
fields (`old_logp`, `ref_logp`, `behaviour_logp` from the sampler, `advantages`, `returns`, `old_values`) and,
for multi-turn episodes, a `loss_mask` that is 1 on the model's own tokens and 0 on the environment's.
A preference pair (`prompt_ids`, `chosen_ids`, `rejected_ids`) becomes two padded rows: all chosen rows
first, then all rejected. An unpaired response with per-sample fields (`ref_total`, `desirable`: KTO) becomes
one padded row, so a loss over whole responses can take each response's total.

Sequences are packed end to end into rows with position ids that restart at every sequence, so attention
stays inside each sequence (transformers builds the block-diagonal mask from the position ids) and no
compute goes to padding. Position t of a row predicts token t + 1; the first token of every sequence is
never a target.

The driver plans the micro-batches of a whole mini-batch (`plan_micro_batches`): every rank gets the same
number (ZeRO-3 forward passes and gradient reduction are collectives), each within a token budget. Each
sample carries a `loss_weight` (`with_loss_weights`) so that summing the weighted per-token losses over all
micro-batches and ranks gives exactly the mini-batch's mean, whatever the split. Samples that cannot move the
policy (all advantages zero, no KL or entropy term) keep their share of that mean but are not run.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import torch

from rlsys.config.choices import LOSS_AGGREGATIONS
from rlsys.config.losses import Loss, PolicyLoss
from rlsys.data.collate import IGNORE, pad

TOKEN_FIELDS = ("old_logp", "ref_logp", "behaviour_logp", "advantages", "returns", "old_values")
PAIR_FIELDS = ("ref_chosen", "ref_rejected", "pair_id")  # pair_id: which bootstrap draws an ensemble head takes
ROW_FIELDS = ("ref_total", "desirable")  # one value per unpaired response


def per_sample_loss(batch: dict) -> bool:
    """Pairs and unpaired rows with per-sample fields: a loss (and loss weight) per sample, not per token."""
    return "chosen_ids" in batch or any(field in batch for field in ROW_FIELDS)


def batch_size(batch: dict[str, list]) -> int:
    return len(next(iter(batch.values())))


def sample_lengths(batch: dict[str, list]) -> list[int]:
    """Tokens each sample puts through the model (both sides of a preference pair)."""
    if "chosen_ids" in batch:
        return [2 * len(p) + len(c) + len(r)
                for p, c, r in zip(batch["prompt_ids"], batch["chosen_ids"], batch["rejected_ids"])]
    if "response_ids" in batch:
        return [len(p) + len(r) for p, r in zip(batch["prompt_ids"], batch["response_ids"])]
    if "input_ids" in batch:
        return [len(ids) for ids in batch["input_ids"]]
    return [len(p) for p in batch["prompt_ids"]]


def plan_micro_batches(lengths: list[int], ranks: int, max_tokens: int) -> list[list[list[int]]]:
    """Sample indices for each rank's micro-batches: the same count on every rank, tokens balanced over all
    of them (longest first into the lightest), each within `max_tokens` unless one sample alone exceeds it.
    Indices stay in batch order inside a micro-batch. A rank may get empty micro-batches (fewer samples
    than ranks); it still joins the collectives with a dummy one."""
    per_rank = max(1, min(math.ceil(sum(lengths) / (ranks * max_tokens)), math.ceil(len(lengths) / ranks)))
    while True:
        bins: list[list[int]] = [[] for _ in range(ranks * per_rank)]
        heap = [(0, b) for b in range(len(bins))]
        for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
            load, b = heapq.heappop(heap)
            bins[b].append(index)
            heapq.heappush(heap, (load + lengths[index], b))
        fits = all(load <= max_tokens or len(bins[b]) == 1 for load, b in heap)
        if fits or len(bins) >= len(lengths):
            break
        per_rank += 1
    bins = [sorted(b) for b in bins]
    return [bins[r * per_rank:(r + 1) * per_rank] for r in range(ranks)]


def select(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
    return {k: [v[i] for i in indices] for k, v in batch.items()}


# ---- loss weights ---------------------------------------------------------------------------------------
def loss_tokens(batch: dict[str, list]) -> list[int]:
    """Tokens of each sample a token-level loss covers: its response (the model's turns of an episode), or its
    labelled tokens after the first."""
    if "loss_mask" in batch:
        return [int(sum(mask)) for mask in batch["loss_mask"]]
    if "response_ids" in batch:
        return [len(r) for r in batch["response_ids"]]
    return [sum(label != IGNORE for label in labels[1:]) for labels in batch["labels"]]


def with_loss_weights(batch: dict[str, list], settings: Loss) -> dict[str, list]:
    """The batch plus `loss_weight`: the weight of each of a sample's loss tokens (of the sample itself for
    preference pairs and KTO rows) such that the weights of the whole mini-batch sum to one, as the loss's
    `loss_aggregation` says (token_mean for the others): token_mean weighs every token alike, seq_mean_token_mean
    every sequence, seq_mean_token_sum_norm divides token sums by a constant, rollout.max_new_tokens."""
    if per_sample_loss(batch):
        weights = [1.0 / batch_size(batch)] * batch_size(batch)
        return {**batch, "loss_weight": weights}
    tokens = loss_tokens(batch)
    mode = getattr(settings, "loss_aggregation", "token_mean")  # only the policy's and critic's losses choose
    if mode == "token_mean":
        weights = [1.0 / max(1, sum(tokens))] * len(tokens)
    elif mode == "seq_mean_token_mean":
        weights = [1.0 / (max(1, n) * len(tokens)) for n in tokens]
    elif mode == "seq_mean_token_sum_norm":
        weights = [1.0 / (settings.max_new_tokens * len(tokens))] * len(tokens)
    else:
        raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {', '.join(LOSS_AGGREGATIONS)}")
    weighted = {**batch, "loss_weight": weights}
    return without_silent_samples(weighted) if only_advantages_move(settings, batch) else weighted


def only_advantages_move(settings: Loss, batch: dict[str, list]) -> bool:
    """Every term of the policy loss is a sample's advantage times something: no KL or entropy term."""
    if not isinstance(settings, PolicyLoss):
        return False
    kl_term = settings.kl_coef > 0 and "ref_logp" in batch
    return not kl_term and settings.entropy_coef == 0


def without_silent_samples(batch: dict[str, list]) -> dict[str, list]:
    """Samples whose advantages are all zero (a group that scored alike) add exactly nothing to the gradient,
    so they are not run; they keep their share of the loss normalisation, so the update is unchanged.
    `metric_weight` makes metrics means over the samples that run."""
    keep = [i for i, advantages in enumerate(batch["advantages"]) if any(a != 0.0 for a in advantages)]
    if len(keep) == batch_size(batch):
        return batch
    kept = select(batch, keep)
    share = sum(w * n for w, n in zip(kept["loss_weight"], loss_tokens(kept)))
    kept["metric_weight"] = [w / share for w in kept["loss_weight"]] if share else kept["loss_weight"]
    return kept


# ---- tensors --------------------------------------------------------------------------------------------
@dataclass
class Layout:
    """Where each sample sits in the packed rows: row, first position, and its prompt length."""
    rows: list[int]
    starts: list[int]
    prompt_lengths: list[int]
    lengths: list[int]


def pack_rows(lengths: list[int], row_tokens: int) -> tuple[list[int], list[int], list[int]]:
    """First-fit, in order, of sequences into rows of at most row_tokens (0: one row): each sequence's row and
    start, and each row's fill."""
    rows, starts, fill = [], [], [0]
    for n in lengths:
        if row_tokens and fill[-1] and fill[-1] + n > row_tokens:
            fill.append(0)
        rows.append(len(fill) - 1)
        starts.append(fill[-1])
        fill[-1] += n
    return rows, starts, fill


def to_tensors(batch: dict[str, list], pad_id: int, row_tokens: int = 0) -> tuple[dict[str, torch.Tensor], Layout]:
    """Packed rows of `input_ids` and `position_ids`; `labels` and per-token fields aligned with the targets
    (width W - 1); `loss_weight` spread over each sample's loss tokens. An empty micro-batch becomes one
    padding token with zero weight, so a rank without samples still runs the forward and backward."""
    if not batch_size(batch):
        return to_tensors(dummy_sample(batch, pad_id), pad_id)[0], Layout([], [], [], [])
    if "chosen_ids" in batch:
        return pair_tensors(batch, pad_id), Layout([], [], [], [])
    if per_sample_loss(batch):
        return row_tensors(batch, pad_id)
    prompted = "response_ids" in batch
    sequences = ([p + r for p, r in zip(batch["prompt_ids"], batch["response_ids"])] if prompted
                 else batch["input_ids"])
    lengths = [len(s) for s in sequences]
    rows, starts, fill = pack_rows(lengths, row_tokens)
    width = max(fill)
    input_ids = torch.full((len(fill), width), pad_id, dtype=torch.long)
    # the padding after a row's last sequence counts as a sequence of its own
    position_ids = torch.zeros_like(input_ids)
    for r, used in enumerate(fill):
        position_ids[r, used:] = torch.arange(width - used)
    given = batch.get("position_ids")
    for i, seq in enumerate(sequences):
        span = slice(starts[i], starts[i] + lengths[i])
        input_ids[rows[i], span] = torch.tensor(seq, dtype=torch.long)
        position_ids[rows[i], span] = torch.tensor(given[i]) if given else torch.arange(lengths[i])
    prompt_lengths = [len(p) for p in batch["prompt_ids"]] if prompted else [0] * len(rows)
    layout = Layout(rows, starts, prompt_lengths, lengths)
    targets = (len(fill), max(width - 1, 1))
    out = {"input_ids": input_ids, "position_ids": position_ids,
           **(_response_fields(batch, layout, targets) if prompted else _lm_fields(batch, sequences, layout, targets))}
    return out, layout


def _response_fields(batch: dict[str, list], layout: Layout, shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Response mask, per-token fields and loss weights at the positions that predict the response tokens."""
    spans = [(row, start + prompt - 1, len(response)) for row, start, prompt, response
             in zip(layout.rows, layout.starts, layout.prompt_lengths, batch["response_ids"])]
    masks = batch["loss_mask"] if "loss_mask" in batch else [[1.0] * n for *_, n in spans]
    out = {"response_mask": _place(masks, spans, shape)}
    for field in TOKEN_FIELDS:
        if field in batch:
            out[field] = _place(batch[field], spans, shape)
    for field in ("loss_weight", "metric_weight"):
        if field in batch:
            out[field] = _place([[w] * n for w, (*_, n) in zip(batch[field], spans)], spans, shape) * out["response_mask"]
    return out


def _lm_fields(batch: dict[str, list], sequences: list[list[int]], layout: Layout,
               shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Labels (position start + t predicts label t + 1; a sequence's first token is never a target) and loss
    weights on the labelled tokens."""
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    for row, start, n, row_labels in zip(layout.rows, layout.starts, layout.lengths, batch.get("labels", sequences)):
        labels[row, start:start + n - 1] = torch.tensor(row_labels[1:], dtype=torch.long)
    out = {"labels": labels}
    if "loss_weight" in batch:
        spans = [(row, start, n - 1) for row, start, n in zip(layout.rows, layout.starts, layout.lengths)]
        weights = _place([[w] * n for w, (*_, n) in zip(batch["loss_weight"], spans)], spans, shape)
        out["loss_weight"] = weights * (labels != IGNORE)
    return out


def to_padded(batch: dict[str, list], pad_id: int) -> dict[str, torch.Tensor]:
    """Prompt + response sequences as right-padded rows (a reward model pools each row's last token)."""
    sequences = [p + r for p, r in zip(batch["prompt_ids"], batch["response_ids"])]
    return {"input_ids": pad(sequences, pad_id), "attention_mask": pad([[1] * len(s) for s in sequences], 0)}


def dummy_sample(batch: dict[str, list], pad_id: int) -> dict[str, list]:
    """One sample of padding with zero loss weight, shaped like the batch's samples."""
    fill = {"prompt_ids": [pad_id], "response_ids": [pad_id], "chosen_ids": [pad_id], "rejected_ids": [pad_id],
            "input_ids": [pad_id, pad_id], "labels": [IGNORE, IGNORE], "position_ids": [0, 1]}
    return {k: [fill.get(k, [0.0] if k in TOKEN_FIELDS or k == "loss_mask" else 0.0)] for k in batch}


def pair_tensors(batch: dict[str, list], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen and rejected sequences in one padded batch (a reward model pools each row's last token)."""
    prompts = batch["prompt_ids"] * 2
    out = _padded_responses(prompts, batch["chosen_ids"] + batch["rejected_ids"], pad_id)
    return {**out, **_sample_fields(batch, PAIR_FIELDS)}


def row_tensors(batch: dict[str, list], pad_id: int) -> tuple[dict[str, torch.Tensor], Layout]:
    """One padded row per response (packed rows would mix responses' totals) with its per-sample fields."""
    out = _padded_responses(batch["prompt_ids"], batch["response_ids"], pad_id)
    prompt_lengths = [len(p) for p in batch["prompt_ids"]]
    lengths = [n + len(r) for n, r in zip(prompt_lengths, batch["response_ids"])]
    layout = Layout(list(range(len(lengths))), [0] * len(lengths), prompt_lengths, lengths)
    return {**out, **_sample_fields(batch, ROW_FIELDS)}, layout


def _padded_responses(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    out = to_padded({"prompt_ids": prompts, "response_ids": responses}, pad_id)
    width = out["input_ids"].shape[1] - 1
    spans = [(i, len(p) - 1, len(r)) for i, (p, r) in enumerate(zip(prompts, responses))]
    out["response_mask"] = _place([[1.0] * n for *_, n in spans], spans, (len(prompts), width))
    return out


def _sample_fields(batch: dict[str, list], fields: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Per-sample scalars (and the sample's loss weight) as [samples] tensors."""
    return {field: torch.tensor(batch[field], dtype=torch.float32)
            for field in fields + ("loss_weight",) if field in batch}


def _place(rows: list[list[float]], spans: list[tuple[int, int, int]], shape: tuple[int, int]) -> torch.Tensor:
    out = torch.zeros(shape, dtype=torch.float32)
    for values, (row, start, n) in zip(rows, spans):
        out[row, start:start + n] = torch.tensor(values[:n], dtype=torch.float32)
    return out


def response_values(tensor: torch.Tensor, layout: Layout) -> list[list[float]]:
    """The per-response-token entries of a [R, W - 1] tensor, as ragged lists in sample order."""
    rows = tensor.float().cpu()
    return [rows[r, s + p - 1:s + n - 1].tolist()
            for r, s, p, n in zip(layout.rows, layout.starts, layout.prompt_lengths, layout.lengths)]
