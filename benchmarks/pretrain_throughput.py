"""`rlsys pretrain` (streamed data, one rank) against a plain PyTorch loop: same model, corpus, batch and optimizer.

    python benchmarks/pretrain_throughput.py [--steps 150] [--corpus-mb 64] [--hidden 256] [--layers 4]
                                             [--block 256] [--batch 16] [--only rlsys|torch] [overrides...]

The corpus (jsonl shards of generated prose) and a model whose tokenizer knows that prose are made on first use
in outputs/pretrain_throughput/. The plain loop is what one writes by hand: read the shards in order, tokenise
on the spot, pack into blocks, AdamW with the same settings, all threads of the machine. rlsys runs one
DeepSpeed rank in a Ray actor with all those threads while Ray Data tasks tokenise ahead. Each side's tokens/s is
the median over steps after the first 10 (start-up excluded; whole-process wall times are printed as well).
Prints both, the ratio rlsys / plain and each side's loss at the start and end; writes result.json.
On a GPU machine add cluster.device=cuda (the plain loop then runs on the GPU too).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from corpus import prose_model, write_corpus  # benchmarks/, next to this script
from runs import timed_run

OUT = Path("outputs/pretrain_throughput")
WARMUP = 10


def plain_loop(model_dir: Path, corpus: Path, args, device: str) -> dict:
    """Hand-written pretraining: tokenise, pack, forward, backward, AdamW."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device == "cuda")

    def blocks():
        stream: list[int] = []
        for path in sorted(corpus.glob("*.jsonl")):
            with open(path) as handle:
                texts = []
                for line in handle:
                    texts.append(json.loads(line)["text"])
                    if len(texts) == 64:
                        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
                            stream.extend(ids + [tokenizer.eos_token_id])
                            while len(stream) >= args.block:
                                yield stream[:args.block]
                                stream = stream[args.block:]
                        texts = []

    source, seconds, losses = blocks(), [], []
    for _ in range(args.steps):
        began = time.perf_counter()
        batch = torch.tensor([next(source) for _ in range(args.batch)], device=device)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        seconds.append(time.perf_counter() - began)
    tokens = args.batch * args.block
    return {"tokens_per_s": tokens / statistics.median(seconds[WARMUP:]), "loss_first": losses[0],
            "loss_last": statistics.mean(losses[-10:])}


def run_rlsys(model_dir: Path, corpus: Path, args, extra: list[str]) -> dict:
    from rlsys.logging import read_metrics

    out = OUT / "rlsys"
    cores = os.cpu_count() or 1
    command = [sys.executable, "-m", "rlsys", "pretrain", f"output_dir={out}", f"model.path={model_dir}",
               f"data.train={corpus}", "data.streaming=true", f"data.max_length={args.block}",
               f"trainer.batch_size={args.batch}", f"trainer.max_steps={args.steps}", f"trainer.lr={args.lr}",
               "trainer.warmup_steps=0", "trainer.lr_schedule=constant", f"trainer.max_tokens_per_micro_batch="
               f"{args.batch * args.block}", "trainer.eval_samples=0", "cluster.policy.num_ranks=1",
               f"cluster.policy.cpus_per_rank={cores}", "deepspeed.zero_stage=1", "logger=[jsonl]", "resume=false",
               *extra]
    wall = timed_run("rlsys", command, dict(os.environ), OUT / "rlsys.log")
    rows = read_metrics(str(out))
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    return {"tokens_per_s": statistics.median(r["perf/tokens_per_s"] for r in rows[WARMUP:] if "perf/tokens_per_s" in r),
            "loss_first": losses[0], "loss_last": statistics.mean(losses[-10:]), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(usage=__doc__.split("\n\n")[1])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--corpus-mb", type=float, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--only", choices=["rlsys", "torch"])
    parser.add_argument("--_plain", dest="plain", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    corpus = write_corpus(OUT / "corpus", args.corpus_mb)
    model_dir = prose_model(OUT / f"model_h{args.hidden}_l{args.layers}", hidden_size=args.hidden,
                            num_layers=args.layers)
    device = "cuda" if "cluster.device=cuda" in extra else "cpu"
    if args.plain:  # the plain loop in a process of its own, like rlsys
        Path(args.plain).write_text(json.dumps(plain_loop(model_dir, corpus, args, device)))
        return
    results = {}
    if args.only != "torch":
        results["rlsys"] = run_rlsys(model_dir, corpus, args, extra)
    if args.only != "rlsys":
        result = OUT / "plain.json"
        wall = timed_run("plain", [sys.executable, __file__, *sys.argv[1:], "--_plain", str(result)], dict(os.environ),
                         OUT / "plain.log")
        results["plain"] = {**json.loads(result.read_text()), "wall_s": wall}
    n_params = f"hidden {args.hidden}, {args.layers} layers"
    print(f"\npretraining, {args.steps} steps of {args.batch} x {args.block} tokens, {n_params}, {device}")
    print(f"{'':<8}{'tokens/s':>12}{'wall s':>10}{'loss first':>12}{'loss last':>11}")
    for side, r in results.items():
        print(f"{side:<8}{r['tokens_per_s']:>12,.0f}{r['wall_s']:>10.1f}{r['loss_first']:>12.3f}{r['loss_last']:>11.3f}")
    if len(results) == 2:
        results["ratio"] = results["rlsys"]["tokens_per_s"] / results["plain"]["tokens_per_s"]
        print(f"rlsys / plain PyTorch tokens/s: {results['ratio']:.2f}")
    (OUT / "result.json").write_text(json.dumps({"args": vars(args), **results}, indent=2))
    print(f"-> {OUT / 'result.json'}")


if __name__ == "__main__":
    main()
