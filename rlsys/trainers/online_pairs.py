"""Online / iterative preference pairs (`rlsys dpo algo.online=true`): the policy's own answers, ranked.

    every round (algo.round_steps steps):  answers = rollout.generate(prompts, algo.n_samples)
                                           scores  = reward(prompts, answers)        rules, reward models, judges
                                           pairs   = best vs worst of each prompt (algo.pairs_per_prompt of them)
    after every update:                    policy.send_weights(rollout)

A prompt whose answers all score the same gives no pair. The pairs are the policy's own samples, so DPO
learns where the current model errs rather than where the model that made an offline data set did.
"""
from __future__ import annotations

import time

import numpy as np

from rlsys.actors import weight_sync
from rlsys.actors.rollout import RolloutGroup
from rlsys.data.batching import batch_indices, require_batch
from rlsys.data.job_data import encode_prompts, prompt_rows
from rlsys.errors import ConfigError
from rlsys.models.builders import end_of_turn_ids
from rlsys.rewards import build_reward
from rlsys.roles.engines import rollout_sampling, start_engines, start_judge_engines
from rlsys.roles.reward_actors import (RewardActors, actor_terms, judge_term, reward_specs, score_samples,
                                       start_reward_actors)
from rlsys.trainers.held_out import check_columns


def ranked_pairs(prompt_ids: list[int], responses: list[list[int]], scores, pairs: int) -> list[dict]:
    """Up to `pairs` (chosen, rejected) pairs of one prompt's answers: the k-th best against the k-th worst,
    kept only where the better one scored strictly higher (ties in score keep the earlier sample)."""
    order = sorted(range(len(responses)), key=lambda i: -scores[i])
    out = []
    for k in range(min(pairs, len(order) // 2)):
        best, worst = order[k], order[-1 - k]
        if scores[best] > scores[worst]:
            out.append({"prompt_ids": prompt_ids, "chosen_ids": responses[best], "rejected_ids": responses[worst]})
    return out


class OnlinePairs:
    """The rollout engines the policy samples on, the reward that ranks its answers, and the current round."""

    def __init__(self, cfg, tokenizer, model_path: str, device: str):
        self.cfg, self.tokenizer, self.model_path, self.device = cfg, tokenizer, model_path, device
        self.rows = prompt_rows(cfg, "train")
        self.prompt_ids = encode_prompts(cfg, tokenizer, self.rows)
        require_batch(len(self.rows), cfg.trainer.batch_size * cfg.algo.round_steps, "training prompts",
                      "trainer.batch_size x algo.round_steps")
        self.specs = reward_specs(cfg)
        self.reward = build_reward(self.specs)  # checked now; rebuilt with its actors in start()
        check_columns(self.reward, self.rows, cfg.data.train or "the embedded task's prompts", "reward")
        self.sampling = rollout_sampling(cfg, end_of_turn_ids(tokenizer))
        # the engines sample on GPUs of their own, whatever cluster.colocate says
        if (problem := weight_sync.problem(cfg, device, colocated=False) or
                weight_sync.moe_problem(cfg, model_path, device)) is not None:
            raise ConfigError(problem)
        self.sync = weight_sync.weight_sync(cfg, device, colocated=False)
        self.engines: RolloutGroup | None = None
        self.rewards = RewardActors()
        self.round: list[list[dict]] = []  # the current round's pairs, one list per step
        self.round_stats: dict[str, float] = {}

    def start(self) -> None:
        cfg = self.cfg
        self.engines = start_engines(cfg, self.model_path, self.device, cfg.rollout.num_engines,
                                     weight_sync=self.sync.kind)
        start_reward_actors(cfg, self.device, self.rewards, lambda: start_judge_engines(cfg, self.device))
        policy_judge = lambda: judge_term(cfg, self.engines, self.model_path)
        self.reward = build_reward(self.specs, actor_term=actor_terms(cfg, self.rewards, policy_judge))
        self.engines.wait_ready()

    def stop(self) -> None:
        for group in (self.engines, self.rewards):
            if group is not None:
                group.kill()
        self.engines, self.rewards = None, RewardActors()
        self.round = []

    def send_weights(self, policy) -> dict[str, float]:
        return policy.send_weights(self.engines.engines, self.sync)

    def pairs(self, step: int) -> tuple[list[dict], dict[str, float]]:
        """Step `step`'s pairs: at a round's first step the policy answers the round's prompts and the pairs
        of the whole round are made (prompts and sampling seeds a function of the round). A run resumed in the
        middle of a round samples that round again, with the restored policy."""
        a = self.cfg.algo
        index = (step - 1) % a.round_steps
        if index == 0 or not self.round:
            self.round, self.round_stats = self.make_round((step - 1) // a.round_steps + 1)
        stats = self.round_stats if index == 0 else {}
        return self.round[index], stats

    def make_round(self, round_: int) -> tuple[list[list[dict]], dict[str, float]]:
        cfg, a = self.cfg, self.cfg.algo
        size = cfg.trainer.batch_size * a.round_steps
        indices = batch_indices(len(self.rows), round_, size, cfg.seed)
        began = time.perf_counter()
        generated = self.engines.generate([self.prompt_ids[i] for i in indices], self.sampling,
                                          seed=cfg.seed * 1_000_003 + round_)
        gen_s = time.perf_counter() - began
        responses = [g["response_ids"] or [self.tokenizer.eos_token_id] for g in generated]
        scores = self.score([self.rows[i] for i in indices], responses)
        n, pairs = a.n_samples, []
        for k, i in enumerate(indices):
            part = slice(k * n, (k + 1) * n)
            pairs.append(ranked_pairs(self.prompt_ids[i], responses[part], scores[part].tolist(), a.pairs_per_prompt))
        # the round's prompts are split over its steps, whole prompts per step
        per_step = [[p for group in pairs[s::a.round_steps] for p in group] for s in range(a.round_steps)]
        made = sum(len(p) for p in per_step)
        stats = {"online/reward_mean": float(np.mean(scores)), "online/pairs": float(made),
                 "online/prompts_with_pair": float(np.mean([bool(p) for p in pairs])), "perf/gen_s": gen_s}
        return per_step, stats

    def score(self, rows: list[dict], responses: list[list[int]]) -> np.ndarray:
        completions = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return score_samples(self.reward, rows, completions, self.cfg.algo.n_samples)[0]
