"""Streaming sources cut into pieces, found from file metadata alone (the driver never reads the data).

A piece is what one tokenising task reads and what a checkpoint counts in:
    jsonl    a byte range of about data.stream.piece_mb; it holds the lines that start inside the range
    parquet  a row group
    json     the whole file (a JSON array cannot be cut)
    hf:NAME  one shard of a `datasets` streaming source
A source with fewer pieces than ranks is striped: every rank reads the pieces and keeps every world-th block.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from rlsys.config.choices import DATA_SUFFIXES
from rlsys.data.sources import jsonl_row, with_role_names
from rlsys.errors import DataError


@dataclass(frozen=True)
class Piece:
    kind: str  # jsonl | json | parquet | hf
    location: str  # a file path, or the `datasets` name of an hf: source
    start: int = 0  # jsonl: first byte; parquet: row group; hf: shard index
    end: int = 0  # jsonl: byte after the range; hf: number of shards
    split: str = "train"
    stripe: int = 0  # keep blocks whose index % stripes == stripe
    stripes: int = 1

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def source_files(spec: str) -> list[Path]:
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"data source '{spec}' does not exist (looked in {Path.cwd()}). Give a jsonl, json or "
                        "parquet file, a folder of them (e.g. rlsys curate's output_dir/data), or hf:NAME.")
    files = sorted(p for p in path.rglob("*") if p.suffix in DATA_SUFFIXES and p.is_file()) if path.is_dir() else [path]
    if not files:
        raise DataError(f"folder '{spec}' holds no .jsonl, .json or .parquet files.")
    unknown = [p for p in files if p.suffix not in DATA_SUFFIXES]
    if unknown:
        raise DataError(f"'{unknown[0]}' is not a .jsonl, .json or .parquet file; streaming reads those only.")
    return files


def plan_pieces(spec: str, piece_bytes: int, split: str = "train", ranks: int = 1) -> list[Piece]:
    """The source's pieces in a fixed order (striped when there are fewer than `ranks`)."""
    if spec.startswith("hf:"):
        import datasets

        shards = datasets.load_dataset(spec[3:], split=split, streaming=True).num_shards
        pieces = [Piece("hf", spec[3:], index, shards, split) for index in range(shards)]
    else:
        pieces = [piece for path in source_files(spec) for piece in _file_pieces(path, piece_bytes)]
    if not pieces:
        raise DataError(f"data source '{spec}' is empty.")
    if len(pieces) >= ranks:
        return pieces
    stripes = math.ceil(ranks / len(pieces))
    return [Piece(p.kind, p.location, p.start, p.end, p.split, s, stripes) for p in pieces for s in range(stripes)]


def _file_pieces(path: Path, piece_bytes: int) -> list[Piece]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            groups = pq.ParquetFile(path).metadata.num_row_groups
        except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds for a damaged file
            raise DataError(f"cannot read parquet file {path} ({type(err).__name__}: {str(err)[:160]}). Is it "
                            "complete?") from None
        return [Piece("parquet", str(path), group) for group in range(groups)]
    if path.suffix == ".json":
        return [Piece("json", str(path))]
    size = path.stat().st_size
    count = max(1, math.ceil(size / piece_bytes))
    bounds = [size * i // count for i in range(count + 1)]
    return [Piece("jsonl", str(path), a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def read_piece(piece: Piece, columns: Mapping[str, str], on_error: str = "fail") -> Iterator[dict[str, Any]]:
    """The piece's rows, with rlsys names for the mapped columns (`columns`: rlsys name -> the source's column)."""
    for row in _raw_rows(piece, on_error):
        yield with_role_names(row, columns)


def _raw_rows(piece: Piece, on_error: str) -> Iterator[dict[str, Any]]:
    if piece.kind == "jsonl":
        yield from _jsonl_rows(piece, on_error)
    elif piece.kind == "json":
        rows = json.loads(Path(piece.location).read_text())
        yield from (rows if isinstance(rows, list) else [rows])
    elif piece.kind == "parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(piece.location).read_row_group(piece.start).to_pylist()
    else:
        import datasets

        source = datasets.load_dataset(piece.location, split=piece.split, streaming=True)
        yield from source.shard(num_shards=piece.end, index=piece.start)


def _jsonl_rows(piece: Piece, on_error: str) -> Iterator[dict[str, Any]]:
    with open(piece.location, "rb") as handle:
        if piece.start:
            handle.seek(piece.start - 1)
            handle.readline()  # the rest of a line that began in the previous piece
        while handle.tell() < piece.end:
            offset = handle.tell()
            raw = handle.readline()
            if not raw:
                break
            row = jsonl_row(raw, f"the line at byte {offset} of {piece.location}", on_error)
            if row is not None:
                yield row


def first_row(pieces: list[Piece], columns: Mapping[str, str]) -> dict[str, Any]:
    """A source's first row, from its first piece (checked before actors start: its columns, its format)."""
    for row in read_piece(pieces[0], columns, on_error="fail"):
        return row
    raise DataError(f"the first piece of data source '{pieces[0].location}' holds no rows.")
