"""TRL's GRPOTrainer against `rlsys grpo`: same SFT checkpoint, data, reward and settings, in one run.

    python benchmarks/vs_trl.py model.path=outputs/pipeline/sft/checkpoints/final [--steps 450] [--only trl|rlsys]
                                [overrides...]

Each side is its own process, timed whole (start-up included): TRL 1.16 with transformers generation on CPU,
installed on first use into outputs/.peers (it is no dependency of rlsys), and `rlsys grpo` with its Ray actors,
vLLM and DeepSpeed. TRL reads its settings from the same composed rlsys config (32 prompts x 8 samples, one
optimizer update a step, no KL, clip 0.2, token-mean loss, group-std advantages), so an override such as
rollout.max_new_tokens=16 applies to both. Both score held-out greedy completions with rlsys's `answer_match`.
Prints both wall times, each split into start-up (process start to the first step), steps (with the evaluation)
and shutdown, both accuracies and the ratio rlsys / TRL; writes outputs/vs_trl/result.json. `--steps` and any
override (trainer.batch_size=, algo.n_samples=) set the shape; without them rlsys runs the layout a user gets.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from runs import breakdown, run_summary, timed_run  # benchmarks/runs.py, next to this script

TRL_VERSION = "1.16.0"
TRL_DIR = Path("outputs/.peers") / f"trl-{TRL_VERSION}"
OUT = Path("outputs/vs_trl")
SETTINGS = ["trainer.batch_size=32", "algo.n_samples=8", "rollout.max_new_tokens=8", "trainer.lr=1.5e-4",
            "algo.kl_coef=0.0", "algo.clip_low=0.2", "algo.clip_high=0.2", "algo.loss_aggregation=token_mean",
            "algo.scale_by_std=true", "algo.dynamic_sampling=false", "trainer.eval_every=0", "logger=[jsonl]",
            "resume=false"]
TRL_LOSS = {"token_mean": "dapo", "seq_mean_token_mean": "grpo", "seq_mean_token_sum_norm": "dr_grpo"}


def greedy(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, chunk: int = 64) -> list[list[int]]:
    """Greedy response ids, left-padded batches, cut after EOS: what rlsys's evaluation generates."""
    import torch

    from rlsys.data.collate import pad

    model.eval()
    responses = []
    for start in range(0, len(prompts), chunk):
        batch = prompts[start:start + chunk]
        ids = pad(batch, tokenizer.pad_token_id, left=True)
        mask = pad([[1] * len(p) for p in batch], 0, left=True)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for row in out[:, ids.shape[1]:].tolist():
            responses.append(row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row)
    return responses


def trl_worker(result_file: str, overrides: list[str]) -> None:
    """The TRL side, in its own process (PYTHONPATH holds TRL): train, evaluate, write the result."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from rlsys.config.compose import compose_job
    from rlsys.config.validate import to_typed
    from rlsys.data.job_data import prompt_rows
    from rlsys.logging.startup import process_started
    from rlsys.models.builders import load_tokenizer
    from rlsys.rewards import answer_match
    from rlsys.trainers.held_out import HeldOut

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = to_typed(compose_job("grpo", overrides))
    a, r, t = cfg.algo, cfg.rollout, cfg.trainer

    def reward(prompts, completions, answer, **_):  # conversational: each completion is [assistant message]
        return answer_match([""] * len(completions), [c[-1]["content"] for c in completions], answer)

    args = GRPOConfig(
        output_dir=str(OUT / "trl"), use_cpu=True, bf16=False, fp16=False, seed=cfg.seed, report_to="none",
        save_strategy="no", eval_strategy="no", logging_steps=t.max_steps, disable_tqdm=True,
        gradient_checkpointing=cfg.model.gradient_checkpointing, max_steps=t.max_steps,
        # one generation of batch_size prompts x n_samples a step, trained on in one optimizer update
        per_device_train_batch_size=t.batch_size * a.n_samples, gradient_accumulation_steps=1, steps_per_generation=1,
        num_iterations=a.epochs, num_generations=a.n_samples, max_completion_length=r.max_new_tokens,
        temperature=r.temperature, top_p=r.top_p, top_k=max(r.top_k, 0),
        learning_rate=t.lr, lr_scheduler_type=t.lr_schedule, warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay, max_grad_norm=t.grad_clip,
        adam_beta1=t.adam_betas[0], adam_beta2=t.adam_betas[1], adam_epsilon=t.adam_eps,
        beta=a.kl_coef, epsilon=a.clip_low, epsilon_high=a.clip_high, loss_type=TRL_LOSS[a.loss_aggregation],
        scale_rewards="group" if a.scale_by_std else "none")
    tokenizer = load_tokenizer(cfg.model.path)
    model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=torch.float32)  # rlsys trains fp32 on CPU
    train = Dataset.from_list([{"prompt": row["messages"], "answer": str(row["answer"])}
                               for row in prompt_rows(cfg, "train")])
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=train, processing_class=tokenizer)
    began = time.time()
    trainer.train()
    trained = trainer.accelerator.unwrap_model(trainer.model)
    metrics, _ = HeldOut(cfg, tokenizer)(lambda prompts: greedy(trained, tokenizer, prompts, r.max_new_tokens))
    # start-up: from the process start to the first step; run: training and the held-out evaluation
    Path(result_file).write_text(json.dumps({"accuracy": metrics["eval/accuracy"],
                                             "startup_s": began - process_started(), "run_s": time.time() - began}))


def run_trl(overrides: list[str]) -> dict:
    if not (TRL_DIR / "trl").is_dir():
        print(f"installing trl=={TRL_VERSION} into {TRL_DIR}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(TRL_DIR), "--no-deps",
                        f"trl=={TRL_VERSION}"], check=True)
    result = OUT / "trl_result.json"
    path = os.pathsep.join(filter(None, [str(TRL_DIR.resolve()), os.environ.get("PYTHONPATH")]))
    wall = timed_run("trl", [sys.executable, __file__, "--_trl-worker", str(result), *overrides],
                     {**os.environ, "PYTHONPATH": path}, OUT / "trl.log")
    parts = json.loads(result.read_text())
    return {"wall_s": wall, **parts, "shutdown_s": wall - parts["startup_s"] - parts["run_s"]}


def run_rlsys(overrides: list[str]) -> dict:
    wall = timed_run("rlsys", [sys.executable, "-m", "rlsys", "grpo", *overrides], dict(os.environ),
                     OUT / "rlsys.log")
    output_dir = [o.split("=", 1)[1] for o in overrides if o.startswith("output_dir=")][-1]
    timings = json.loads((Path(output_dir) / "timings.json").read_text())
    startup, run = timings["perf/startup_s"], timings["perf/run_s"]
    return {"wall_s": wall, "startup_s": startup, "run_s": run, "shutdown_s": wall - startup - run,
            **run_summary(output_dir)}


def report(results: dict[str, dict], steps: int) -> None:
    print(f"\nGRPO, {steps} steps, same SFT checkpoint, data, reward and settings")
    print(f"{'':<8}{'wall s':>10}{'start-up':>10}{'steps':>10}{'shutdown':>10}{'accuracy':>10}")
    for side, r in results.items():
        print(f"{side:<8}{r['wall_s']:>10.1f}{r['startup_s']:>10.1f}{r['run_s']:>10.1f}{r['shutdown_s']:>10.1f}"
              f"{r['accuracy']:>10.3f}")
    if "rlsys" in results:
        print("rlsys median step breakdown: " + breakdown(results["rlsys"]["median_s"]))
    if len(results) == 2:
        trl, ours = results["trl"], results["rlsys"]
        results["ratio_wall"] = ours["wall_s"] / trl["wall_s"]
        results["accuracy_diff_points"] = 100 * (ours["accuracy"] - trl["accuracy"])
        print(f"rlsys / TRL wall time: {results['ratio_wall']:.2f}x")
        print(f"accuracy rlsys - TRL: {results['accuracy_diff_points']:+.1f} points")
    (OUT / "result.json").write_text(json.dumps({"steps": steps, **results}, indent=2))
    print(f"-> {OUT / 'result.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(usage=__doc__.split("\n\n")[1])
    parser.add_argument("--steps", type=int, default=450)
    parser.add_argument("--only", choices=["trl", "rlsys"])
    parser.add_argument("--_trl-worker", dest="worker", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    if args.worker:
        return trl_worker(args.worker, extra)
    if not any(o.startswith("model.path=") for o in extra):
        sys.exit("vs_trl: needs an SFT checkpoint: run `rlsys pipeline` first or pass model.path=DIR")
    OUT.mkdir(parents=True, exist_ok=True)
    # extra overrides come last so they win, and the TRL side composes the very same list
    overrides = [f"output_dir={OUT / 'rlsys'}", f"trainer.max_steps={args.steps}", *SETTINGS, *extra]
    results = {side: (run_trl if side == "trl" else run_rlsys)(overrides)
               for side in ([args.only] if args.only else ["trl", "rlsys"])}
    report(results, args.steps)


if __name__ == "__main__":
    main()
