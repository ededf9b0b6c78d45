"""The GPU paths for real, in a few minutes: the first thing to run on a machine with GPUs. One line per check.

    python benchmarks/gpu_smoke.py [--layers 24] [--steps 4] [--repeats 3]

    device      the GPUs; torch, vLLM, DeepSpeed and Ray versions
    sync ipc    policy and vLLM engine sharing GPU 0 (CUDA IPC, the colocated hand-off): seconds per update,
                MB sent, trainer-vs-engine logprob gap before and after the sync, peak GPU memory
    sync nccl   policy on GPU 0, engine on GPU 1 over NCCL (two GPUs or more)
    grpo ipc    `rlsys grpo` colocated on one GPU for --steps steps: sync and step seconds, peak GPU memory, the
                final checkpoint written
    grpo nccl   the same on two GPUs, engine apart (two GPUs or more)

Models have Qwen2.5-0.5B's shapes and random weights (no download). Without a GPU the same checks run on CPU over
the object store, 2 layers: a check of the script itself. Results: outputs/gpu_smoke/result.json; each `rlsys`
run's log and metrics under outputs/gpu_smoke/<check>/.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from weight_sync import build_model  # benchmarks/weight_sync.py

OUT = Path("outputs/gpu_smoke")


class PeakMemory:
    """The most GPU memory in use (every process, per nvidia-smi) while the block runs; empty without GPUs."""

    def __enter__(self):
        self.peak: dict[int, int] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self) -> None:
        while not self.done.wait(0.25):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
            except (OSError, subprocess.SubprocessError):
                return
            for gpu, used in enumerate(out.split()):
                self.peak[gpu] = max(self.peak.get(gpu, 0), int(used))

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def text(self) -> str:
        return ("peak GPU MiB " + " ".join(f"{g}:{m}" for g, m in sorted(self.peak.items()))) if self.peak else ""


def device_line(device: str) -> str:
    import deepspeed
    import ray
    import torch
    import vllm

    gpus = [f"{torch.cuda.get_device_name(i)} {torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB"
            for i in range(torch.cuda.device_count())] if device == "cuda" else ["none (CPU self-check)"]
    return (f"{len(gpus) if device == 'cuda' else 0} GPU(s): {', '.join(gpus)}; torch {torch.__version__}, vllm "
            f"{vllm.__version__}, deepspeed {deepspeed.__version__}, ray {ray.__version__}")


def mean_gap(policy, rollout) -> float:
    """Mean |trainer - engine| logprob over a 40-token sequence."""
    sequence = [(7 * i) % 300 + 5 for i in range(48)]
    trainer = policy.logprobs({"prompt_ids": [sequence[:8]], "response_ids": [sequence[8:]]})["logp"][0]
    engine = rollout.prompt_logprobs([sequence])[0][0][7:]
    return statistics.fmean(abs(a - b) for a, b in zip(trainer, engine))


def sync_check(engine_model: str, policy_model: str, device: str, kind: str, repeats: int) -> str:
    """The engine starts with other weights than the policy's; after a sync their logprobs must agree."""
    from omegaconf import OmegaConf

    from rlsys.actors.cluster import shared_placement
    from rlsys.actors.group import Placement, create_placement
    from rlsys.actors.rollout import RolloutGroup
    from rlsys.actors.weight_sync import WeightSync
    from rlsys.config.schema import JobConfig
    from rlsys.roles.engines import rollout_spec
    from rlsys.roles.handoff import DeviceHandoff
    from rlsys.roles.train_group import start_train_group

    colocated = kind in ("ipc", "object_store")
    cfg = OmegaConf.structured(JobConfig)
    cfg.data.max_length, cfg.cluster.colocate = 256, colocated
    gpus = 1 if device == "cuda" else 0

    def own() -> Placement:
        return Placement(create_placement(1, gpus=gpus, cpus=1), [0], num_gpus=gpus, num_cpus=1)

    slots = shared_placement(1, 2, device, cfg.cluster)[1] if colocated else None
    policy = start_train_group("policy", cfg, policy_model, device, trainable=True,
                               placement=slots(1) if slots else own())  # loaded first: vLLM sizes its cache after
    rollout = RolloutGroup("vllm", rollout_spec(cfg, engine_model, device, colocated, weight_sync=kind),
                           slots(1) if slots else own())
    try:
        rollout.wait_ready()
        handoff = DeviceHandoff([policy], rollout, colocated)
        before = mean_gap(policy, rollout)
        sync, times, stats = WeightSync(kind), [], {}
        for _ in range(repeats + 1):  # the first opens the transfer (NCCL's group, IPC's buffer)
            handoff.to_trainers()
            began = time.perf_counter()
            stats = handoff.to_engines(lambda: policy.send_weights(rollout.engines, sync))
            times.append(time.perf_counter() - began)
        after = mean_gap(policy, rollout)
    finally:
        policy.kill()
        rollout.kill()
    ok = after < 0.05 * before
    return (f"{'PASS' if ok else 'FAIL'}: {statistics.median(times[1:]):.3f} s per update with the hand-off "
            f"(first {times[0]:.2f} s), {stats['sync_mb']:.0f} MB; logprob gap {before:.3f} before, {after:.4f} after")


def grpo_check(model: str, out: Path, device: str, colocated: bool, steps: int) -> str:
    """`rlsys grpo` as a user runs it; its figures from metrics.jsonl."""
    command = [sys.executable, "-m", "rlsys", "grpo", f"output_dir={out}", f"model.path={model}",
               f"cluster.device={device}", f"cluster.colocate={str(colocated).lower()}", "rollout.num_engines=1",
               f"trainer.max_steps={steps}", "trainer.eval_every=0", "trainer.batch_size=8", "algo.n_samples=4",
               "logger=[jsonl]"]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "run.log", "w") as log:
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=900)
    if finished.returncode != 0:
        lines = [line for line in (out / "run.log").read_text().splitlines() if line.strip()]
        return f"FAIL: exit {finished.returncode}: {lines[-1] if lines else 'no output'} (log: {out / 'run.log'})"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "perf/step_s" in r]
    sync = statistics.median(r["perf/sync_s"] for r in trained)
    step = statistics.median(r["perf/step_s"] for r in trained[1:] or trained)
    final = (out / "checkpoints" / "final" / "config.json").exists()
    return (f"{'PASS' if final and len(trained) == steps else 'FAIL'}: {len(trained)} steps, sync {sync:.3f} s, "
            f"step {step:.2f} s, final checkpoint {'written' if final else 'MISSING'}")


def main() -> None:
    parser = argparse.ArgumentParser(usage=__doc__.split("\n\n")[1])
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (default 24 on GPU, 2 on CPU)")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="weight syncs timed per transport")
    args = parser.parse_args()
    import ray
    import torch

    from rlsys.actors.cluster import QUIET_ENV
    from rlsys.data.task import tokenizer_texts
    from rlsys.models.tiny import build_tiny_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpus = torch.cuda.device_count()
    layers = args.layers or (24 if device == "cuda" else 2)
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, str] = {}

    def check(name: str, run) -> None:
        began = time.perf_counter()
        with PeakMemory() as memory:
            try:
                line = run()
            except Exception as err:  # noqa: BLE001 - one line per check, whatever breaks
                line = f"FAIL: {type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        results[name] = f"{line}; {memory.text() + '; ' if memory.text() else ''}{time.perf_counter() - began:.0f} s"
        print(f"{name:<10} {results[name]}", flush=True)

    check("device", lambda: device_line(device))
    # the engine starts from model A, the policy from model B: a sync must make the engine's logprobs B's
    engine_model = build_model(OUT / "model_a", layers, seed=0, embed_scale=25.0)
    policy_model = build_model(OUT / "model_b", layers, seed=1, embed_scale=25.0)
    shape = dict(hidden_size=896, num_heads=14, intermediate_size=4864) if device == "cuda" else {}
    grpo_model = str(build_tiny_model(OUT / "grpo_model", texts=tokenizer_texts(), num_layers=layers, **shape))
    ray.init(num_cpus=8, include_dashboard=False, configure_logging=False, runtime_env={"env_vars": QUIET_ENV})
    transports = ["ipc"] + (["nccl"] if gpus >= 2 else []) if device == "cuda" else ["object_store"]
    for kind in transports:
        check(f"sync {kind}", lambda: sync_check(engine_model, policy_model, device, kind, args.repeats))
    ray.shutdown()  # each `rlsys grpo` starts a Ray of its own
    for kind in transports:
        check(f"grpo {kind}", lambda: grpo_check(grpo_model, OUT / f"grpo_{kind}", device, kind != "nccl", args.steps))
    (OUT / "result.json").write_text(json.dumps({"device": device, "layers": layers, **results}, indent=2))
    print(f"-> {OUT / 'result.json'}")
    sys.exit(0 if all(not line.startswith("FAIL") for line in results.values()) else 1)


if __name__ == "__main__":
    main()
