"""The supervised loop shared by pretraining and SFT: only the data (packed text or chat) differs.

    for step: batch = next shuffled batch; metrics = policy.train(batch, "lm"); log; evaluate; checkpoint
"""
from __future__ import annotations

import random
import time

from actors.cluster import check_capacity, connect, resolve_device
from rlsys.data.job_data import encode_prompts, pretrain_blocks, prompt_rows, sft_examples
from rlsys.logging import MetricsLogger
from rlsys.models.builders import load_tokenizer
from rlsys.trainers.common import (Checkpoints, base_model_path, engine_settings, mean_metrics, owned,
                                   prepare_output_dir, start_train_group)
from rlsys.trainers.evaluate import evaluate_accuracy


def batch_at(examples: list[dict], step: int, batch_size: int, seed: int) -> dict[str, list]:
    """The batch of a step, a pure function of (step, seed): a resumed run sees exactly what it would have."""
    per_epoch = len(examples) // batch_size
    epoch, offset = divmod(step - 1, per_epoch)
    order = list(range(len(examples)))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    picked = [examples[i] for i in order[offset * batch_size:(offset + 1) * batch_size]]
    return {key: [row[key] for row in picked] for key in picked[0]}


def load_examples(cfg, tokenizer) -> list[dict]:
    if cfg.job == "pretrain":
        return [{"input_ids": block, "labels": block} for block in pretrain_blocks(cfg, tokenizer)]
    return [{"input_ids": ids, "labels": labels} for ids, labels in sft_examples(cfg, tokenizer)]


def train(cfg) -> dict:
    out = prepare_output_dir(cfg)
    device = resolve_device(cfg.cluster)
    policy_res = cfg.cluster.policy
    connect(cfg.cluster, cpus_needed=policy_res.num_ranks * policy_res.cpus_per_rank)
    check_capacity(device, policy_res.num_ranks * policy_res.gpus_per_rank)
    model_path = base_model_path(cfg)
    tokenizer = load_tokenizer(model_path)
    examples = load_examples(cfg, tokenizer)
    if len(examples) < cfg.trainer.batch_size:
        from rlsys.errors import DataError

        raise DataError(f"{len(examples)} training sequences are fewer than trainer.batch_size={cfg.trainer.batch_size}.")
    eval_rows = prompt_rows(cfg, "eval")[: cfg.trainer.eval_samples]
    eval_prompts = encode_prompts(cfg, tokenizer, eval_rows) if tokenizer.chat_template else []

    t = cfg.trainer
    grad_accum = t.batch_size // (t.micro_batch_size * policy_res.num_ranks)
    policy = start_train_group("policy", cfg, model_path, device, trainable=True,
                               engine=engine_settings(cfg, micro_batch_size=t.micro_batch_size, grad_accum_steps=grad_accum))
    with owned(policy):
        checkpoints = Checkpoints(cfg.output_dir, t.keep_last)
        resume_from = checkpoints.resolve(cfg.resume)
        start = Checkpoints.load(resume_from, {"policy": policy})["step"] if resume_from else 0
        logger = MetricsLogger(cfg, cfg.job, t.max_steps, start, resumed=resume_from is not None)

        def evaluate(step: int) -> dict[str, float]:
            if not eval_prompts:
                return {}
            greedy = lambda prompts: policy.generate({"prompt_ids": prompts}, cfg.rollout.max_new_tokens)["response_ids"]
            accuracy, samples = evaluate_accuracy(greedy, tokenizer, eval_rows, eval_prompts)
            logger.log_samples(step, samples)
            return {"eval/accuracy": accuracy}

        metrics: dict[str, float] = {}
        for step in range(start + 1, t.max_steps + 1):
            began = time.perf_counter()
            batch = batch_at(examples, step, t.batch_size, cfg.seed)
            result = mean_metrics(policy.train(batch, "lm", {}))
            elapsed = time.perf_counter() - began
            tokens = sum(len(ids) for ids in batch["input_ids"])
            metrics = {"train/loss": result["loss"], "train/grad_norm": result["grad_norm"], "train/lr": result["lr"],
                       "perf/step_s": elapsed, "perf/tokens_per_s": tokens / elapsed}
            if step == t.max_steps or (t.eval_every and step % t.eval_every == 0):
                metrics.update(evaluate(step))
            logger.log(step, metrics)
            if t.save_every and step % t.save_every == 0:
                checkpoints.save(step, {"policy": policy}, {"job": cfg.job})
        logger.close()
        policy.save_hf(str(out / "checkpoints" / "final"))
    return metrics
