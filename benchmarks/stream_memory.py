"""Resident memory of streamed pretraining as the corpus grows: the driver's and each rank's, from start to end.

    python benchmarks/stream_memory.py [--corpus-gb 2] [--small-mb 20] [--steps 600] [overrides...]

Writes a generated corpus of --corpus-gb (jsonl shards of prose, made once in outputs/stream_memory/) and runs
streamed `rlsys pretrain` on it on two ranks, then the same job on a --small-mb corpus. Every 2 s it samples
the resident memory of the driver process, of each TrainWorker actor and of Ray Data's tokenising workers.
Prints, for both corpora, the driver's peak and each rank's memory a fifth of the way in (warm) and at the end,
and the loss at the start and the end. Writes result.json (with every sample) next to the corpora.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from corpus import prose_model, write_corpus  # benchmarks/, next to this script

OUT = Path("outputs/stream_memory")
MB = 2**20


class Sampler(threading.Thread):
    """RSS of the driver and of every TrainWorker / tokenising worker process, every `every` seconds."""

    def __init__(self, driver_pid: int, every: float = 2.0):
        super().__init__(daemon=True)
        self.driver, self.every, self.samples, self.done = driver_pid, every, [], threading.Event()

    def run(self) -> None:
        began = time.time()
        while not self.done.is_set():
            ranks, tokenisers = {}, 0.0
            for proc in psutil.process_iter(["pid", "cmdline"]):
                command = " ".join(proc.info["cmdline"] or [])
                try:
                    if "TrainWorker" in command:
                        ranks[proc.info["pid"]] = proc.memory_info().rss / MB
                    elif "ray::MapBatches" in command or "encode_pieces" in command:
                        tokenisers += proc.memory_info().rss / MB
                except psutil.NoSuchProcess:
                    continue
            try:
                driver = psutil.Process(self.driver).memory_info().rss / MB
            except psutil.NoSuchProcess:
                break
            self.samples.append({"t": time.time() - began, "driver": driver, "ranks": ranks, "tokenisers": tokenisers})
            self.done.wait(self.every)


def run(corpus: Path, model: Path, out: Path, steps: int, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "rlsys", "pretrain", f"output_dir={out}", f"model.path={model}",
               f"data.train={corpus}", "data.streaming=true", f"trainer.max_steps={steps}", "trainer.batch_size=32", "data.max_length=128",
               "cluster.policy.num_ranks=2", "logger=[jsonl]", "resume=false", "trainer.eval_samples=0", *extra]
    print(f"running on {corpus} ({sum(p.stat().st_size for p in corpus.glob('*.jsonl')) / 2**30:.2f} GB)", flush=True)
    with open(out.with_suffix(".log"), "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(process.pid)
        sampler.start()
        code = process.wait()
        sampler.done.set()
        sampler.join()
    if code:
        sys.exit(f"rlsys pretrain failed (exit {code}); see {out.with_suffix('.log')}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [s for s in sampler.samples if s["ranks"]]
    first = trained[len(trained) // 5]  # a fifth of the way: models, optimizers and pipelines are warm
    last = trained[-1]
    return {"driver_peak_mb": max(s["driver"] for s in sampler.samples),
            "ranks_warm_mb": sorted(first["ranks"].values()), "ranks_end_mb": sorted(last["ranks"].values()),
            "ranks_peak_mb": max(max(s["ranks"].values()) for s in trained),
            "tokenisers_peak_mb": max(s["tokenisers"] for s in trained),
            "loss_first": sum(r["train/loss"] for r in rows[:10]) / 10,
            "loss_last": sum(r["train/loss"] for r in rows[-10:]) / 10,
            "tokens": sum(r["perf/tokens_per_s"] * r["perf/step_s"] for r in rows), "samples": sampler.samples}


def main() -> None:
    parser = argparse.ArgumentParser(usage=__doc__.split("\n\n")[1])
    parser.add_argument("--corpus-gb", type=float, default=2.0)
    parser.add_argument("--small-mb", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=600)
    args, extra = parser.parse_known_args()
    OUT.mkdir(parents=True, exist_ok=True)
    model = prose_model(OUT / "model", hidden_size=128, num_layers=2, vocab_size=1024)
    results = {}
    for name, megabytes, shards in (("large", args.corpus_gb * 1024, 32), ("small", args.small_mb, 2)):
        corpus = write_corpus(OUT / f"corpus_{name}", megabytes, shards=shards)
        results[name] = run(corpus, model, OUT / f"run_{name}", args.steps, extra)
    print(f"\nstreamed pretraining, {args.steps} steps of 32 x 128 tokens, two ranks (resident memory, MB)")
    print(f"{'corpus':<8}{'driver peak':>12}{'ranks warm':>22}{'ranks at end':>18}{'loss':>16}")
    for name, r in results.items():
        ranks = lambda values: "/".join(f"{v:.0f}" for v in values)
        print(f"{name:<8}{r['driver_peak_mb']:>12.0f}{ranks(r['ranks_warm_mb']):>22}"
              f"{ranks(r['ranks_end_mb']):>18}{r['loss_first']:>8.2f} -> {r['loss_last']:.2f}")
    (OUT / "result.json").write_text(json.dumps({"args": vars(args), **results}, indent=2))
    print(f"-> {OUT / 'result.json'}")


if __name__ == "__main__":
    main()
