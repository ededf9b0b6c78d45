"""`rlsys pipeline`: pretrain -> SFT -> RL, each stage a normal job in output_dir/<stage>/, one Ray for all.

`pipeline.rl` picks the last stages: grpo, ppo, dpo, rm+ppo (a reward model trained on the preference
pairs from the SFT model, then PPO from the SFT model against it), or agent (every stage on the calculator
environment's hard problems: pretraining, SFT on demonstrations of the tool, multi-turn GRPO). Each stage
starts from its parent's final checkpoint; held-out accuracy is printed after every stage (for rm: its
preference-pair accuracy; for agent: pretraining's without the tool, then with it, and tool calls and errors
per episode) and the table is written to output_dir/summary.json. With a gold term (rm+ppo: the answer
check, never trained on) the proxy and gold rewards of the RL stage are shown too, and kept in rewards.json.
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from rlsys.config.jobs import controller
from rlsys.config.pipeline_stages import stage_configs
from rlsys.config.validate import to_typed


def reward_trend(output_dir: str, window: int = 10) -> dict[str, float]:
    """An RL stage's proxy and gold rewards over its first and last `window` steps (empty without a gold term),
    and where a gold stop ended it."""
    from rlsys.logging import read_metrics

    steps = [m for m in read_metrics(output_dir) if "reward/gold" in m]
    if not steps:
        return {}
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)
    trend = {f"{key}_{end}": mean(rows, f"reward/{key}") for key in ("proxy", "gold")
             for end, rows in (("start", steps[:window]), ("end", steps[-window:]))}
    if steps[-1].get("gold/stopped"):
        trend.update(stopped_at=float(steps[-1]["step"]), best_step=steps[-1]["gold/best_step"])
    return trend


def print_table(summary: dict[str, float], episodes: dict[str, dict[str, float]],
                rewards: dict[str, dict[str, float]] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    title = "held-out accuracy (greedy" + ("; rm: preference pairs ranked right)" if "rm" in summary else ")")
    if episodes:
        title = "held-out accuracy on the calculator's problems (pretrain: without the tool; then with it)"
    table = Table(title=title)
    table.add_column("")
    for stage in summary:
        table.add_column(stage, justify="right")
    table.add_row("accuracy", *(f"{value:.3f}" for value in summary.values()))
    for key in ("eval/tool_calls_mean", "eval/tool_errors", "eval/turns_mean") if episodes else ():
        table.add_row(key.split("/")[1], *(f"{episodes.get(s, {}).get(key, float('nan')):.2f}" for s in summary))
    for key in ("proxy", "gold") if rewards else ():  # first -> last 10 steps; the gold is never trained on
        table.add_row(f"{key} reward", *(f"{rewards[s][key + '_start']:.2f} -> {rewards[s][key + '_end']:.2f}"
                                         if s in rewards else "" for s in summary))
    Console().print(table)


def run(cfg) -> dict[str, float]:
    from rlsys.actors.cluster import reserve, resolve_device

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    stages = {stage: to_typed(composed) for stage, composed in stage_configs(cfg).items()}
    reserve(cfg, resolve_device(cfg.cluster))  # one Ray for every stage, sized for the largest
    summary: dict[str, float] = {}
    episodes: dict[str, dict[str, float]] = {}  # stages evaluated in episodes: tool calls and errors
    rewards: dict[str, dict[str, float]] = {}  # RL stages with a gold term: proxy and gold rewards
    for stage, stage_cfg in stages.items():
        print(f"\n=== {stage} -> {stage_cfg.output_dir} ===", flush=True)
        metrics = _recorded(stage_cfg) if _done(stage_cfg) else controller(stage_cfg.job)(stage_cfg)
        summary[stage] = float(metrics.get("eval/accuracy", float("nan")))
        if "eval/turns_mean" in metrics:
            episodes[stage] = {k: float(v) for k, v in metrics.items() if k.startswith("eval/")}
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if episodes:
            (out / "episodes.json").write_text(json.dumps(episodes, indent=2) + "\n")
        if trend := reward_trend(stage_cfg.output_dir) if stage in ("grpo", "ppo") else {}:
            rewards[stage] = trend
            (out / "rewards.json").write_text(json.dumps(rewards, indent=2) + "\n")
        print_table(summary, episodes, rewards)
    return summary


def _done(stage_cfg) -> bool:
    """With resume=auto a finished stage is not run again."""
    return stage_cfg.resume == "auto" and (Path(stage_cfg.output_dir) / "checkpoints" / "final" / "config.json").exists()


def _recorded(stage_cfg) -> dict[str, float]:
    from rlsys.logging import read_metrics

    found = [r for r in read_metrics(stage_cfg.output_dir) if r.get("eval/accuracy") is not None]
    return found[-1] if found else {}
