"""On-policy distillation against GRPO and offline distillation, from the pipeline's checkpoints, in one run.

    python benchmarks/on_policy_distill.py [--pipeline outputs/pipeline] [--steps 50] [--eval-every 10]

The teacher is the pipeline's GRPO checkpoint; the students are its SFT checkpoint and a smaller model (one layer,
the same tokenizer) pretrained and fine-tuned here like the pipeline's. Every run gets the same number of steps
and the same held-out evaluation (500 prompts, greedy): on-policy distillation (`rlsys distill
distill.on_policy=true`), GRPO alone (`rlsys grpo`, the same batch of 32 prompts x 8 samples), and offline
distillation (`rlsys distill`: the teacher's verified answers, then SFT). Each run is its own process, timed
whole. Prints each run's accuracy curve, wall time and the first evaluated step at --target; writes
outputs/on_policy_distill/result.json. Without the pipeline's checkpoints it runs `rlsys pipeline` first.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from runs import timed_run  # benchmarks/runs.py, next to this script

OUT = Path("outputs/on_policy_distill")
EVAL = ["trainer.eval_samples=500"]


def rlsys(name: str, job: str, *overrides: str) -> float:
    command = [sys.executable, "-m", "rlsys", job, f"output_dir={OUT / name}", "logger=[jsonl]", "resume=false",
               *overrides]
    return timed_run(name, command, dict(os.environ), OUT / f"{name}.log")


def curve(name: str) -> list[tuple[int, float]]:
    from rlsys.logging import read_metrics

    return [(row["step"], row["eval/accuracy"]) for row in read_metrics(str(OUT / name))
            if row.get("eval/accuracy") is not None]


def main() -> None:
    parser = argparse.ArgumentParser(usage=__doc__.split("\n\n")[1])
    parser.add_argument("--pipeline", default="outputs/pipeline", help="a finished `rlsys pipeline` output_dir")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.88)
    args = parser.parse_args()
    final = lambda stage: Path(args.pipeline) / stage / "checkpoints" / "final"
    OUT.mkdir(parents=True, exist_ok=True)
    if not (final("sft").exists() and final("grpo").exists()):
        timed_run("pipeline", [sys.executable, "-m", "rlsys", "pipeline", f"output_dir={args.pipeline}"],
                  dict(os.environ), OUT / "pipeline.log")
    teacher = f"distill.teacher={final('grpo')}"
    budget = [f"trainer.max_steps={args.steps}", f"trainer.eval_every={args.eval_every}", *EVAL]
    grpo = ["trainer.batch_size=32", "algo.n_samples=8"]  # the on-policy preset's batch (GRPO's own)
    wall = {}
    wall["on_policy"] = rlsys("on_policy", "distill", "distill.on_policy=true", teacher,
                              f"model.path={final('sft')}", *budget)
    wall["grpo"] = rlsys("grpo", "grpo", f"model.path={final('sft')}", *grpo, *budget)
    wall["offline"] = rlsys("offline", "distill", teacher, f"model.path={final('sft')}", *budget)
    # the smaller student: one layer instead of two, pretrained and fine-tuned with the pipeline's presets
    rlsys("small_pretrain", "pretrain", "model.tiny.num_layers=1")
    rlsys("small_sft", "sft", f"model.path={OUT / 'small_pretrain' / 'checkpoints' / 'final'}")
    small = f"model.path={OUT / 'small_sft' / 'checkpoints' / 'final'}"
    wall["small_on_policy"] = rlsys("small_on_policy", "distill", "distill.on_policy=true", teacher, small, *budget)
    wall["small_grpo"] = rlsys("small_grpo", "grpo", small, *grpo, *budget)

    results = {name: {"wall_s": seconds, "accuracy": curve(name)} for name, seconds in wall.items()}
    print(f"\nheld-out accuracy (500 prompts, greedy) every {args.eval_every} steps; teacher {final('grpo')}")
    print(f"{'':<17}{'wall s':>7}  {'first at ' + str(args.target):>12}  curve")
    for name, r in results.items():
        reached = next((step for step, acc in r["accuracy"] if acc >= args.target), None)
        r["first_step_at_target"] = reached
        points = " ".join(f"{acc:.3f}" for _, acc in r["accuracy"])
        print(f"{name:<17}{r['wall_s']:>7.0f}  {str(reached or '-'):>12}  {points}")
    (OUT / "result.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
