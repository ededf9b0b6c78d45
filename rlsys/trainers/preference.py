"""Preference learning: `rlsys rm` on (prompt, chosen, rejected) pairs, and `rlsys dpo` with its losses.

    rm,   each step:  pairs = the step's batch;  reward_model.train(pairs, PairwiseLoss)   Bradley-Terry, per head
    dpo,  each step:  pairs = the step's batch (online: the policy's own answers, ranked, online_pairs.py)
                      pairs.ref = reference.logprobs(pairs)      (not for orpo: it has no reference)
                      policy.train(pairs, PreferenceLoss)        DPO / IPO / cDPO / ORPO
                      (online: policy.send_weights(rollout))
    kto,  each step:  rows = the step's thumbs up / down;  rows.ref = reference.logprobs(rows)
                      policy.train(rows, PreferenceLoss)
"""
from __future__ import annotations

import time

from rlsys.actors.cluster import reserve, resolve_device
from rlsys.algorithms.ensemble import combine_heads
from rlsys.config.jobs import uses_reference
from rlsys.config.losses import PairwiseLoss, PreferenceLoss
from rlsys.engine.moe import ROUTER_METRICS
from rlsys.data.batching import batch_at, require_batch
from rlsys.data.job_data import feedback_rows, near_miss_pairs, preference_pairs
from rlsys.loop.checkpoints import Checkpoints
from rlsys.loop.run_folder import base_model_path, prepare_output_dir
from rlsys.loop.steps import run_steps
from rlsys.models.builders import load_tokenizer
from rlsys.roles.train_group import start_train_group
from rlsys.trainers.held_out import HeldOut

SHOWN = ("loss", "accuracy", "margin", "chosen_reward", "rejected_reward", "chosen_score", "rejected_score",
         "preference_loss", "chosen_nll", "log_odds_ratio", "desirable_reward", "undesirable_reward", "kl",
         "head_std", "grad_norm", "lr", *ROUTER_METRICS)


def both_sides(pairs: dict[str, list]) -> dict[str, list]:
    """A batch of pairs as prompt/response rows: every chosen response, then every rejected one."""
    return {"prompt_ids": pairs["prompt_ids"] * 2, "response_ids": pairs["chosen_ids"] + pairs["rejected_ids"]}


def columns(pairs: list[dict]) -> dict[str, list]:
    return {key: [p[key] for p in pairs] for key in pairs[0]} if pairs else {}


class PreferenceController:
    def __init__(self, cfg):
        self.cfg = cfg
        a = cfg.algo
        self.dpo = cfg.job == "dpo"
        # what the trained model learns from: pairs scored by a reward model (rm), or DPO / IPO / KTO / ORPO
        self.loss = PreferenceLoss.from_config(cfg) if self.dpo else PairwiseLoss.from_config(cfg)
        self.kto = self.dpo and a.preference_loss == "kto"
        self.with_reference = uses_reference(cfg)
        self.out = prepare_output_dir(cfg)
        self.device = resolve_device(cfg.cluster)
        self.model_path = base_model_path(cfg)
        self.tokenizer = load_tokenizer(self.model_path)
        self.online = None
        if a.online:
            from rlsys.trainers.online_pairs import OnlinePairs

            self.online = OnlinePairs(cfg, self.tokenizer, self.model_path, self.device)
            self.examples: list[dict] = []
        elif self.kto:
            self.examples = feedback_rows(cfg, self.tokenizer, "train")
        else:  # each pair knows its index: an ensemble's heads draw their bootstrap of the pairs from it
            self.examples = [{**p, "pair_id": i} for i, p in enumerate(preference_pairs(cfg, self.tokenizer, "train"))]
        if not a.online:
            require_batch(len(self.examples), cfg.trainer.batch_size, "training examples")
        self.eval_pairs = self.held_out_pairs(cfg)
        self.near_misses = columns(near_miss_pairs(cfg, self.tokenizer)[: cfg.trainer.eval_samples]) \
            if cfg.job == "rm" else {}
        # DPO's policy also answers the held-out prompts, like SFT and RL do
        self.held_out = HeldOut(cfg, self.tokenizer) if self.dpo else None
        self.model = self.reference = None
        self.eval_reference: dict[str, list[float]] | None = None  # the reference is frozen: computed once

    def held_out_pairs(self, cfg) -> dict[str, list]:
        """Held-out pairs for eval/preference_accuracy; none when a KTO job's data.eval is thumbs rows."""
        if self.kto and cfg.data.eval:
            return {}
        return columns(preference_pairs(cfg, self.tokenizer, "eval")[: cfg.trainer.eval_samples])

    # ---- actors -----------------------------------------------------------------------------------------
    def start(self) -> None:
        cfg, c = self.cfg, self.cfg.cluster
        reserve(cfg, self.device)
        if self.online:  # vLLM loads while the trainers set up
            self.online.start()
        role = "policy" if self.dpo else "reward"
        self.model = start_train_group(role, cfg, self.model_path, self.device, trainable=True, resources=c.policy,
                                       wait=False)
        if self.with_reference:  # loads beside the trained model
            self.reference = start_train_group("reference", cfg, self.model_path, self.device, trainable=False)
        self.model.wait_ready()

    def stop(self) -> None:
        for group in (self.model, self.reference):
            if group is not None:
                group.kill()
        if self.online:
            self.online.stop()
        self.model = self.reference = None

    def restore(self, folder) -> int:
        step = Checkpoints.load(folder, {"model": self.model})["step"]
        if self.online:
            self.online.send_weights(self.model)
        return step

    def save(self, checkpoints: Checkpoints, step: int) -> None:
        checkpoints.save(step, {"model": self.model}, {"job": self.cfg.job})

    def finish(self) -> None:
        self.model.save_hf(str(self.out / "checkpoints" / "final"))

    # ---- the algorithm ----------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, float]:
        began = time.perf_counter()
        stats: dict[str, float] = {}
        if self.online:
            pairs, stats = self.online.pairs(step)
            batch = columns(pairs)
            if not batch:  # every answer of every prompt scored the same: nothing to learn from this step
                return {**stats, "online/pairs_trained": 0.0}
        else:
            batch = batch_at(self.examples, step, self.cfg.trainer.batch_size, self.cfg.seed)
        if self.with_reference:
            batch.update(self.reference_logps(batch))
        result = self.model.train(batch, self.loss)
        if self.online:
            self.online.send_weights(self.model)
            stats["online/pairs_trained"] = float(len(batch["prompt_ids"]))
        elapsed = time.perf_counter() - began
        sides = (("chosen_ids", "rejected_ids") if "chosen_ids" in batch else ("response_ids",))
        tokens = sum(len(p) * len(sides) + sum(len(batch[s][i]) for s in sides)
                     for i, p in enumerate(batch["prompt_ids"]))
        return {**{f"train/{k}": result[k] for k in SHOWN if k in result}, **stats,
                "perf/step_s": elapsed, "perf/tokens_per_s": tokens / elapsed}

    def response_logps(self, group, pairs: dict[str, list], average: bool | None = None):
        """Each side's whole-response log-probability under `group` (the mean per token for IPO and ORPO)."""
        rows = group.logprobs(both_sides(pairs))["logp"]
        average = self.dpo and self.loss.averages_logprobs if average is None else average
        totals = [sum(r) / max(1, len(r)) if average else sum(r) for r in rows]
        half = len(pairs["prompt_ids"])
        return totals[:half], totals[half:]

    def reference_logps(self, batch: dict[str, list]) -> dict[str, list[float]]:
        if self.kto:
            rows = self.reference.logprobs({"prompt_ids": batch["prompt_ids"], "response_ids": batch["response_ids"]})
            return {"ref_total": [sum(r) for r in rows["logp"]]}
        chosen, rejected = self.response_logps(self.reference, batch)
        return {"ref_chosen": chosen, "ref_rejected": rejected}

    def evaluate(self, step: int) -> tuple[dict[str, float], list[dict]]:
        if not self.dpo:
            metrics = self.ranked_right(self.eval_pairs, "eval")
            return {**metrics, **(self.ranked_right(self.near_misses, "eval/near_miss") if self.near_misses else {})}, []
        metrics = self.preference_accuracy() if self.eval_pairs else {}
        max_new = self.cfg.rollout.max_new_tokens
        answered, samples = self.held_out(lambda prompts: self.model.generate({"prompt_ids": prompts},
                                                                              max_new)["response_ids"])
        return {**metrics, **answered}, samples

    def ranked_right(self, pairs: dict[str, list], prefix: str) -> dict[str, float]:
        """The reward model's pair accuracy and margin (its heads' mean; with several heads, the worst head's)."""
        heads = self.model.scores(both_sides(pairs))["scores"]
        half = len(heads) // 2
        mean, _ = combine_heads(heads)
        gaps = mean[:half] - mean[half:]
        metrics = {f"{prefix}/accuracy": float((gaps > 0).mean()), f"{prefix}/margin": float(gaps.mean())}
        if len(heads[0]) > 1:
            per_head = [sum(c[h] > r[h] for c, r in zip(heads[:half], heads[half:])) / half
                        for h in range(len(heads[0]))]
            metrics[f"{prefix}/worst_head_accuracy"] = float(min(per_head))
        return metrics

    def preference_accuracy(self) -> dict[str, float]:
        """How often the policy's implicit reward (its log-ratio to the reference; ORPO: its log-likelihood)
        ranks the held-out chosen answer first."""
        beta = self.cfg.algo.beta
        chosen, rejected = self.response_logps(self.model, self.eval_pairs)
        if self.with_reference:
            if self.eval_reference is None:
                self.eval_reference = dict(zip(("ref_chosen", "ref_rejected"),
                                               self.response_logps(self.reference, self.eval_pairs)))
            chosen = [c - rc for c, rc in zip(chosen, self.eval_reference["ref_chosen"])]
            rejected = [r - rr for r, rr in zip(rejected, self.eval_reference["ref_rejected"])]
        margins = [beta * (c - r) for c, r in zip(chosen, rejected)]
        return {"eval/preference_accuracy": sum(m > 0 for m in margins) / len(margins),
                "eval/margin": sum(margins) / len(margins)}


def train(cfg) -> dict[str, float]:
    return run_steps(PreferenceController(cfg), cfg, cfg.job)
