"""The driver's part of streaming: which sources, their pieces and weights, checked before any actor starts.
The ranks read the data themselves (rlsys/data/stream.py); the driver sees file names and byte ranges only.
"""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from rlsys.data.pieces import first_row, plan_pieces
from rlsys.data.stream import SourcePlan, StreamPlan
from rlsys.errors import DataError


def stream_plan(cfg, tokenizer_path: str, tools: list[dict] | None = None) -> StreamPlan:
    """The job's sources (data.mixture, else data.train) cut into pieces for cluster.policy.num_ranks ranks."""
    d = cfg.data
    if not d.mixture and not d.train:
        raise DataError("data.streaming=true reads files: set data.train (a file, a folder of shards or hf:NAME) or "
                        "data.mixture.")
    ranks = cfg.cluster.policy.num_ranks
    if cfg.trainer.batch_size % ranks:
        raise DataError(f"streamed data: each rank reads trainer.batch_size / cluster.policy.num_ranks sequences, so "
                        f"trainer.batch_size ({cfg.trainer.batch_size}) must be a multiple of num_ranks ({ranks}).")
    entries = OmegaConf.to_object(d.mixture) if d.mixture else [{"path": d.train, "weight": 1.0}]
    entries = [e if isinstance(e, dict) else vars(e) for e in entries]
    mode = "text" if cfg.job == "pretrain" else "chat"
    piece_bytes = max(1, int(d.stream.piece_mb * 2**20))
    sources = []
    for number, entry in enumerate(entries):
        name = entry.get("name") or _default_name(entry["path"])
        where = f"data.mixture[{number}] ({name})" if d.mixture else "data.train"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise DataError(f"{where}: the name {name!r} goes into metric names; use letters, digits, '_', '-', '.'.")
        if any(s.name == name for s in sources):
            raise DataError(f"{where}: two sources are named {name!r}; give each its own data.mixture[].name.")
        columns = {**dict(d.columns), **dict(entry.get("columns") or {})}
        pieces = plan_pieces(entry["path"], piece_bytes, d.split, ranks)
        _check_columns(first_row(pieces, columns), mode, where, entry["path"])
        sources.append(SourcePlan(name, float(entry.get("weight", 1.0)), pieces, columns, entry.get("epochs")))
    total = sum(s.weight for s in sources)
    for source in sources:
        source.weight /= total
    s = d.stream
    trace_dir = None
    if s.trace:
        trace_dir = str((Path(cfg.output_dir) / "data_trace").resolve())
        Path(trace_dir).mkdir(parents=True, exist_ok=True)
    return StreamPlan(mode, sources, tokenizer_path, d.max_length, cfg.seed, d.on_error, tools, s.num_workers,
                      s.cpus_per_worker, s.prefetch_pieces, piece_bytes, trace_dir)


def _default_name(spec: str) -> str:
    stem = Path(spec.removeprefix("hf:").rstrip("/")).name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", Path(stem).stem if "." in stem else stem) or "data"


def _check_columns(row: dict, mode: str, where: str, spec: str) -> None:
    columns = ", ".join(sorted(row)) or "none"
    if mode == "text" and not isinstance(row.get("text"), str):
        raise DataError(f"{where}: the rows of '{spec}' have no 'text' column (columns: {columns}). Map yours with "
                        "data.columns.text=YOUR_COLUMN, or the source's own columns: {text: YOUR_COLUMN}.")
    if mode == "chat" and row.get("messages") is None and row.get("prompt") is None:
        raise DataError(f"{where}: the rows of '{spec}' have neither 'messages' nor 'prompt' (columns: {columns}). "
                        "Map yours with data.columns.messages=YOUR_COLUMN or data.columns.prompt=YOUR_COLUMN.")
