"""Soak: a long GRPO run on CPU, watching every actor's resident memory and the Ray object store.

    python benchmarks/soak.py [overrides...]      default: 200 steps; e.g. trainer.max_steps=500 model.path=...

Samples every few seconds into output_dir/soak.jsonl and prints, per actor, the RSS after the first step and
at the end, and the growth. Memory that grows step after step (a leaked object ref, a cache that is never
cleared) shows up here long before it kills a real run.
"""
from __future__ import annotations

import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

SAMPLE_EVERY_S = 5.0


def object_store_mib(gcs_address: str) -> float:
    from ray._private.internal_api import memory_summary

    found = re.search(r"Plasma memory usage (\d+) MiB", memory_summary(address=gcs_address, stats_only=True))
    return float(found.group(1)) if found else 0.0


def actor_rss_mib(out: Path) -> dict[str, float]:
    """RSS of each actor named in placement.json (role/index), and of this driver process."""
    import os

    import psutil

    rss = {"driver": psutil.Process(os.getpid()).memory_info().rss / 2**20}
    placement = out / "placement.json"
    if placement.exists():
        for role, actors in json.loads(placement.read_text()).items():
            for index, actor in enumerate(actors):
                try:
                    rss[f"{role}/{index}"] = psutil.Process(actor["pid"]).memory_info().rss / 2**20
                except psutil.NoSuchProcess:
                    pass
    return rss


def last_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])["step"] if lines else 0


def monitor(out: Path, gcs_address: str, stop: threading.Event, samples: list[dict]) -> None:
    while not stop.is_set():
        step = last_step(out)
        if step >= 1:
            sample = {"step": step, "time": time.time(), "object_store_mib": object_store_mib(gcs_address),
                      "rss_mib": actor_rss_mib(out)}
            samples.append(sample)
            with open(out / "soak.jsonl", "a") as handle:
                handle.write(json.dumps(sample) + "\n")
        stop.wait(SAMPLE_EVERY_S)


def main(overrides: list[str]) -> None:
    import ray

    from rlsys.actors.cluster import QUIET_ENV
    from rlsys.config.compose import compose_job
    from rlsys.launchers.run import run_config

    out = Path(tempfile.mkdtemp(prefix="rlsys_soak_"))
    context = ray.init(address="local", num_cpus=8, include_dashboard=False, configure_logging=False,
                       runtime_env={"env_vars": QUIET_ENV})
    cfg = compose_job("grpo", [f"output_dir={out}", "logger=[jsonl]", "trainer.max_steps=200", "trainer.eval_every=0",
                               "trainer.eval_samples=50", *overrides])
    samples: list[dict] = []
    stop = threading.Event()
    watcher = threading.Thread(target=monitor, args=(out, context.address_info["gcs_address"], stop, samples))
    watcher.start()
    began = time.perf_counter()
    try:
        run_config(cfg)
        # one last sample with the actors still up is taken by the watcher; the run ends by killing them
    finally:
        stop.set()
        watcher.join()
        ray.shutdown()
    elapsed = time.perf_counter() - began
    alive = [s for s in samples if len(s["rss_mib"]) > 1]
    first, final = alive[0], alive[-1]
    print(f"\nsoak: {last_step(out)} GRPO steps in {elapsed / 60:.1f} min, {len(samples)} samples -> {out}/soak.jsonl")
    print(f"{'process':<14}{'RSS at step ' + str(first['step']):>18}{'RSS at step ' + str(final['step']):>18}"
          f"{'growth':>10}")
    for name in first["rss_mib"]:
        if name in final["rss_mib"]:
            a, b = first["rss_mib"][name], final["rss_mib"][name]
            print(f"{name:<14}{a:>15.0f} MiB{b:>15.0f} MiB{(b - a) / a:>+10.1%}")
    # the store holds a few MiB in flight at most (weight buckets, batches): an absolute change says more than a ratio
    a, b = first["object_store_mib"], final["object_store_mib"]
    peak = max(s["object_store_mib"] for s in samples)
    print(f"{'object store':<14}{a:>15.0f} MiB{b:>15.0f} MiB{b - a:>+7.0f} MiB  (peak {peak:.0f} MiB)")


if __name__ == "__main__":
    main(sys.argv[1:])
