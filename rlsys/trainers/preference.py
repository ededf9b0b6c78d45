"""Preference learning on (prompt, chosen, rejected) pairs: `rlsys rm` and `rlsys dpo`.

    rm,  each step:  pairs = the step's batch;  reward_model.train(pairs, "pairwise")      Bradley-Terry
    dpo, each step:  pairs = the step's batch;  pairs.ref = reference.logprobs(pairs)
                     policy.train(pairs, "dpo")                                          DPO / IPO / cDPO
"""
from __future__ import annotations

import time

from actors.cluster import check_capacity, connect, resolve_device
from rlsys.data.job_data import preference_pairs
from rlsys.errors import DataError
from rlsys.models.builders import load_tokenizer
from rlsys.trainers.common import Checkpoints, base_model_path, engine_settings, prepare_output_dir, start_train_group
from rlsys.trainers.evaluate import HeldOut
from rlsys.trainers.loop import run_steps
from rlsys.trainers.supervised import batch_at


def both_sides(pairs: dict[str, list]) -> dict[str, list]:
    """A batch of pairs as prompt/response rows: every chosen response, then every rejected one."""
    return {"prompt_ids": pairs["prompt_ids"] * 2, "response_ids": pairs["chosen_ids"] + pairs["rejected_ids"]}


def columns(pairs: list[dict]) -> dict[str, list]:
    return {key: [p[key] for p in pairs] for key in pairs[0]}


class PreferenceController:
    def __init__(self, cfg):
        self.cfg = cfg
        self.dpo = cfg.job == "dpo"
        self.out = prepare_output_dir(cfg)
        self.device = resolve_device(cfg.cluster)
        self.model_path = base_model_path(cfg)
        self.tokenizer = load_tokenizer(self.model_path)
        self.pairs = preference_pairs(cfg, self.tokenizer, "train")
        if len(self.pairs) < cfg.trainer.batch_size:
            raise DataError(f"{len(self.pairs)} preference pairs are fewer than trainer.batch_size="
                            f"{cfg.trainer.batch_size}.")
        self.eval_pairs = columns(preference_pairs(cfg, self.tokenizer, "eval")[: cfg.trainer.eval_samples])
        # DPO's policy also answers the held-out prompts, like SFT and RL do
        self.held_out = HeldOut(cfg, self.tokenizer) if self.dpo else None
        a = cfg.algo
        self.hparams = ({"beta": a.beta, "loss_type": a.preference_loss, "label_smoothing": a.label_smoothing,
                         "nll_coef": a.nll_coef} if self.dpo else {"margin": a.reward_margin})
        self.model = self.reference = None
        self.eval_reference: dict[str, list[float]] | None = None  # the reference is frozen: computed once

    # ---- actors -----------------------------------------------------------------------------------------
    def start(self) -> None:
        cfg, c = self.cfg, self.cfg.cluster
        cpus = c.policy.num_ranks * c.policy.cpus_per_rank
        gpus = c.policy.num_ranks * c.policy.gpus_per_rank
        if self.dpo:
            cpus += c.reference.num_ranks * c.reference.cpus_per_rank
            gpus += c.reference.num_ranks * c.reference.gpus_per_rank
        connect(c, cpus_needed=cpus)
        check_capacity(self.device, gpus)
        engine = engine_settings(cfg)
        role = "policy" if self.dpo else "reward"
        self.model = start_train_group(role, cfg, self.model_path, self.device, trainable=True, engine=engine,
                                       resources=c.policy)
        if self.dpo:
            frozen = engine_settings(cfg)
            self.reference = start_train_group("reference", cfg, self.model_path, self.device, trainable=False,
                                               engine=frozen)

    def stop(self) -> None:
        for group in (self.model, self.reference):
            if group is not None:
                group.kill()
        self.model = self.reference = None

    def restore(self, folder) -> int:
        return Checkpoints.load(folder, {"model": self.model})["step"]

    def save(self, checkpoints: Checkpoints, step: int) -> None:
        checkpoints.save(step, {"model": self.model}, {"job": self.cfg.job})

    def finish(self) -> None:
        self.model.save_hf(str(self.out / "checkpoints" / "final"))

    # ---- the algorithm ----------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, float]:
        began = time.perf_counter()
        pairs = batch_at(self.pairs, step, self.cfg.trainer.batch_size, self.cfg.seed)
        if self.dpo:
            pairs.update(self.reference_logps(pairs))
        result = self.model.train(pairs, "dpo" if self.dpo else "pairwise", self.hparams)
        elapsed = time.perf_counter() - began
        tokens = sum(len(p) * 2 + len(c) + len(r)
                     for p, c, r in zip(pairs["prompt_ids"], pairs["chosen_ids"], pairs["rejected_ids"]))
        shown = ("loss", "accuracy", "margin", "chosen_reward", "rejected_reward", "chosen_score", "rejected_score",
                 "preference_loss", "chosen_nll", "grad_norm", "lr")
        return {**{f"train/{k}": result[k] for k in shown if k in result},
                "perf/step_s": elapsed, "perf/tokens_per_s": tokens / elapsed}

    def response_logps(self, group, pairs: dict[str, list]) -> tuple[list[float], list[float]]:
        """Each side's whole-response log-probability under `group` (the mean per token for IPO)."""
        rows = group.logprobs(both_sides(pairs))["logp"]
        average = self.hparams.get("loss_type") == "ipo"
        totals = [sum(r) / max(1, len(r)) if average else sum(r) for r in rows]
        half = len(pairs["prompt_ids"])
        return totals[:half], totals[half:]

    def reference_logps(self, pairs: dict[str, list]) -> dict[str, list[float]]:
        chosen, rejected = self.response_logps(self.reference, pairs)
        return {"ref_chosen": chosen, "ref_rejected": rejected}

    def evaluate(self, step: int) -> tuple[dict[str, float], list[dict]]:
        if not self.dpo:
            scores = self.model.scores(both_sides(self.eval_pairs))["scores"]
            half = len(scores) // 2
            gaps = [c - r for c, r in zip(scores[:half], scores[half:])]
            return {"eval/accuracy": sum(g > 0 for g in gaps) / half, "eval/margin": sum(gaps) / half}, []
        if self.eval_reference is None:
            self.eval_reference = self.reference_logps(self.eval_pairs)
        chosen, rejected = self.response_logps(self.model, self.eval_pairs)
        beta = self.cfg.algo.beta
        margins = [beta * ((c - rc) - (r - rr)) for c, r, rc, rr in
                   zip(chosen, rejected, self.eval_reference["ref_chosen"], self.eval_reference["ref_rejected"])]
        metrics = {"eval/preference_accuracy": sum(m > 0 for m in margins) / len(margins),
                   "eval/margin": sum(margins) / len(margins)}
        max_new = self.cfg.rollout.max_new_tokens
        answered, samples = self.held_out(lambda prompts: self.model.generate({"prompt_ids": prompts},
                                                                              max_new)["response_ids"])
        return {**metrics, **answered}, samples


def train(cfg) -> dict[str, float]:
    return run_steps(PreferenceController(cfg), cfg, cfg.job)
