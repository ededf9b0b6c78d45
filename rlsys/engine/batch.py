"""From lists (what crosses Ray) to padded tensors (what the model eats), and back.

A sample is either a token sequence with labels (`input_ids`, `labels`) or a prompt and a response
(`prompt_ids`, `response_ids`) with per-response-token fields (`old_logp`, `ref_logp`, `advantages`,
`returns`, `old_values`), placed at the positions that predict each response token. A preference pair
(`prompt_ids`, `chosen_ids`, `rejected_ids`) becomes two such rows: all chosen rows first, then all rejected.
"""
from __future__ import annotations

import torch

from rlsys.data.collate import IGNORE, pad

TOKEN_FIELDS = ("old_logp", "ref_logp", "advantages", "returns", "old_values")
PAIR_FIELDS = ("ref_chosen", "ref_rejected")


def to_tensors(batch: dict[str, list], pad_id: int) -> dict[str, torch.Tensor]:
    if "chosen_ids" in batch:
        return pair_tensors(batch, pad_id)
    if "prompt_ids" in batch:
        sequences = [p + r for p, r in zip(batch["prompt_ids"], batch["response_ids"])]
    else:
        sequences = batch["input_ids"]
    out = {"input_ids": pad(sequences, pad_id),
           "attention_mask": pad([[1] * len(s) for s in sequences], 0)}
    if "labels" in batch:
        out["labels"] = pad(batch["labels"], IGNORE)
    if "prompt_ids" in batch:
        width = out["input_ids"].shape[1] - 1
        starts = [len(p) - 1 for p in batch["prompt_ids"]]
        lengths = [len(r) for r in batch["response_ids"]]
        out["response_mask"] = _place([[1.0] * n for n in lengths], starts, width)
        for field in TOKEN_FIELDS:
            if field in batch:
                out[field] = _place(batch[field], starts, width)
    return out


def pair_tensors(batch: dict[str, list], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen and rejected sequences in one batch (one forward pass); per-pair reference log-ratios as is."""
    out = to_tensors({"prompt_ids": batch["prompt_ids"] * 2,
                      "response_ids": batch["chosen_ids"] + batch["rejected_ids"]}, pad_id)
    for field in PAIR_FIELDS:
        if field in batch:
            out[field] = torch.tensor(batch[field], dtype=torch.float32)
    return out


def _place(rows: list[list[float]], starts: list[int], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width, dtype=torch.float32)
    for i, (row, start) in enumerate(zip(rows, starts)):
        out[i, start:start + len(row)] = torch.tensor(row, dtype=torch.float32)
    return out


def response_values(tensor: torch.Tensor, batch: dict[str, list]) -> list[list[float]]:
    """The per-response-token entries of a [B, L-1] tensor, as ragged lists."""
    rows = tensor.float().cpu()
    return [rows[i, len(p) - 1:len(p) - 1 + len(r)].tolist()
            for i, (p, r) in enumerate(zip(batch["prompt_ids"], batch["response_ids"]))]


def micro_batches(batch: dict[str, list], size: int) -> list[dict[str, list]]:
    total = len(next(iter(batch.values())))
    return [{k: v[i:i + size] for k, v in batch.items()} for i in range(0, total, size)]
