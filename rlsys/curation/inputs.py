"""What `rlsys curate` reads and writes, as Ray Data datasets.

Input: the user's shards (`data.train`: jsonl / json / parquet files or a folder of them, or `hf:NAME`), one
read task per shard with `data.columns` and `data.on_error` applied as in every job, or the embedded labelled
corpus. Each row gets an `_id` in input order (shard index in the high 32 bits, row in the low), the text it
is judged on (`_text`), for chat rows the prompt it is deduplicated on (`_key`), and its token count.
Output: the kept rows with the input's columns, as shards in `output_dir/data` that `data.train` reads.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from rlsys.config.choices import DATA_SUFFIXES
from rlsys.curation import corpus
from rlsys.curation.sft_select import prompt_and_reply
from rlsys.data.sources import LoadedRows, map_columns, read_rows
from rlsys.errors import DataError

WORD = re.compile(r"\S+")


def with_columns(table: pa.Table, **columns) -> pa.Table:
    for name, values in columns.items():
        array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, array) if index >= 0 else table.append_column(name, array)
    return table


def alive(table: pa.Table) -> np.ndarray:
    """Rows no stage has dropped yet."""
    return table.column("_stage").to_numpy(zero_copy_only=False) == ""


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def count_tokens(texts: list[str], tokenizer_path: str | None) -> np.ndarray:
    """Tokens of `model.path`'s tokenizer when one is given, else whitespace-separated words."""
    if tokenizer_path:
        return np.array([len(ids) for ids in _tokenizer(tokenizer_path)(texts, add_special_tokens=False)["input_ids"]],
                        dtype=np.int64)
    return np.array([len(WORD.findall(t)) for t in texts], dtype=np.int64)


def shard_files(spec: str) -> list[str]:
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"data file '{spec}' does not exist (looked in {Path.cwd()}). Give a jsonl, json or "
                        "parquet file or folder, or hf:NAME for a datasets source.")
    files = sorted(p for p in path.iterdir() if p.suffix in DATA_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise DataError(f"folder '{spec}' holds no .jsonl, .json or .parquet files.")
    return [str(p.resolve()) for p in files]


def _read_shard(item: dict, *, split: str, on_error: str, columns: dict, required: list[str]) -> list[dict]:
    if item["path"].endswith(".parquet"):  # pyarrow directly: the datasets builder would cache every shard
        loaded = LoadedRows(pq.read_table(item["path"]).to_pylist(), 0, item["path"])
    else:
        loaded = read_rows(item["path"], split, on_error)
    if loaded.skipped:
        print(f"data: skipped {loaded.skipped} malformed rows of {item['path']} (data.on_error=skip)")
    rows = map_columns(loaded, columns, required).rows if loaded.rows else []
    return [{**row, "_id": (item["shard"] << 32) | index} for index, row in enumerate(rows)]


def _prepare(table: pa.Table, *, mode: str, tokenizer_path: str | None) -> pa.Table:
    rows = table.drop_columns(["_id"]).to_pylist()
    if mode == "sft":
        pairs = [prompt_and_reply(row) for row in rows]
        prompts, texts = [p for p, _ in pairs], [r for _, r in pairs]
        tokens = count_tokens([p + "\n\n" + r for p, r in pairs], tokenizer_path)
        table = with_columns(table, _key=pa.array(prompts, pa.large_string()))
    else:
        texts = ["" if row.get("text") is None else str(row["text"]) for row in rows]
        tokens = count_tokens(texts, tokenizer_path)
    n = len(rows)
    return with_columns(table, _text=pa.array(texts, pa.large_string()), _tokens=tokens,
                        _input_tokens=tokens, _stage=pa.array([""] * n, pa.string()),
                        _reason=pa.array([""] * n, pa.string()), _dup_of=np.full(n, -1, dtype=np.int64),
                        _score=np.full(n, np.nan))


def describe_input(cfg) -> str:
    if cfg.data.train:
        return cfg.data.train
    c, kind = cfg.curate.corpus, "chat" if cfg.curate.mode == "sft" else "text"
    return f"embedded labelled {kind} corpus (seed {c.seed}, {c.num_docs} rows)"


def read_input(cfg, num_blocks: int) -> ray.data.Dataset:
    mode, spec = cfg.curate.mode, cfg.data.train
    required = ["text"] if mode == "pretrain" else []
    if spec is None:
        make = corpus.chat_corpus if mode == "sft" else corpus.pretrain_corpus
        rows = [{**row, "_id": i} for i, row in enumerate(make(cfg.curate.corpus.seed, cfg.curate.corpus.num_docs))]
        ds = ray.data.from_items(rows, override_num_blocks=num_blocks)
    elif spec.startswith("hf:"):
        loaded = map_columns(read_rows(spec, cfg.data.split, cfg.data.on_error), dict(cfg.data.columns), required)
        ds = ray.data.from_items([{**row, "_id": i} for i, row in enumerate(loaded.rows)],
                                 override_num_blocks=num_blocks)
    else:
        shards = [{"shard": i, "path": p} for i, p in enumerate(shard_files(spec))]
        ds = ray.data.from_items(shards, override_num_blocks=len(shards)).flat_map(
            _read_shard, fn_kwargs=dict(split=cfg.data.split, on_error=cfg.data.on_error,
                                        columns=dict(cfg.data.columns), required=required))
    return ds.map_batches(_prepare, batch_format="pyarrow",
                          fn_kwargs=dict(mode=mode, tokenizer_path=cfg.model.path)).materialize()


def _output_rows(table: pa.Table, *, mode: str) -> pa.Table:
    kept = table.filter(pa.array(alive(table)))
    if mode == "pretrain":  # the normalised, line-cleaned text
        kept = with_columns(kept, text=kept.column("_text"))
    return kept.drop_columns([name for name in kept.column_names if name.startswith("_")])


def write_output(ds: ray.data.Dataset, cfg) -> Path:
    folder = Path(cfg.output_dir) / "data"
    kept = ds.map_batches(_output_rows, batch_format="pyarrow", fn_kwargs=dict(mode=cfg.curate.mode))
    write = dict(filename_provider=ShardNames(cfg.curate.output_format), mode=ray.data.SaveMode.OVERWRITE)
    if cfg.curate.output_format == "parquet":
        kept.write_parquet(str(folder.resolve()), **write)
    else:
        kept.write_json(str(folder.resolve()), **write, force_ascii=False)
    return folder


class ShardNames(ray.data.datasource.FilenameProvider):
    """part-00000.jsonl, part-00001.jsonl, ... in write-task order."""

    def __init__(self, suffix: str):
        super().__init__(file_format=suffix)

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"part-{task_index:05d}.{self.file_format}"
