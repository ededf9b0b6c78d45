"""The curation stages on a Ray Data dataset whose rows carry `_stage` (empty while kept) and `_reason`.

Stages mark rows instead of removing them, so the report can count and show what each stage dropped.
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
    tables = [ray.get(ref) for ref in ds.map_batches(fn, batch_format="pyarrow", fn_kwargs=kwargs).to_arrow_refs()]
    table = pa.concat_tables([t for t in tables if t.num_rows]) if any(t.num_rows for t in tables) else None
    if table is None:
        return {}
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
    columns = dict(_stage=pa.array(stages, pa.string()), _reason=pa.array(reasons, pa.string()),
                   _node=pa.array([ray.get_runtime_context().get_node_id()] * len(texts), pa.string()))
    if rewrite:  # normalisation and C4's line removal change what pretraining will see
        columns.update(_text=pa.array(texts, pa.large_string()), _tokens=count_tokens(texts, tokenizer_path))
    return with_columns(table, **columns)


def heuristics(ds, cfg) -> tuple[ray.data.Dataset, dict]:
    kwargs = dict(heuristics=OmegaConf.to_container(cfg.curate.heuristics), rewrite=cfg.curate.mode == "pretrain",
                  tokenizer_path=cfg.model.path)
    return ds.map_batches(_judge, batch_format="pyarrow", batch_size=BATCH, fn_kwargs=kwargs).materialize(), {}


# ---- exact and near deduplication ----

def _exact_keys(table: pa.Table, *, column: str) -> pa.Table:
    kept = _alive_columns(table, columns=["_id", column])
    return pa.table({"_id": kept.column("_id"), "_hash": [exact_key(t) for t in kept.column(column).to_pylist()]})


def exact_dedup(ds, cfg) -> tuple[ray.data.Dataset, dict]:
    keys = gather(ds, _exact_keys, column=dedup_column(cfg))
    if not keys:
        return ds, {}
    dropped, first = first_of_groups(keys["_id"], keys["_hash"])
    return mark(ds, "exact_dedup", dropped, "exact_dedup:same_normalised_text", dup_of=first), {}


def _minhash(table: pa.Table, *, near: dict, column: str) -> pa.Table:
    hasher = MinHasher(OmegaConf.create(near))
    mask = alive(table)
    texts = table.column(column).to_pylist()
    signatures = hasher.signatures([t for t, keep in zip(texts, mask) if keep])
    bands = hasher.band_keys(signatures)
    sig_bytes, band_bytes, j = [b""] * len(texts), [b""] * len(texts), 0
    for i in np.flatnonzero(mask):
        sig_bytes[i], band_bytes[i] = signatures[j].tobytes(), bands[j].tobytes()
        j += 1
    return with_columns(table, _minhash=pa.array(sig_bytes, pa.binary()), _bands=pa.array(band_bytes, pa.binary()))


def _stack(column: np.ndarray, dtype) -> np.ndarray:
    return np.stack([np.frombuffer(value, dtype=dtype) for value in column])


def near_dedup(ds, cfg) -> tuple[ray.data.Dataset, dict]:
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
                drop=("_minhash", "_bands")), info


def dedup_column(cfg) -> str:
    """Chat rows are deduplicated on their prompt, documents on their text."""
    return "_key" if cfg.curate.mode == "sft" else "_text"


# ---- model-based quality ----

def _score(table: pa.Table, *, model: QualityModel) -> pa.Table:
    return with_columns(table, _score=model.score(table.column("_text").to_pylist()))


def _pick(table: pa.Table, *, ids: np.ndarray, columns: list[str]) -> pa.Table:
    return table.select(columns).filter(pa.array(np.isin(table.column("_id").to_numpy(), ids)))


def _all_columns(table: pa.Table, *, columns: list[str]) -> pa.Table:
    return table.select(columns)


def quality(ds, cfg, *, reference: list[str]) -> tuple[ray.data.Dataset, dict]:
    """Fit on a held-in part of the reference against random input rows, score every row, drop the low ones."""
    q = cfg.curate.quality
    rng = np.random.default_rng(cfg.seed)
    reference = [reference[i] for i in rng.permutation(len(reference))]
    n_heldout = int(len(reference) * q.heldout_fraction)
    heldout, train_reference = reference[:n_heldout], reference[n_heldout:][:q.max_train_docs]
    all_ids = gather(ds, _all_columns, columns=["_id"])["_id"]
    raw_ids = np.sort(rng.choice(all_ids, size=min(q.max_train_docs, len(all_ids)), replace=False))
    raw = gather(ds, _pick, ids=raw_ids, columns=["_text"])["_text"].tolist()
    model = QualityModel(q.ngram_min, q.ngram_max, seed=cfg.seed).fit(train_reference, raw)
    ds = ds.map_batches(_score, batch_format="pyarrow", batch_size=BATCH, fn_kwargs=dict(model=model)).materialize()
    scores = gather(ds, _alive_columns, columns=["_id", "_score"])
    threshold = cutoff(scores.get("_score", np.zeros(0)), q.threshold, q.keep_fraction)
    low = scores["_id"][scores["_score"] < threshold] if scores else np.zeros(0, dtype=np.int64)
    reason = "quality:below_top_fraction" if q.keep_fraction is not None else f"quality:score<{threshold:g}"
    info = {"threshold": threshold, "train_reference": len(train_reference), "train_raw": len(raw),
            "heldout_reference_scores": model.score(heldout).tolist(), "train_raw_ids": raw_ids.tolist()}
    return mark(ds, "quality", low, reason), info


# ---- SFT selection ----

def _rank_columns(table: pa.Table) -> pa.Table:
    kept = _alive_columns(table, columns=["_id", "_score", "_text"])
    words = count_tokens(kept.column("_text").to_pylist(), None)
    return pa.table({"_id": kept.column("_id"), "_score": kept.column("_score"), "_words": words})


def select(ds, cfg) -> tuple[ray.data.Dataset, dict]:
    s = cfg.curate.select
    ranked = gather(ds, _rank_columns)
    if not ranked:
        return ds, {}
    values = ranked["_words"].astype(float) if s.rank_by == "length" else np.nan_to_num(ranked["_score"], nan=0.0)
    kept = top_k(ranked["_id"], values, s.top_k)
    below = np.setdiff1d(ranked["_id"], kept)
    return mark(ds, "select", below, f"select:below_top_{s.top_k}_by_{s.rank_by}"), {"rank_by": s.rank_by}
