"""The curation stages on a Ray Data dataset whose rows carry `_stage` (empty while kept) and `_reason`.

Stages mark rows instead of removing them, so the report can count and show what each stage dropped. Each
returns (dataset, rows it dropped, facts for the report).
Per-document work runs in Ray Data tasks; global decisions (duplicate groups, score cut-offs, top-k) run on
the driver over compact columns: ids, 64-bit hashes, LSH band keys and scores, plus the MinHash signatures of
LSH candidates only.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray
from omegaconf import OmegaConf

from rlsys.curation.dedup import MinHasher, cluster_duplicates, exact_key, first_of_groups
from rlsys.curation.heuristics import HeuristicFilter
from rlsys.curation.inputs import alive, count_tokens, with_columns
from rlsys.curation.quality import QualityModel, cutoff
from rlsys.curation.sft_select import top_k

BATCH = 256


def gather(ds: ray.data.Dataset, fn, **kwargs) -> dict[str, np.ndarray]:
    """Columns that `fn(table, **kwargs)` picks from every batch, concatenated on the driver."""
    refs = ds.map_batches(fn, batch_format="pyarrow", fn_kwargs=kwargs).to_arrow_refs()
    tables = [table for table in ray.get(refs) if table.num_rows]
    if not tables:
        return {}
    table = pa.concat_tables(tables)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _alive_columns(table: pa.Table, *, columns: list[str], ids: np.ndarray | None = None) -> pa.Table:
    mask = alive(table)
    if ids is not None:
        mask &= np.isin(table.column("_id").to_numpy(), ids)
    return table.select(columns).filter(pa.array(mask))


def _mark(table: pa.Table, *, stage: str, ids: np.ndarray, reason: str, dup_of: np.ndarray | None,
          drop: list[str]) -> pa.Table:
    row_ids = table.column("_id").to_numpy()
    hit = np.isin(row_ids, ids) & alive(table)
    stages = table.column("_stage").to_numpy(zero_copy_only=False).copy()
    reasons = table.column("_reason").to_numpy(zero_copy_only=False).copy()
    stages[hit], reasons[hit] = stage, reason
    columns = dict(_stage=pa.array(stages, pa.string()), _reason=pa.array(reasons, pa.string()))
    if dup_of is not None:
        order = np.argsort(ids)
        found = np.searchsorted(ids[order], row_ids[hit])
        duplicates = table.column("_dup_of").to_numpy().copy()
        duplicates[hit] = dup_of[order][found]
        columns["_dup_of"] = duplicates
    return with_columns(table, **columns).drop_columns([c for c in drop if c in table.column_names])


def mark(ds, stage: str, ids: np.ndarray, reason: str, dup_of: np.ndarray | None = None,
         drop: tuple[str, ...] = ()) -> ray.data.Dataset:
    """Mark the kept rows among `ids` as dropped by `stage`, and remove this stage's helper columns."""
    return ds.map_batches(_mark, batch_format="pyarrow", fn_kwargs=dict(
        stage=stage, ids=np.asarray(ids, dtype=np.int64), reason=reason, drop=list(drop),
        dup_of=None if dup_of is None else np.asarray(dup_of, dtype=np.int64))).materialize()


# ---- heuristics ----

def _judge(table: pa.Table, *, heuristics: dict, rewrite: bool, tokenizer_path: str | None) -> pa.Table:
    judge = HeuristicFilter(OmegaConf.create(heuristics)).judge
    texts = table.column("_text").to_pylist()
    stages = table.column("_stage").to_numpy(zero_copy_only=False).copy()
    reasons = table.column("_reason").to_numpy(zero_copy_only=False).copy()
    for i in np.flatnonzero(alive(table)):
        cleaned, reason = judge(texts[i])
        texts[i] = cleaned if rewrite else texts[i]
        if reason:
            stages[i], reasons[i] = "heuristics", reason
    node = ray.get_runtime_context().get_node_id()  # the report lists the nodes that ran the rules
    columns = dict(_stage=pa.array(stages, pa.string()), _reason=pa.array(reasons, pa.string()),
                   _node=pa.array([node] * len(texts), pa.string()))
    if rewrite:  # normalisation and C4's line removal change what pretraining will see
        columns.update(_text=pa.array(texts, pa.large_string()), _tokens=count_tokens(texts, tokenizer_path))
    return with_columns(table, **columns)


def _dropped_by(table: pa.Table, *, stage: str) -> pa.Table:
    return pa.table({"dropped": [int((table.column("_stage").to_numpy(zero_copy_only=False) == stage).sum())]})


def heuristics(ds, cfg) -> tuple[ray.data.Dataset, int, dict]:
    kwargs = dict(heuristics=OmegaConf.to_container(cfg.curate.heuristics), rewrite=cfg.curate.mode == "pretrain",
                  tokenizer_path=cfg.model.path)
    ds = ds.map_batches(_judge, batch_format="pyarrow", batch_size=BATCH, fn_kwargs=kwargs).materialize()
    return ds, int(gather(ds, _dropped_by, stage="heuristics")["dropped"].sum()), {}


# ---- exact and near deduplication ----

def _exact_keys(table: pa.Table, *, column: str) -> pa.Table:
    kept = _alive_columns(table, columns=["_id", column])
    return pa.table({"_id": kept.column("_id"), "_hash": [exact_key(t) for t in kept.column(column).to_pylist()]})


def exact_dedup(ds, cfg) -> tuple[ray.data.Dataset, int, dict]:
    keys = gather(ds, _exact_keys, column=dedup_column(cfg))
    if not keys:
        return ds, 0, {}
    dropped, first = first_of_groups(keys["_id"], keys["_hash"])
    return mark(ds, "exact_dedup", dropped, "exact_dedup:same_normalised_text", dup_of=first), len(dropped), {}


def _minhash(table: pa.Table, *, near: dict, column: str) -> pa.Table:
    hasher = MinHasher(OmegaConf.create(near))
    mask = alive(table)
    texts = table.column(column).to_pylist()
    signatures = hasher.signatures([t for t, keep in zip(texts, mask) if keep])
    bands = hasher.band_keys(signatures)
    sig_bytes, band_bytes = [b""] * len(texts), [b""] * len(texts)
    for i, signature, band in zip(np.flatnonzero(mask), signatures, bands):
        sig_bytes[i], band_bytes[i] = signature.tobytes(), band.tobytes()
    return with_columns(table, _minhash=pa.array(sig_bytes, pa.binary()), _bands=pa.array(band_bytes, pa.binary()))


def _stack(column: np.ndarray, dtype) -> np.ndarray:
    return np.stack([np.frombuffer(value, dtype=dtype) for value in column])


def near_dedup(ds, cfg) -> tuple[ray.data.Dataset, int, dict]:
    near = cfg.curate.near_dedup
    hasher = MinHasher(near)
    ds = ds.map_batches(_minhash, batch_format="pyarrow", batch_size=BATCH,
                        fn_kwargs=dict(near=OmegaConf.to_container(near), column=dedup_column(cfg))).materialize()
    keys = gather(ds, _alive_columns, columns=["_id", "_bands"])
    pairs = hasher.candidate_pairs(keys["_id"], _stack(keys["_bands"], np.int64)) if keys else np.zeros((0, 2), int)
    candidates = np.unique(pairs)
    signatures = gather(ds, _alive_columns, columns=["_id", "_minhash"], ids=candidates) if len(pairs) else {}
    verified = (hasher.verified(pairs, signatures["_id"], _stack(signatures["_minhash"], np.uint32))
                if signatures else pairs)
    dropped, kept = cluster_duplicates(verified)
    info = {"bands": hasher.bands, "rows_per_band": hasher.rows, "candidate_pairs": int(len(pairs)),
            "verified_pairs": int(len(verified))}
    return mark(ds, "near_dedup", dropped, f"near_dedup:jaccard>={near.threshold:g}", dup_of=kept,
                drop=("_minhash", "_bands")), len(dropped), info


def dedup_column(cfg) -> str:
    """Chat rows are deduplicated on their prompt, documents on their text."""
    return "_key" if cfg.curate.mode == "sft" else "_text"


# ---- model-based quality ----

def _score(table: pa.Table, *, model: QualityModel) -> pa.Table:
    return with_columns(table, _score=model.score(table.column("_text").to_pylist()))


def sample_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per row id, the same on every worker: a random sample without a shuffle."""
    with np.errstate(over="ignore"):
        mixed = (ids.astype(np.uint64) + np.uint64(seed)) * np.uint64(0x9E3779B97F4A7C15)
        mixed ^= mixed >> np.uint64(31)
        mixed *= np.uint64(0xBF58476D1CE4E5B9)
        mixed ^= mixed >> np.uint64(29)
    return (mixed >> np.uint64(11)).astype(np.float64) / 2.0**53


def _sample(table: pa.Table, *, fraction: float, seed: int) -> pa.Table:
    keys = sample_keys(table.column("_id").to_numpy(), seed)
    picked = keys < fraction
    return pa.table({"_id": table.column("_id").filter(pa.array(picked)), "_key": keys[picked],
                     "_text": table.column("_text").filter(pa.array(picked))})


def raw_sample(ds, size: int, total: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """About `size` random input rows (kept or dropped): (ids, texts), the smallest sample keys first."""
    rows = gather(ds, _sample, fraction=min(1.0, 1.2 * size / total + 1e-9), seed=seed)
    order = np.argsort(rows["_key"])[:size]
    return rows["_id"][order], rows["_text"][order].tolist()


def quality(ds, cfg, *, reference: list[str]) -> tuple[ray.data.Dataset, int, dict]:
    """Fit on a held-in part of the reference against random input rows, score every row, drop the low ones."""
    q = cfg.curate.quality
    rng = np.random.default_rng(cfg.seed)
    reference = [reference[i] for i in rng.permutation(len(reference))]
    n_heldout = int(len(reference) * q.heldout_fraction)
    heldout, train_reference = reference[:n_heldout], reference[n_heldout:][:q.max_train_docs]
    raw_ids, raw = raw_sample(ds, q.max_train_docs, ds.count(), cfg.seed)
    model = QualityModel(q.ngram_min, q.ngram_max, seed=cfg.seed).fit(train_reference, raw)
    ds = ds.map_batches(_score, batch_format="pyarrow", batch_size=BATCH, fn_kwargs=dict(model=model)).materialize()
    scores = gather(ds, _alive_columns, columns=["_id", "_score"])
    threshold = cutoff(scores.get("_score", np.zeros(0)), q.threshold, q.keep_fraction)
    low = scores["_id"][scores["_score"] < threshold] if scores else np.zeros(0, dtype=np.int64)
    reason = "quality:below_top_fraction" if q.keep_fraction is not None else f"quality:score<{threshold:g}"
    info = {"threshold": threshold, "train_reference": len(train_reference), "train_raw": len(raw),
            "heldout_reference_scores": model.score(heldout).tolist(), "train_raw_ids": raw_ids.tolist()}
    return mark(ds, "quality", low, reason), len(low), info


# ---- SFT selection ----

def _rank_columns(table: pa.Table) -> pa.Table:
    kept = _alive_columns(table, columns=["_id", "_score", "_text"])
    words = count_tokens(kept.column("_text").to_pylist(), None)
    return pa.table({"_id": kept.column("_id"), "_score": kept.column("_score"), "_words": words})


def select(ds, cfg) -> tuple[ray.data.Dataset, int, dict]:
    s = cfg.curate.select
    ranked = gather(ds, _rank_columns)
    if not ranked:
        return ds, 0, {}
    values = ranked["_words"].astype(float) if s.rank_by == "length" else np.nan_to_num(ranked["_score"], nan=0.0)
    kept = top_k(ranked["_id"], values, s.top_k)
    below = np.setdiff1d(ranked["_id"], kept)
    return mark(ds, "select", below, f"select:below_top_{s.top_k}_by_{s.rank_by}"), len(below), {}
