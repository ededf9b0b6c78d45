"""Time one trainer -> vLLM weight sync of a Qwen2.5-0.5B-shaped model, by every transport this machine has.

    python benchmarks/weight_sync.py [--layers 24] [--repeats 3]

The model has Qwen2.5-0.5B's shapes (hidden 896, 14 heads of 64, 2 KV heads, MLP 4864, vocab 151936, tied
embeddings) and random weights, so no download is needed. One policy rank and one vLLM engine start on this
machine's devices; each transport syncs `--repeats` times and the median is printed: object_store (full weights
through Ray's object store) always, adapter (a rank-16 LoRA on the attention projections) always, nccl on GPUs.
After each transport a prompt's logprobs are compared between trainer and engine, so a fast but wrong sync shows.
Writes outputs/weight_sync/result.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

OUT = Path("outputs/weight_sync")


def build_model(folder: Path, layers: int, seed: int = 0, embed_scale: float = 1.0) -> str:
    """Qwen2.5-0.5B's shapes, random weights, the tiny model's tokenizer (ids stay below its vocabulary).
    embed_scale > 1 sharpens the random model's next-token distributions (its embeddings are the output layer)."""
    import torch
    import transformers

    from rlsys.data.task import tokenizer_texts
    from rlsys.models.tiny import build_tiny_model

    build_tiny_model(folder, texts=tokenizer_texts())  # tokenizer, chat template, generation config
    config = transformers.Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                      num_hidden_layers=layers, num_attention_heads=14, num_key_value_heads=2,
                                      max_position_embeddings=512, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(embed_scale)
    model.save_pretrained(folder)
    return str(folder)


def start(model: str, device: str, kind: str):
    from omegaconf import OmegaConf

    from rlsys.actors.group import Placement, create_placement
    from rlsys.actors.rollout import RolloutGroup
    from rlsys.config.schema import JobConfig
    from rlsys.roles.engines import rollout_spec
    from rlsys.roles.train_group import start_train_group

    cfg = OmegaConf.structured(JobConfig)
    cfg.model.lora.enabled, cfg.model.lora.r = kind == "adapter", 16
    cfg.data.max_length = 256
    gpus = 1 if device == "cuda" else 0
    rollout = RolloutGroup("vllm", rollout_spec(cfg, model, device, False, weight_sync=kind),
                           Placement(create_placement(1, gpus=gpus, cpus=1), [0], num_gpus=gpus, num_cpus=1),
                           env={"VLLM_CPU_OMP_THREADS_BIND": "nobind"})
    placement = Placement(create_placement(1, gpus=gpus, cpus=1), [0], num_gpus=gpus, num_cpus=1)
    policy = start_train_group("policy", cfg, model, device, trainable=kind == "adapter", placement=placement)
    rollout.wait_ready()
    return policy, rollout


def logprob_gap(policy, rollout) -> float:
    sequence = list(range(5, 37))
    trainer = policy.logprobs({"prompt_ids": [sequence[:8]], "response_ids": [sequence[8:]]})["logp"][0]
    engine = rollout.prompt_logprobs([sequence])[0][0][7:]
    return max(abs(a - b) for a, b in zip(trainer, engine))


def measure(model: str, device: str, kind: str, repeats: int) -> dict:
    from rlsys.actors.weight_sync import WeightSync

    policy, rollout = start(model, device, kind)
    sync = WeightSync(kind)
    times, stats = [], {}
    try:
        for _ in range(repeats + 1):  # the first opens connections (NCCL) and warms caches
            began = time.perf_counter()
            stats = policy.send_weights(rollout.engines, sync)
            times.append(time.perf_counter() - began)
        gap = logprob_gap(policy, rollout)
    finally:
        policy.kill()
        rollout.kill()
    return {"median_s": statistics.median(times[1:]), "first_s": times[0], "mb": stats["sync_mb"],
            "max_logprob_gap": gap}


def main() -> None:
    parser = argparse.ArgumentParser(usage=__doc__.split("\n\n")[1])
    parser.add_argument("--layers", type=int, default=24, help="decoder layers (24 as in Qwen2.5-0.5B)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import ray
    import torch

    from rlsys.actors.cluster import QUIET_ENV

    device = "cuda" if torch.cuda.is_available() else "cpu"
    OUT.mkdir(parents=True, exist_ok=True)
    model = build_model(OUT / "model", args.layers)
    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False, runtime_env={"env_vars": QUIET_ENV})
    kinds = ["object_store", "adapter"] + (["nccl"] if device == "cuda" else [])
    results = {kind: measure(model, device, kind, args.repeats) for kind in kinds}
    print(f"\nweight sync, Qwen2.5-0.5B shapes ({args.layers} layers), {device}, median of {args.repeats}")
    print(f"{'':<14}{'MB':>9}{'s':>9}{'GB/s':>8}{'first s':>9}{'logp gap':>10}")
    for kind, r in results.items():
        print(f"{kind:<14}{r['mb']:>9.1f}{r['median_s']:>9.3f}{r['mb'] / 1024 / r['median_s']:>8.2f}"
              f"{r['first_s']:>9.2f}{r['max_logprob_gap']:>10.1e}")
    (OUT / "result.json").write_text(json.dumps({"device": device, "layers": args.layers, **results}, indent=2))
    print(f"-> {OUT / 'result.json'}")


if __name__ == "__main__":
    main()
