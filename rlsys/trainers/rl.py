"""The RL controller (GRPO, PPO, RLOO, REINFORCE++). One step reads like the algorithm:

    samples  = rollout.generate(prompts, n)             vLLM engines: token ids + logprobs
    rewards  = reward(prompts, completions, columns)     rules, user functions
    old, ref = policy.logprobs(samples), reference.logprobs(samples); values = critic.values(samples)
    adv      = advantages(rewards, old, ref, values)     pure functions in rlsys.algorithms
    policy.train(...); critic.train(...)                 mini-batches x epochs
    policy.send_weights(rollout)                         buckets through the object store
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager

import numpy as np
import torch
from omegaconf import OmegaConf

from actors.cluster import resolve_device
from actors.rollout import Sampling
from rlsys.algorithms import build_kl_controller, kl_penalty, masked_mean
from rlsys.data.collate import pad
from rlsys.data.job_data import encode_prompts, prompt_rows
from rlsys.logging import MetricsLogger
from rlsys.models.builders import load_tokenizer
from rlsys.rewards import build_reward
from rlsys.trainers.advantages import estimate_advantages
from rlsys.trainers.common import Checkpoints, base_model_path, mean_metrics, owned, prepare_output_dir
from rlsys.trainers.evaluate import evaluate_accuracy
from rlsys.trainers.rl_roles import start_roles
from rlsys.trainers.supervised import batch_at


@contextmanager
def timed(times: dict, name: str):
    began = time.perf_counter()
    yield
    times[f"perf/{name}_s"] = time.perf_counter() - began


def padded(rows: list[list[float]]) -> torch.Tensor:
    return pad(rows, 0.0, dtype=torch.float32)


def policy_hparams(cfg) -> dict:
    a = cfg.algo
    return {"clip_low": a.clip_low, "clip_high": a.clip_high, "dual_clip": a.dual_clip,
            "aggregation": a.loss_aggregation, "max_len": cfg.rollout.max_new_tokens,
            "kl_loss_coef": 0.0 if a.kl_in_reward else a.kl_coef, "kl_estimator": a.kl_estimator,
            "entropy_coef": a.entropy_coef, "temperature": cfg.rollout.temperature, "value_clip": a.value_clip}


def update(group, samples: dict[str, list], objective: str, hparams: dict, cfg) -> dict[str, float]:
    """Epochs over mini-batches of whole prompt groups; one optimizer step per mini-batch."""
    per_update = (cfg.algo.mini_batch_size or cfg.trainer.batch_size) * cfg.algo.n_samples
    total = len(samples["prompt_ids"])
    results = []
    for _ in range(cfg.algo.epochs):
        for start in range(0, total, per_update):
            mini = {k: v[start:start + per_update] for k, v in samples.items()}
            results.append(mean_metrics(group.train(mini, objective, hparams)))
    return mean_metrics(results)


def train(cfg) -> dict:
    out = prepare_output_dir(cfg)
    device = resolve_device(cfg.cluster)
    a, t, r = cfg.algo, cfg.trainer, cfg.rollout
    reward = build_reward([{k: v for k, v in term.items() if v is not None}
                           for term in OmegaConf.to_container(cfg.reward, resolve=True)])
    model_path = base_model_path(cfg)
    tokenizer = load_tokenizer(model_path)
    rows = prompt_rows(cfg, "train")
    row_prompts = encode_prompts(cfg, tokenizer, rows)
    eval_rows = prompt_rows(cfg, "eval")[: t.eval_samples]
    eval_prompts = encode_prompts(cfg, tokenizer, eval_rows)
    examples = [{"index": i} for i in range(len(rows))]

    roles = start_roles(cfg, model_path, device)
    with owned(roles):
        (out / "placement.json").write_text(json.dumps(roles.locations(), indent=2))
        kl_ctl = build_kl_controller(a.kl_controller, a.kl_coef, a.kl_target, a.kl_horizon)
        checkpoints = Checkpoints(cfg.output_dir, t.keep_last)
        resume_from = checkpoints.resolve(cfg.resume)
        start = 0
        if resume_from:
            state = Checkpoints.load(resume_from, roles.trainers())
            start = state["step"]
            kl_ctl.load_state_dict(state["kl_controller"])
            roles.policy.send_weights(roles.rollout.engines, int(r.weight_sync_bucket_mb * 2**20))
        logger = MetricsLogger(cfg, cfg.job, t.max_steps, start, resumed=resume_from is not None)
        sampling = Sampling(n=a.n_samples, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                            max_new_tokens=r.max_new_tokens, stop=list(r.stop))
        greedy = Sampling(n=1, temperature=0.0, max_new_tokens=r.max_new_tokens, stop=list(r.stop))

        def evaluate(step: int) -> dict[str, float]:
            generate = lambda prompts: [s["response_ids"] for s in roles.rollout.generate(prompts, greedy)]
            accuracy, samples = evaluate_accuracy(generate, tokenizer, eval_rows, eval_prompts)
            logger.log_samples(step, samples)
            return {"eval/accuracy": accuracy}

        metrics: dict[str, float] = evaluate(start) if start == 0 and t.eval_every else {}
        if metrics:
            logger.log(0, metrics)
        for step in range(start + 1, t.max_steps + 1):
            times: dict[str, float] = {}
            with timed(times, "step"):
                indices = batch_at(examples, step, t.batch_size, cfg.seed)["index"]
                batch, prompt_ids = [rows[i] for i in indices], [row_prompts[i] for i in indices]

                with timed(times, "gen"):
                    if roles.colocated:
                        roles.rollout.wake_up()
                    generated = roles.rollout.generate(prompt_ids, sampling, seed=cfg.seed * 1_000_003 + step)
                    if roles.colocated:
                        roles.rollout.sleep()
                samples = {"prompt_ids": [p for p in prompt_ids for _ in range(a.n_samples)],
                           "response_ids": [g["response_ids"] or [tokenizer.eos_token_id] for g in generated]}

                with timed(times, "score"):
                    completions = tokenizer.batch_decode(samples["response_ids"], skip_special_tokens=True)
                    prompts_text = [row["messages"][-1]["content"] for row in batch for _ in range(a.n_samples)]
                    columns = {k: [row.get(k) for row in batch for _ in range(a.n_samples)]
                               for k in batch[0] if k != "messages"}
                    scores, per_term = reward(prompts_text, completions, columns)

                with timed(times, "ref"):
                    samples["old_logp"] = roles.policy.logprobs(samples, r.temperature)["logp"]
                    samples["ref_logp"] = roles.reference.logprobs(samples, r.temperature)["logp"]
                    if roles.critic:
                        samples["old_values"] = roles.critic.values(samples)["values"]

                mask = padded([[1.0] * len(x) for x in samples["response_ids"]])
                old_logp, ref_logp = padded(samples["old_logp"]), padded(samples["ref_logp"])
                values = padded(samples["old_values"]) if roles.critic else None
                advantages, returns = estimate_advantages(a, torch.tensor(scores, dtype=torch.float32), mask,
                                                          old_logp, ref_logp, values, kl_ctl.value)
                lengths = [len(x) for x in samples["response_ids"]]
                samples["advantages"] = [row[:n] for row, n in zip(advantages.tolist(), lengths)]

                with timed(times, "train"):
                    if roles.critic:
                        samples["returns"] = [row[:n] for row, n in zip(returns.tolist(), lengths)]
                        critic_metrics = update(roles.critic, samples, "value", policy_hparams(cfg), cfg)
                    if step > a.critic_warmup_steps or not roles.critic:
                        policy_metrics = update(roles.policy, samples, "policy", policy_hparams(cfg), cfg)
                    else:
                        policy_metrics = {}

                with timed(times, "sync"):
                    if roles.colocated:
                        roles.rollout.wake_up()
                    sync = roles.policy.send_weights(roles.rollout.engines, int(r.weight_sync_bucket_mb * 2**20))

            kl = masked_mean(kl_penalty(old_logp, ref_logp, "k3"), mask).item()  # k3: unbiased and never negative
            kl_ctl.update(kl, t.batch_size * a.n_samples)
            gen_tokens = sum(lengths)
            metrics = {
                "reward/mean": float(np.mean(scores)), "reward/std": float(np.std(scores)),
                **{f"reward/{name}": float(np.mean(v)) for name, v in per_term.items()},
                "train/kl": kl, "train/kl_coef": kl_ctl.value,
                **{f"train/{k}": v for k, v in policy_metrics.items()},
                **({f"critic/{k}": v for k, v in critic_metrics.items()} if roles.critic else {}),
                "response/length_mean": float(np.mean(lengths)),
                "response/clipped_frac": float(np.mean([g["finish_reason"] == "length" for g in generated])),
                **times, "perf/gen_tokens_per_s": gen_tokens / max(times["perf/gen_s"], 1e-9),
                "perf/sync_mb": sync["sync_mb"], "perf/sync_buckets": sync["sync_buckets"],
            }
            if step == t.max_steps or (t.eval_every and step % t.eval_every == 0):
                metrics.update(evaluate(step))
            logger.log(step, metrics)
            if t.save_every and step % t.save_every == 0:
                checkpoints.save(step, roles.trainers(), {"job": cfg.job, "kl_controller": kl_ctl.state_dict()})
        logger.close()
        roles.policy.save_hf(str(out / "checkpoints" / "final"))
    return metrics
