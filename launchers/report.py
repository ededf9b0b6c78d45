"""`rlsys report RUN_DIR`: PNG plots and a text summary of a run's metrics.jsonl, or of each pipeline stage."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rlsys.errors import RlsysError

STAGES = ("pretrain", "sft", "grpo", "ppo")
TIME_PARTS = ("gen", "score", "ref", "train", "sync")  # perf/<part>_s, the phases of one RL step
RAW_ALPHA = 0.25
MAX_BARS = 50  # step-time breakdown: stacked bars up to this many steps, a stacked area beyond


class ReportError(RlsysError):
    """A run folder that cannot be reported on."""


# ---- reading ----

def load_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise ReportError(f"{run_dir} has no metrics.jsonl; point at a run's output_dir (or a pipeline's).")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # blank, or the half-written last line of a run still in progress
    records = [r for r in records if isinstance(r, dict) and isinstance(r.get("step"), (int, float))]
    if not records:
        raise ReportError(f"{path} holds no metrics yet.")
    return records


def series(records: list[dict], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of one metric, leaving out the steps where it is null or missing."""
    points = [(r["step"], r[name]) for r in records
              if isinstance(r.get(name), (int, float)) and math.isfinite(r[name])]
    steps, values = zip(*points) if points else ((), ())
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def metric_names(records: list[dict]) -> list[str]:
    names = dict.fromkeys(k for r in records for k in r if k != "step")
    return [n for n in names if len(series(records, n)[0])]


def leaf(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def is_kl(name: str) -> bool:
    return leaf(name) in ("kl", "kl_loss")


def is_loss(name: str) -> bool:
    return leaf(name).endswith("loss") and not is_kl(name)


# ---- plotting ----

def smooth(values: np.ndarray) -> np.ndarray:
    """A centred moving average over about a fifteenth of the run: no lag, unlike an EMA.

    The window narrows symmetrically towards both ends, so the ends stay centred too (the first point is raw).
    """
    index = np.arange(len(values))
    half = np.minimum(max(1, len(values) // 30), np.minimum(index, len(values) - 1 - index))
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    return (cumulative[index + half + 1] - cumulative[index - half]) / (2 * half + 1)


def new_figure(panels: int, title: str) -> tuple[Figure, list]:
    cols = min(panels, 2)
    rows = math.ceil(panels / cols)
    figure = Figure(figsize=(6.4 * cols, 4.0 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontweight="bold")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for unused in axes[panels:]:
        unused.set_visible(False)
    return figure, list(axes[:panels])


def style(ax, ylabel: str, title: str | None = None) -> None:
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    ax.ticklabel_format(axis="y", useOffset=False)  # plain values, not "1e-13 + 2e-1" on flat curves


def plot_noisy(ax, steps: np.ndarray, values: np.ndarray, label: str, color: str = "C0") -> None:
    """The smoothed curve, with the raw one faint behind it when there are enough points to smooth."""
    if len(values) >= 10:
        ax.plot(steps, values, color=color, alpha=RAW_ALPHA, linewidth=1)
        ax.plot(steps, smooth(values), color=color, linewidth=2, label=f"{label} (smoothed)")
    else:
        ax.plot(steps, values, color=color, linewidth=2, marker="o", markersize=3, label=label)


def curves_figure(records: list[dict], names: list[str], title: str) -> Figure:
    figure, axes = new_figure(len(names), title)
    for ax, name in zip(axes, names):
        plot_noisy(ax, *series(records, name), label=leaf(name))
        style(ax, leaf(name), name)
    return figure


def reward_figure(records: list[dict], title: str) -> Figure:
    figure, [ax] = new_figure(1, title)
    steps, mean = series(records, "reward/mean")
    std_steps, std = series(records, "reward/std")
    if len(std) == len(mean) and np.array_equal(std_steps, steps):
        ax.fill_between(steps, mean - std, mean + std, color="C2", alpha=0.15, linewidth=0, label="mean ± std")
    plot_noisy(ax, steps, mean, "mean", color="C2")
    style(ax, "reward")
    ax.legend(loc="best")
    return figure


def accuracy_figure(records: list[dict], title: str) -> Figure:
    figure, [ax] = new_figure(1, title)
    steps, accuracy = series(records, "eval/accuracy")
    ax.plot(steps, accuracy, color="C3", linewidth=2, marker="o")
    for step, value in zip(steps[-1:], accuracy[-1:]):
        ax.annotate(f"{value:.3f}", (step, value), textcoords="offset points", xytext=(0, 8), ha="center")
    ax.set_ylim(0, max(1.0, float(accuracy.max()) * 1.05))
    style(ax, "held-out accuracy")
    return figure


def step_time_parts(records: list[dict]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Steps that logged perf/step_s, and their seconds by phase; 'other' is what the phases leave."""
    timed = [r for r in records if isinstance(r.get("perf/step_s"), (int, float))]
    parts = {p: np.array([r.get(f"perf/{p}_s") or 0.0 for r in timed]) for p in TIME_PARTS
             if any(r.get(f"perf/{p}_s") is not None for r in timed)}
    total = np.array([r["perf/step_s"] for r in timed])
    other = np.clip(total - sum(parts.values(), np.zeros_like(total)), 0, None)
    return np.array([r["step"] for r in timed]), {**parts, ("other" if parts else "step"): other}


def step_time_figure(records: list[dict], title: str) -> Figure:
    figure, [ax] = new_figure(1, title)
    steps, parts = step_time_parts(records)
    style(ax, "seconds per step")
    if list(parts) == ["step"]:  # no phases logged (pretrain, SFT): just the step time
        plot_noisy(ax, steps, parts["step"], "step")
        ax.set_ylim(bottom=0)
        return figure
    if len(steps) > MAX_BARS:
        ax.stackplot(steps, *parts.values(), labels=list(parts), alpha=0.85)
        ax.set_xlim(steps.min(), steps.max())
    else:
        width = 0.8 * (np.diff(steps).min() if len(steps) > 1 else 1)
        bottom = np.zeros(len(steps))
        for part, seconds in parts.items():
            ax.bar(steps, seconds, width=width, bottom=bottom, label=part, alpha=0.85)
            bottom += seconds
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1), title="phase")
    return figure


def stage_accuracy_figure(accuracy: dict[str, float], title: str) -> Figure:
    figure, [ax] = new_figure(1, title)
    stages = list(accuracy)
    values = [0.0 if math.isnan(v) else v for v in accuracy.values()]
    bars = ax.bar(stages, values, color=[f"C{i}" for i in range(len(stages))], width=0.6)
    ax.bar_label(bars, labels=["n/a" if math.isnan(v) else f"{v:.3f}" for v in accuracy.values()], padding=3)
    ax.set_ylim(0, max(1.0, max(values) * 1.1))
    ax.set_xlabel("stage")
    ax.set_ylabel("held-out accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return figure


def figures_for(records: list[dict], name: str) -> dict[str, Figure]:
    """One figure per family of metrics the run logged."""
    names = metric_names(records)
    figures = {}
    if losses := [n for n in names if is_loss(n)]:
        figures["loss.png"] = curves_figure(records, losses, f"{name}: loss")
    if "reward/mean" in names:
        figures["reward.png"] = reward_figure(records, f"{name}: reward")
    if kls := [n for n in names if is_kl(n)]:
        figures["kl.png"] = curves_figure(records, kls, f"{name}: KL to the reference")
    if "eval/accuracy" in names:
        figures["eval_accuracy.png"] = accuracy_figure(records, f"{name}: held-out accuracy")
    if "perf/step_s" in names:
        figures["step_time.png"] = step_time_figure(records, f"{name}: time per step")
    return figures


# ---- summary ----

def best_of(name: str) -> str:
    return "max" if name in ("reward/mean", "eval/accuracy") else "min"


def summary_lines(records: list[dict], name: str, figures: list[str]) -> list[str]:
    steps = [r["step"] for r in records]
    names = metric_names(records)
    lines = [f"run: {name}", f"steps: {min(steps):g}..{max(steps):g} ({len(records)} records)", ""]
    key = [n for n in names if is_loss(n)] + [n for n in ("reward/mean", "train/kl", "eval/accuracy") if n in names]
    if key:
        lines.append(f"{'metric':<22} {'first':>11} {'last':>11} {'best':>11}  at step")
        for metric in key:
            at, values = series(records, metric)
            i = int(np.argmax(values) if best_of(metric) == "max" else np.argmin(values))
            lines.append(f"{metric:<22} {values[0]:>11.4g} {values[-1]:>11.4g} {values[i]:>11.4g}  {at[i]:g} "
                         f"({best_of(metric)})")
    if "perf/step_s" in names:
        _, parts = step_time_parts(records)
        total = sum(p.mean() for p in parts.values())
        lines += ["", f"time per step: {total:.3f} s on average"]
        lines += [f"  {part:<8}{100 * p.mean() / total:>6.1f}%  {p.mean():.3f} s" for part, p in parts.items()]
    lines += ["", f"figures: {', '.join(figures) or 'none'}"]
    return lines


# ---- runs and pipelines ----

def report_run(run_dir: Path, out_dir: Path, name: str) -> list[str]:
    records = load_metrics(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = figures_for(records, name)
    for filename, figure in figures.items():
        figure.savefig(out_dir / filename, dpi=110)
    return summary_lines(records, name, list(figures))


def is_pipeline(run_dir: Path) -> bool:
    return (run_dir / "summary.json").exists() or any((run_dir / s / "metrics.jsonl").exists() for s in STAGES)


def stage_accuracy(run_dir: Path, stages: list[str]) -> dict[str, float]:
    """Held-out accuracy per stage: the pipeline's summary.json, else each stage's last evaluation."""
    if (run_dir / "summary.json").exists():
        return {stage: float("nan") if v is None else float(v)
                for stage, v in json.loads((run_dir / "summary.json").read_text()).items()}
    found = {}
    for stage in stages:
        _, accuracy = series(load_metrics(run_dir / stage), "eval/accuracy")
        found[stage] = float(accuracy[-1]) if len(accuracy) else float("nan")
    return found


def report_pipeline(run_dir: Path, out_dir: Path) -> list[str]:
    sections, reported = [], []
    for stage in (s for s in STAGES if (run_dir / s).is_dir()):
        try:
            stage_lines = report_run(run_dir / stage, out_dir / stage, f"{run_dir.name}/{stage}")
        except ReportError as err:
            sections += [f"== {stage}: skipped: {err}", ""]
            continue
        reported.append(stage)
        sections += [f"== {stage} (figures in {stage}/)", *stage_lines, ""]
    accuracy = stage_accuracy(run_dir, reported)
    if not reported and not accuracy:
        raise ReportError(f"{run_dir} has no stage with metrics yet.")
    header = [f"pipeline: {run_dir}", ""]
    if any(not math.isnan(v) for v in accuracy.values()):
        out_dir.mkdir(parents=True, exist_ok=True)
        stage_accuracy_figure(accuracy, f"{run_dir.name}: held-out accuracy per stage").savefig(
            out_dir / "accuracy_per_stage.png", dpi=110)
        header += ["held-out accuracy per stage (accuracy_per_stage.png):",
                   *(f"  {stage:<10}{'n/a' if math.isnan(v) else f'{v:.3f}':>8}" for stage, v in accuracy.items()),
                   ""]
    return header + sections


def main_report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rlsys report",
        description="Plot a run's metrics.jsonl into RUN_DIR/report/ (PNG per family of metrics and "
                    "summary.txt). A pipeline's output_dir gets one report per stage and accuracy per stage.")
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a job's or a pipeline's output_dir")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exited:  # --help, or a usage error argparse has already printed
        return int(exited.code or 0)
    run_dir, out_dir = args.run_dir, args.run_dir / "report"
    try:
        if not run_dir.is_dir():
            raise ReportError(f"no such folder: {run_dir}")
        use_stages = is_pipeline(run_dir) and not (run_dir / "metrics.jsonl").exists()
        lines = report_pipeline(run_dir, out_dir) if use_stages else report_run(run_dir, out_dir, run_dir.name)
    except ReportError as err:
        print(f"rlsys report: error: {err}", file=sys.stderr)
        return 2
    text = "\n".join(lines).rstrip() + "\n"
    (out_dir / "summary.txt").write_text(text)
    print(text + f"\nreport written to {out_dir}/")
    return 0
