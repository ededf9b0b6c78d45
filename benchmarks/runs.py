"""What the benchmarks share: a job run as its own timed process, and what its metrics say."""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed_run(side: str, command: list[str], env: dict[str, str], log: Path) -> float:
    """Wall seconds of the whole process (start-up included); its output goes to `log`, the tail is shown if
    it fails."""
    print(f"{side}: running, log in {log}", flush=True)
    began = time.perf_counter()
    with open(log, "w") as handle:
        code = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - began
    if code != 0:
        print("".join(log.read_text().splitlines(keepends=True)[-40:]))
        sys.exit(f"{side} failed (exit {code}) after {wall:.0f}s")
    return wall


def run_summary(output_dir: str) -> dict:
    """The last held-out accuracy of a run and the median of each of its perf/*_s timings."""
    from rlsys.logging import read_metrics

    rows = read_metrics(output_dir)
    accuracy = next(row["eval/accuracy"] for row in reversed(rows) if row.get("eval/accuracy") is not None)
    keys = sorted({k for row in rows for k in row if k.startswith("perf/") and k.endswith("_s") and "_per_" not in k
                   and not k.startswith("perf/startup")})  # start-up is reported apart (timings.json)
    return {"accuracy": accuracy,
            "median_s": {k: statistics.median(row[k] for row in rows if row.get(k) is not None) for k in keys}}


def breakdown(median_s: dict[str, float]) -> str:
    return ", ".join(f"{k.removeprefix('perf/')} {v:.3f}" for k, v in median_s.items())
