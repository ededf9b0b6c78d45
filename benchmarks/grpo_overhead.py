"""GRPO step time against its parts done bare, in one run on the same tiny model.

    python benchmarks/grpo_overhead.py [overrides...]      e.g. model.path=outputs/sft/checkpoints/final

Runs `rlsys grpo` for a few steps, then times, outside rlsys, (a) vLLM generating the same prompts x n with
the same sampling and (b) a plain PyTorch loop training on the same sequences (same micro-batches, one
process, no Ray, no DeepSpeed). Prints the step-time breakdown and the ratio
    rlsys step time / (bare generation + bare training).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time

import torch

BREAKDOWN = ("gen", "score", "ref", "train", "sync")


def bare_generation(model_path: str, prompts: list[list[int]], n: int, max_tokens: int, temperature: float) -> float:
    import ray

    from rlsys.actors.group import Placement, create_placement
    from rlsys.actors.rollout import RolloutGroup, RolloutSpec, Sampling

    placement = Placement(create_placement(1, gpus=0, cpus=1), [0], num_gpus=0, num_cpus=1)
    group = RolloutGroup("vllm", RolloutSpec(model_path=model_path, device="cpu", max_model_len=256,
                                             gpu_memory_utilization=0.1), placement)
    engine = group.engines[0]
    sampling = Sampling(n=n, temperature=temperature, max_new_tokens=max_tokens)
    seeds = lambda base: [[base + i * n + j for j in range(n)] for i in range(len(prompts))]
    ray.get(engine.generate.remote(prompts, sampling, seeds(0)))  # warm-up
    began = time.perf_counter()
    ray.get(engine.generate.remote(prompts, sampling, seeds(len(prompts) * n)))
    elapsed = time.perf_counter() - began
    group.kill()
    return elapsed


def bare_training(model_path: str, sequences: list[list[int]], max_tokens: int, ranks: int, updates: int) -> float:
    """Each rank's share of the sequences in micro-batches of at most max_tokens, padded (one process)."""
    from transformers import AutoModelForCausalLM

    from rlsys.data.collate import pad

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    per_rank = sequences[: len(sequences) // ranks]
    micro = max(1, max_tokens // max(map(len, per_rank)))
    chunks = [per_rank[i:i + micro] for i in range(0, len(per_rank), micro)]
    began = 0.0
    for update in range(updates + 1):  # the first update warms the allocator up and is not timed
        if update == 1:
            began = time.perf_counter()
        for chunk in chunks:
            ids = pad(chunk, 0)
            logits = model(input_ids=ids, attention_mask=(ids != 0).long()).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - began) / updates


def main(overrides: list[str]) -> None:
    from rlsys.config.compose import compose_job
    from rlsys.config.validate import to_typed
    from rlsys.data.job_data import encode_prompts, prompt_rows
    from rlsys.logging import read_metrics
    from rlsys.models.builders import load_tokenizer
    from rlsys.trainers import rl

    out = tempfile.mkdtemp(prefix="rlsys_bench_")
    # one generation round a step, so the bare baseline generates exactly what a step does
    cfg = to_typed(compose_job("grpo", [f"output_dir={out}", "trainer.max_steps=12", "trainer.eval_every=0",
                                        "trainer.eval_samples=16", "logger=[jsonl]", "algo.dynamic_sampling=false",
                                        *overrides]))
    rl.train(cfg)
    rows = read_metrics(out)[-8:]  # steady state
    step = statistics.median(r["perf/step_s"] for r in rows)
    parts = {name: statistics.median(r[f"perf/{name}_s"] for r in rows) for name in BREAKDOWN}
    gen_tokens = statistics.median(r["response/length_mean"] for r in rows) * cfg.trainer.batch_size * cfg.algo.n_samples

    model_path = cfg.model.path or f"{out}/base_model"
    tokenizer = load_tokenizer(model_path)
    prompts = encode_prompts(cfg, tokenizer, prompt_rows(cfg, "train")[: cfg.trainer.batch_size])
    gen = bare_generation(model_path, prompts, cfg.algo.n_samples, cfg.rollout.max_new_tokens, cfg.rollout.temperature)
    length = int(statistics.median(r["response/length_mean"] for r in rows))
    sequences = [p + [1] * length for p in prompts for _ in range(cfg.algo.n_samples)]
    updates = cfg.algo.epochs * (cfg.trainer.batch_size // (cfg.algo.mini_batch_size or cfg.trainer.batch_size))
    train = bare_training(model_path, sequences, cfg.trainer.max_tokens_per_micro_batch, cfg.cluster.policy.num_ranks,
                          updates)

    print(f"\nGRPO on {model_path}: {cfg.trainer.batch_size} prompts x {cfg.algo.n_samples} samples, "
          f"~{gen_tokens:.0f} generated tokens per step, {cfg.cluster.policy.num_ranks} policy ranks")
    print(f"{'part':<8}{'seconds':>10}{'share':>8}")
    for name, seconds in parts.items():
        print(f"{name:<8}{seconds:>10.3f}{seconds / step:>8.0%}")
    print(f"{'step':<8}{step:>10.3f}")
    print(f"bare vLLM generation {gen:.3f}s + bare PyTorch training {train:.3f}s = {gen + train:.3f}s")
    print(f"ratio step / (bare generation + bare training) = {step / (gen + train):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
