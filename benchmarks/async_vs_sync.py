"""The pipeline's GRPO stage synchronous and asynchronous (rollout.max_staleness K = 1 and 2), in one run.

    python benchmarks/async_vs_sync.py model.path=outputs/pipeline/sft/checkpoints/final [--ks 1,2]
                                       [--async-layout "rollout.num_engines=1 cluster.policy.cpus_per_rank=1"]
                                       [overrides...]

Each run is `rlsys grpo` with the preset's settings from the same SFT checkpoint, as its own process, timed
whole. The synchronous run uses the preset's layout; async runs add --async-layout, which on a machine with few
cores splits them between sampler and trainer (both run at once). Prints wall time, held-out accuracy,
the median step breakdown and the speedup over the synchronous run; writes outputs/async_vs_sync/result.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from runs import breakdown, run_summary, timed_run  # benchmarks/runs.py, next to this script

OUT = Path("outputs/async_vs_sync")
CPU_LAYOUT = "rollout.num_engines=1 cluster.policy.cpus_per_rank=1"


def run(name: str, overrides: list[str]) -> dict:
    out = OUT / name
    command = [sys.executable, "-m", "rlsys", "grpo", f"output_dir={out}", "logger=[jsonl]", "resume=false",
               *overrides]
    wall = timed_run(name, command, dict(os.environ), OUT / f"{name}.log")
    return {"wall_s": wall, **run_summary(str(out))}


def main() -> None:
    parser = argparse.ArgumentParser(usage=__doc__.split("\n\n")[1])
    parser.add_argument("--ks", default="1,2", help="staleness bounds to run (comma-separated)")
    parser.add_argument("--async-layout", default=CPU_LAYOUT, help="overrides added to every async run")
    args, extra = parser.parse_known_args()
    if not any(o.startswith("model.path=") for o in extra):
        sys.exit("async_vs_sync: needs an SFT checkpoint: run `rlsys pipeline` first or pass model.path=DIR")
    OUT.mkdir(parents=True, exist_ok=True)
    results = {"sync": run("sync", extra)}
    for k in [int(k) for k in args.ks.split(",") if k]:
        results[f"async_k{k}"] = run(f"async_k{k}", [*args.async_layout.split(), f"rollout.max_staleness={k}", *extra])

    sync = results["sync"]
    print(f"\nGRPO preset from the same SFT checkpoint; async layout: {args.async_layout}")
    print(f"{'':<10}{'wall s':>9}{'accuracy':>10}{'speedup':>9}  median step (s)")
    for name, r in results.items():
        r["speedup"] = sync["wall_s"] / r["wall_s"]
        r["accuracy_diff_points"] = 100 * (r["accuracy"] - sync["accuracy"])
        print(f"{name:<10}{r['wall_s']:>9.1f}{r['accuracy']:>10.3f}{r['speedup']:>8.2f}x  {breakdown(r['median_s'])}")
    (OUT / "result.json").write_text(json.dumps({"async_layout": args.async_layout, **results}, indent=2))
    print(f"-> {OUT / 'result.json'}")


if __name__ == "__main__":
    main()
