"""`rlsys curate`: read, run the enabled stages on Ray Data, write the kept rows and the funnel report."""
from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
from omegaconf import OmegaConf

from rlsys.actors.cluster import reserve
from rlsys.curation import corpus, funnel_report, inputs, stages
from rlsys.data.sources import load_rows
from rlsys.errors import ConfigError, DataError, RlsysError


def check(c) -> None:
    """Impossible curate.* values, before Ray starts."""
    q, n = c.quality, c.near_dedup
    problems = [
        (0 < n.threshold <= 1, f"curate.near_dedup.threshold must be in (0, 1], got {n.threshold}."),
        (n.ngram >= 1 and n.num_perm >= 2, "curate.near_dedup.ngram must be >= 1 and num_perm >= 2."),
        (0 <= q.threshold <= 1, f"curate.quality.threshold must be in [0, 1], got {q.threshold}."),
        (q.keep_fraction is None or 0 < q.keep_fraction <= 1,
         f"curate.quality.keep_fraction must be in (0, 1] or null, got {q.keep_fraction}."),
        (0 <= q.heldout_fraction < 1, f"curate.quality.heldout_fraction must be in [0, 1), got {q.heldout_fraction}."),
        (q.max_train_docs >= 2, f"curate.quality.max_train_docs must be at least 2, got {q.max_train_docs}."),
        (1 <= q.ngram_min <= q.ngram_max, "curate.quality needs 1 <= ngram_min <= ngram_max."),
        (c.select.top_k >= 1, f"curate.select.top_k must be at least 1, got {c.select.top_k}."),
        (c.mode != "sft" or not c.select.enabled or c.select.rank_by != "quality" or c.quality.enabled,
         "curate.select.rank_by=quality needs curate.quality.enabled=true; or rank by curate.select.rank_by=length."),
        (c.corpus.num_docs >= 10, f"curate.corpus.num_docs must be at least 10, got {c.corpus.num_docs}."),
        (c.heuristics.char_repetition.ngram >= 1, "curate.heuristics.char_repetition.ngram must be >= 1."),
    ]
    for ok, message in problems:
        if not ok:
            raise ConfigError(message)


def configure_ray_data() -> None:
    """Our progress line per stage instead of Ray Data's bars and plans; the output in the input's order;
    a bad row's DataError reaches the user as it is, not wrapped in a UserCodeException."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    context.execution_options.preserve_order = True
    context.raise_original_map_exception = True
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # its errors still reach us as exceptions


def reference_texts(cfg) -> list[str]:
    q = cfg.curate.quality
    if q.reference:
        rows = load_rows(q.reference, columns=dict(cfg.data.columns), required=["text"], on_error=cfg.data.on_error)
        return [str(row["text"]) for row in rows.rows]
    if cfg.data.train:
        raise DataError("curate.quality.reference is not set: the quality classifier needs a file or folder of "
                        "high-quality text (a `text` column) to learn from. Set curate.quality.reference=PATH, "
                        "or curate.quality.enabled=false.")
    return corpus.reference_texts(cfg.curate.corpus.seed)


def _scores_outside(table: pa.Table, *, exclude: np.ndarray) -> pa.Table:
    """Quality scores (and labels) of the rows the classifier did not train on."""
    columns = ["_score"] + (["curation_label"] if "curation_label" in table.column_names else [])
    return table.select(columns).filter(pa.array(~np.isin(table.column("_id").to_numpy(), exclude)))


def heldout_scores(ds, quality_info: dict) -> dict[str, np.ndarray]:
    scored = stages.gather(ds, _scores_outside, exclude=np.asarray(quality_info["train_raw_ids"], dtype=np.int64))
    if not scored:
        return {}
    by_label = {"all": scored["_score"]}
    if "curation_label" in scored:
        by_label["junk"] = scored["_score"][scored["curation_label"] == "junk"]
    return by_label


def run(cfg) -> dict:
    """Curate `data.train` (or the embedded labelled corpus) into output_dir; returns the report."""
    check(cfg.curate)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    reference = reference_texts(cfg) if cfg.curate.quality.enabled else []
    reserve(cfg, "cpu")
    configure_ray_data()
    try:
        return curate(cfg, reference, out)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, RlsysError):  # one line, without the task's traceback and Ray Data's retry note
            raise type(cause)(str(cause).splitlines()[0]) from None
        raise


def curate(cfg, reference: list[str], out: Path) -> dict:
    c = cfg.curate
    cpus = int(ray.cluster_resources().get("CPU", 1))

    start = time.perf_counter()
    ds = inputs.read_input(cfg, num_blocks=max(4, 2 * cpus))
    timings = {"input": time.perf_counter() - start}
    total = ds.count()
    if not total:
        raise DataError(f"{inputs.describe_input(cfg)} holds no rows to curate.")
    print(f"curate: read {total:,} rows of {inputs.describe_input(cfg)} in {timings['input']:.1f}s "
          f"({len(ray.nodes())} nodes, {cpus} CPUs)", flush=True)

    steps = {"heuristics": stages.heuristics, "exact_dedup": stages.exact_dedup, "near_dedup": stages.near_dedup,
             "quality": functools.partial(stages.quality, reference=reference), "select": stages.select}
    enabled = [name for name in steps if c[name].enabled and (name != "select" or c.mode == "sft")]
    infos, kept = {}, total
    for name in enabled:
        start = time.perf_counter()
        ds, dropped, infos[name] = steps[name](ds, cfg)
        timings[name] = time.perf_counter() - start
        print(f"curate: {name:<12} {kept:>9,} -> {kept - dropped:>9,} docs (-{dropped:,}) in {timings[name]:.1f}s, "
              f"{kept / max(timings[name], 1e-9):,.0f} docs/s", flush=True)
        kept -= dropped

    summary = funnel_report.merge_summaries(
        [row["summary"] for row in ds.map_batches(funnel_report.summarize_batch, batch_format="pyarrow",
                                                   fn_kwargs=dict(samples=c.samples_per_reason)).take_all()],
        c.samples_per_reason)
    folder = inputs.write_output(ds, cfg)
    label_scores = heldout_scores(ds, infos["quality"]) if "quality" in infos else {}
    meta = {"input": inputs.describe_input(cfg), "mode": c.mode, "output": str(folder),
            "output_format": c.output_format, "token_unit": "tokens" if cfg.model.path else "words"}
    result = funnel_report.build(summary, enabled, timings, infos, label_scores, meta)
    funnel_report.write(result, out)
    print(funnel_report.table(result), flush=True)
    return result
