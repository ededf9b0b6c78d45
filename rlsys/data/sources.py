"""Load users' rows from jsonl / json / parquet files or folders, or any `datasets` source (`hf:NAME`).

Rows come back with the user's columns under their own names, and each column that `data.columns` maps to an
rlsys name (`text`, `messages`, `prompt`, `answer`, ...) under that name too. A malformed row stops the run
(`data.on_error=fail`) or is skipped and counted.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from rlsys.errors import DataError


@dataclass
class LoadedRows:
    rows: list[dict[str, Any]]
    skipped: int = 0
    source: str = ""


def jsonl_row(raw: bytes, where: str, on_error: str) -> dict[str, Any] | None:
    """One jsonl line as a row; None for a blank line, or a malformed one with data.on_error=skip. `where` names
    the line in the error (e.g. "line 7 of data/train.jsonl")."""
    if not raw.strip():
        return None
    try:
        row = json.loads(raw.decode("utf-8"))
        if not isinstance(row, dict):
            raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    except (UnicodeDecodeError, ValueError) as err:
        if on_error == "skip":
            return None
        raise DataError(f"{where} is not a valid JSON object ({err}). Fix the line, or set data.on_error=skip to "
                        "skip malformed rows.") from None
    return row


def _read_jsonl(path: Path, on_error: str) -> LoadedRows:
    rows, skipped = [], 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            row = jsonl_row(raw, f"line {number} of {path}", on_error)
            if row is not None:
                rows.append(row)
            elif raw.strip():
                skipped += 1
    return LoadedRows(rows, skipped, str(path))


def _read_with_datasets(kind: str, files: list[str] | str, split: str) -> list[dict[str, Any]]:
    import datasets

    if kind == "hf":
        return list(datasets.load_dataset(files, split=split))
    library = logging.getLogger("datasets")  # it logs a damaged file's error itself; ours below says it once
    level = library.level
    library.setLevel(logging.CRITICAL)
    try:
        return list(datasets.load_dataset(kind, data_files=files, split="train"))
    except Exception as err:  # noqa: BLE001 - pyarrow and datasets raise many kinds for a damaged file
        cause = err.__cause__ or err
        raise DataError(f"cannot read {kind} data {', '.join(files) if isinstance(files, list) else files}: "
                        f"{type(cause).__name__}: {str(cause).splitlines()[0][:200]}. Is the file complete and "
                        f"really {kind}?") from err
    finally:
        library.setLevel(level)


def read_rows(spec: str, split: str = "train", on_error: str = "fail") -> LoadedRows:
    """Rows of a file, a folder of shards, or `hf:NAME` (a `datasets` hub or script name)."""
    if spec.startswith("hf:"):
        return LoadedRows(_read_with_datasets("hf", spec[3:], split), 0, spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"data file '{spec}' does not exist (looked in {Path.cwd()}). Give a jsonl, json or "
                        "parquet file or folder, or hf:NAME for a datasets source.")
    files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json", ".parquet")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"folder '{spec}' holds no .jsonl, .json or .parquet files.")
    suffixes = {p.suffix for p in files}
    if suffixes <= {".jsonl", ".json"}:
        loaded = [_read_jsonl(p, on_error) for p in files]
        return LoadedRows([r for part in loaded for r in part.rows], sum(p.skipped for p in loaded), spec)
    if suffixes == {".parquet"}:
        return LoadedRows(_read_with_datasets("parquet", [str(p) for p in files], split), 0, spec)
    raise DataError(f"'{spec}' mixes file types {sorted(suffixes)}; keep one format per folder.")


def with_role_names(row: dict[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    """The row with each mapped column also under its rlsys name (`columns`: rlsys name -> the user's column).
    An alias, not a rename: a `solution` column can be SFT's response and what a reward function reads."""
    aliased = dict(row)
    for name, theirs in columns.items():
        if theirs != name and theirs in row:
            aliased[name] = row[theirs]
    return aliased


def map_columns(loaded: LoadedRows, columns: Mapping[str, str], required: list[str]) -> LoadedRows:
    """The rows with rlsys names for the mapped columns; the required ones must be there."""
    renamed = [with_role_names(row, columns) for row in loaded.rows]
    if not renamed:
        raise DataError(f"'{loaded.source}' holds no rows.")
    available = sorted(renamed[0])
    for name in required:
        if name not in renamed[0]:
            raise DataError(f"'{loaded.source}' has no column '{name}' (columns: {', '.join(available)}). "
                            f"Map yours with data.columns.{name}=YOUR_COLUMN.")
    return LoadedRows(renamed, loaded.skipped, loaded.source)


def load_rows(spec: str, *, columns: Mapping[str, str], required: list[str], split: str = "train",
              on_error: str = "fail") -> LoadedRows:
    return map_columns(read_rows(spec, split, on_error), columns, required)


ROLES = ("system", "user", "assistant", "tool")


def as_messages(row: dict[str, Any], where: str = "a row") -> list[dict[str, str]]:
    """A row's conversation: a `messages` list, or a `prompt` (+ optional `response`) pair. `where` names the
    row in errors (e.g. "row 7 of data/train.jsonl")."""
    if row.get("messages") is not None:
        messages = row["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                      for m in messages):
            raise DataError(f"{where}: a 'messages' entry must be a list of {{role, content}} objects.")
    else:
        prompt = row.get("prompt")
        if isinstance(prompt, list):
            messages = list(prompt)
        elif isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:
            columns = ", ".join(sorted(k for k in row if row[k] is not None)) or "none"
            raise DataError(f"{where} has neither 'messages' (a list of {{role, content}}) nor a 'prompt' string "
                            f"(its columns: {columns}). Map yours with data.columns.messages=YOUR_COLUMN or "
                            f"data.columns.prompt=YOUR_COLUMN.")
        if row.get("response") is not None:
            messages.append({"role": "assistant", "content": str(row["response"])})
    for message in messages:
        if message.get("role") not in ROLES:
            raise DataError(f"{where}: message role {message.get('role')!r} is not one of {', '.join(ROLES)}.")
    return messages
