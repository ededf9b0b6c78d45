"""The funnel report: report.json, a table for the terminal and funnel.png in output_dir.

Per stage: documents and tokens still kept after it, its time and throughput, its drop reasons with a few
dropped samples each. When rows carry `curation_label` (the embedded corpus does), each filter's precision
(the share of what it dropped that it should have) and recall (the share of its targets that reached it and
were dropped) against those labels, and the quality classifier's AUC.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rlsys.curation.heuristics import FILTER_ORDER
from rlsys.curation.quality import auc

# What each filter is meant to remove, by ground-truth label.
TARGETS = {"heuristics": ("junk",), "exact_dedup": ("exact_dup",), "near_dedup": ("exact_dup", "near_dup"),
           "quality": ("junk",)}
SAMPLE_CHARS = 300


def summarize_batch(table: pa.Table, *, samples: int) -> pa.Table:
    """Counts per (stage, reason, label) and the first dropped samples per reason, as one JSON row."""
    labels = (table.column("curation_label").to_pylist() if "curation_label" in table.column_names
              else [""] * table.num_rows)
    columns = {name: table.column(name).to_pylist() for name in
               ("_id", "_stage", "_reason", "_tokens", "_input_tokens", "_text", "_dup_of", "_score")}
    counts: dict = defaultdict(lambda: [0, 0, 0])
    shown: dict = defaultdict(list)
    for i, label in enumerate(labels):
        key = (columns["_stage"][i], columns["_reason"][i], label or "")
        entry = counts[key]
        entry[0] += 1
        entry[1] += columns["_tokens"][i]
        entry[2] += columns["_input_tokens"][i]
        if key[0] and len(shown[key[1]]) < samples:
            score = columns["_score"][i]
            shown[key[1]].append({"id": columns["_id"][i], "text": columns["_text"][i][:SAMPLE_CHARS],
                                  **({"dup_of": columns["_dup_of"][i]} if columns["_dup_of"][i] >= 0 else {}),
                                  **({"score": round(score, 4)} if score == score else {})})
    nodes = sorted(set(table.column("_node").to_pylist())) if "_node" in table.column_names else []
    summary = {"counts": [[*key, *value] for key, value in counts.items()], "samples": shown, "nodes": nodes}
    return pa.table({"summary": [json.dumps(summary)]})


def merge_summaries(rows: list[str], samples: int) -> dict:
    counts: dict = defaultdict(lambda: np.zeros(3, dtype=np.int64))
    shown: dict = defaultdict(list)
    nodes: set = set()
    for row in rows:
        part = json.loads(row)
        for stage, reason, label, docs, tokens, input_tokens in part["counts"]:
            counts[(stage, reason, label)] += (docs, tokens, input_tokens)
        for reason, items in part["samples"].items():
            shown[reason] = (shown[reason] + items)[:samples]
        nodes.update(part["nodes"])
    return {"counts": counts, "samples": shown, "nodes": sorted(nodes)}


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def funnel(counts: dict, stages: list[str], timings: dict[str, float]) -> list[dict]:
    total_docs = sum(int(v[0]) for v in counts.values())
    rows = [{"stage": "input", "docs": total_docs, "tokens": sum(int(v[2]) for v in counts.values()),
             "seconds": round(timings["input"], 2)}]
    for k, stage in enumerate(stages):
        later = set(stages[k + 1:]) | {""}
        kept = [v for (s, _, _), v in counts.items() if s in later]
        docs_in = rows[-1]["docs"]
        seconds = timings[stage]
        rows.append({"stage": stage, "docs": sum(int(v[0]) for v in kept), "tokens": sum(int(v[1]) for v in kept),
                     "dropped": sum(int(v[0]) for (s, _, _), v in counts.items() if s == stage),
                     "seconds": round(seconds, 2), "docs_per_s": round(docs_in / seconds, 1) if seconds else None})
    return rows


def drop_reasons(counts: dict, samples: dict) -> list[dict]:
    by_reason: dict = defaultdict(lambda: [0, 0, ""])
    for (stage, reason, _), value in counts.items():
        if stage:
            by_reason[reason][0] += int(value[0])
            by_reason[reason][1] += int(value[2])
            by_reason[reason][2] = stage
    ordered = sorted(by_reason.items(), key=lambda item: -item[1][0])
    return [{"stage": stage, "reason": reason, "docs": docs, "input_tokens": tokens, "samples": samples.get(reason, [])}
            for reason, (docs, tokens, stage) in ordered]


def _label_totals(counts: dict, keep) -> dict[str, int]:
    totals: dict = defaultdict(int)
    for (stage, reason, label), value in counts.items():
        if keep(stage, reason):
            totals[label] += int(value[0])
    return totals


def precision_recall(counts: dict, stages: list[str]) -> dict:
    """Each filter (and each rule set inside heuristics) against the labels of the rows that reached it."""
    results = {}
    for k, stage in enumerate(stages):
        if stage not in TARGETS:
            continue
        target = TARGETS[stage]
        reached = _label_totals(counts, lambda s, r, later=set(stages[k:]) | {""}: s in later)
        parts = [(stage, lambda s, r, st=stage: s == st)]
        if stage == "heuristics":
            parts += [(f"heuristics/{name}", lambda s, r, n=name: s == "heuristics" and r.startswith(n + ":"))
                      for name in ("empty", *FILTER_ORDER)]
        for name, picks in parts:
            dropped = _label_totals(counts, picks)
            hits, total = sum(dropped[t] for t in target), sum(dropped.values())
            if name != stage and not total:
                continue
            results[name] = {"target": "+".join(target), "dropped": total, "dropped_target": hits,
                             "precision": _ratio(hits, total), "recall": _ratio(hits, sum(reached[t] for t in target))}
            for label, n in dropped.items():  # later rule sets only see what earlier ones kept
                reached[label] -= n if name != stage else 0
    return results


def overall(counts: dict) -> dict:
    """Share of each label removed by the filters (top-k selection left out: it drops good rows by design)."""
    totals = _label_totals(counts, lambda s, r: True)
    removed = _label_totals(counts, lambda s, r: s not in ("", "select"))
    names = {"junk": "junk_removed", "clean": "clean_lost", "exact_dup": "exact_dups_removed",
             "near_dup": "near_dups_removed"}
    return {name: _ratio(removed[label], totals[label]) for label, name in names.items() if totals[label]}


def quality_auc(info: dict, label_scores: dict[str, np.ndarray]) -> dict:
    heldout = np.asarray(info["heldout_reference_scores"])
    result = {"threshold": round(info["threshold"], 4), "train_reference": info["train_reference"],
              "train_raw": info["train_raw"], "heldout_reference": len(heldout)}
    if "junk" in label_scores:
        result["auc_heldout_reference_vs_junk"] = auc(heldout, label_scores["junk"])
    if "all" in label_scores:
        result["auc_heldout_reference_vs_raw"] = auc(heldout, label_scores["all"])
    return result


def build(summary: dict, stages: list[str], timings: dict, infos: dict, label_scores: dict, meta: dict) -> dict:
    counts = summary["counts"]
    labelled = any(label for (_, _, label) in counts)
    report = {**meta, "nodes": summary["nodes"], "funnel": funnel(counts, stages, timings),
              "drop_reasons": drop_reasons(counts, summary["samples"])}
    if labelled:
        report["precision_recall"] = precision_recall(counts, stages)
        report["overall"] = overall(counts)
    if "near_dedup" in infos:
        report["near_dedup"] = infos["near_dedup"]
    if "quality" in infos:
        report["quality"] = quality_auc(infos["quality"], label_scores)
    return report


def table(report: dict, top: int = 8) -> str:
    unit = report["token_unit"]
    lines = [f"rlsys curate: {report['input']} -> {report['output']}",
             f"{'stage':<12} {'docs':>8} {'kept':>7} {unit:>12} {'kept':>7} {'seconds':>8} {'docs/s':>8}"]
    first = report["funnel"][0]
    for row in report["funnel"]:
        rate = f"{row['docs_per_s']:>8.0f}" if row.get("docs_per_s") else f"{'':>8}"
        lines.append(f"{row['stage']:<12} {row['docs']:>8,} {row['docs'] / max(first['docs'], 1):>7.1%} "
                     f"{row['tokens']:>12,} {row['tokens'] / max(first['tokens'], 1):>7.1%} "
                     f"{row['seconds']:>8.2f} {rate}")
    lines.append("top drop reasons:")
    for item in report["drop_reasons"][:top]:
        example = item["samples"][0]["text"][:60].replace("\n", " ") if item["samples"] else ""
        lines.append(f"  {item['docs']:>6,}  {item['reason']:<42} e.g. {example!r}")
    if "precision_recall" in report:
        lines.append(f"against the labels: {'filter':<30} {'target':<18} {'dropped':>8} {'precision':>9} {'recall':>7}")
        for name, row in report["precision_recall"].items():
            fmt = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
            lines.append(f"{'':<20}{name:<30} {row['target']:<18} {row['dropped']:>8} {fmt(row['precision']):>9} "
                         f"{fmt(row['recall']):>7}")
        lines.append("overall: " + ", ".join(f"{k} {v:.1%}" for k, v in report["overall"].items()))
    if "quality" in report:
        q = report["quality"]
        aucs = ", ".join(f"{k} {v:.3f}" for k, v in q.items() if k.startswith("auc") and v is not None)
        lines.append(f"quality classifier: threshold {q['threshold']:g}; {aucs}")
    return "\n".join(lines)


def plot(report: dict, path: Path, top: int = 8) -> None:
    stages = [row["stage"] for row in report["funnel"]]
    fig = Figure(figsize=(13, 4.2))
    FigureCanvasAgg(fig)
    panels = fig.subplots(1, 3)
    for ax, key, title in ((panels[0], "docs", "documents kept"),
                           (panels[1], "tokens", f"{report['token_unit']} kept")):
        values = [row[key] for row in report["funnel"]]
        bars = ax.barh(stages[::-1], values[::-1], color="#4c72b0")
        ax.bar_label(bars, labels=[f"{v:,}" for v in values[::-1]], fontsize=8, padding=2)
        ax.set_title(title)
        ax.set_xlim(0, max(values) * 1.25 if max(values) else 1)
    reasons = report["drop_reasons"][:top]
    bars = panels[2].barh([r["reason"][:34] for r in reasons][::-1], [r["docs"] for r in reasons][::-1],
                          color="#c44e52")
    panels[2].bar_label(bars, fontsize=8, padding=2)
    panels[2].set_title("top drop reasons (documents)")
    panels[2].tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write(report: dict, output_dir: Path) -> None:
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    plot(report, output_dir / "funnel.png")
