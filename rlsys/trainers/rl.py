"""The RL controller (GRPO, PPO, RLOO, REINFORCE++). One step reads like the algorithm:

    samples  = rollout.generate(prompts, n)             vLLM engines: token ids + logprobs
               (env set: multi-turn episodes against environments, rlsys/rollouts/episodes.py)
               (async, rollout.max_staleness = K > 0: sampled K steps ahead by the policy K versions back)
    rewards  = reward(prompts, completions, columns)     rules, functions, reward models, judges, remote
               (guards: length penalty, running normalisation, clipping; monitored gold terms logged only)
               (dynamic sampling: again with new prompts until every group's rewards differ)
    old, ref = policy.logprobs(samples), reference.logprobs(samples); values = critic.values(samples)
    teacher  = teacher.logprobs(samples)
               (concurrently, and each only when something reads it)
    adv      = advantages(rewards, old, ref, values)     pure functions in rlsys.algorithms
               (a teacher, distill.teacher: plus -(log p_sampler - log p_teacher) on every token; on-policy
               distillation, `rlsys distill distill.on_policy=true`: that alone)
    policy.train(...); critic.train(...)                 mini-batches x epochs (importance-weighted by the
                                                         sampler's logprobs with algo.is_correction)
    policy.send_weights(rollout)                         object store, a LoRA adapter, NCCL or CUDA IPC
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, replace

import numpy as np
import torch

from rlsys.actors import weight_sync
from rlsys.actors.cluster import resolve_device
from rlsys.actors.rollout import Sampling
from rlsys.algorithms import build_kl_controller, groups_with_spread, kl_penalty, masked_mean
from rlsys.algorithms.advantages import estimate_advantages
from rlsys.algorithms.distillation import distill_metrics, teacher_advantages
from rlsys.algorithms.reward_guards import RewardGuards
from rlsys.algorithms.shaping import overlong_penalty
from rlsys.config.jobs import uses_environment, uses_teacher
from rlsys.config.losses import PolicyLoss, ValueLoss
from rlsys.data.batching import batch_indices, require_batch
from rlsys.data.collate import pad
from rlsys.data.job_data import encode_prompts, prompt_rows
from rlsys.errors import ConfigError
from rlsys.loop.checkpoints import Checkpoints
from rlsys.loop.run_folder import base_model_path, prepare_output_dir
from rlsys.loop.steps import run_steps
from rlsys.models.builders import end_of_turn_ids, load_tokenizer
from rlsys.models.tokenizer_match import check_same_tokenizer
from rlsys.rewards import build_reward
from rlsys.roles.engines import rollout_sampling
from rlsys.roles.handoff import DeviceHandoff
from rlsys.roles.reward_actors import actor_terms, judge_term, reward_specs, score_samples
from rlsys.roles.rl_actors import RLRoles, start_roles
from rlsys.rollouts.ahead import AheadRollouts, Batch
from rlsys.rollouts.episodes import Trajectory, episode_runner
from rlsys.rollouts.samples import (Group, batch_from_dict, ragged, response_metrics, rewards_before_last_turn,
                                    training_samples)
from rlsys.trainers.held_out import HeldOut, check_columns


@contextmanager
def timed(times: dict, name: str):
    began = time.perf_counter()
    yield
    key = f"perf/{name}_s"
    times[key] = times.get(key, 0.0) + time.perf_counter() - began


def padded(rows: list[list[float]]) -> torch.Tensor:
    return pad(rows, 0.0, dtype=torch.float32)


def mean_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(m[k] for m in results) / len(results) for k in results[0]}


def update(group, samples: dict[str, list], loss: PolicyLoss | ValueLoss, cfg) -> dict[str, float]:
    """Epochs over mini-batches of whole prompt groups; one optimizer step per mini-batch."""
    per_update = (cfg.algo.mini_batch_size or cfg.trainer.batch_size) * cfg.algo.n_samples
    total = len(samples["prompt_ids"])
    results = []
    for _ in range(cfg.algo.epochs):
        for start in range(0, total, per_update):
            mini = {k: v[start:start + per_update] for k, v in samples.items()}
            results.append(group.train(mini, loss))
    return mean_metrics(results)


class RLController:
    def __init__(self, cfg):
        self.cfg = cfg
        a, r = cfg.algo, cfg.rollout
        self.out = prepare_output_dir(cfg)
        self.device = resolve_device(cfg.cluster)
        self.reward_specs = reward_specs(cfg)
        self.reward = build_reward(self.reward_specs)  # checked now; rebuilt with its actors in start()
        self.model_path = base_model_path(cfg)
        self.tokenizer = load_tokenizer(self.model_path)
        if uses_teacher(cfg):
            check_same_tokenizer(self.tokenizer, self.model_path, cfg.distill.teacher)
        self.distilling = cfg.job == "distill"  # on-policy distillation: the teacher's signal is the only one
        self.rows = prompt_rows(cfg, "train")
        # episodes' prompts are what their environment's reset() returns, rendered with its tools
        self.row_prompts = ([[]] * len(self.rows) if uses_environment(cfg)
                            else encode_prompts(cfg, self.tokenizer, self.rows))
        check_columns(self.reward, self.rows, cfg.data.train or "the embedded task's prompts", "reward")
        require_batch(len(self.rows), cfg.trainer.batch_size, "training prompts")
        self.held_out = HeldOut(cfg, self.tokenizer, self.reward if cfg.eval.reward is None else None)
        stops = end_of_turn_ids(self.tokenizer)
        self.sampling = rollout_sampling(cfg, stops)
        self.greedy = Sampling(n=1, temperature=0.0, max_new_tokens=r.max_new_tokens, stop=list(r.stop),
                               stop_token_ids=stops)
        self.episodes = episode_runner(cfg, self.tokenizer, self.model_path, stops) if uses_environment(cfg) else None
        if (problem := weight_sync.problem(cfg, self.device) or
                weight_sync.moe_problem(cfg, self.model_path, self.device)) is not None:
            raise ConfigError(problem)
        self.weight_sync = weight_sync.weight_sync(cfg, self.device)
        self.kl_ctl = build_kl_controller(a.kl_controller, a.kl_coef, a.kl_target, a.kl_horizon)
        self.guards = RewardGuards(a)
        self.value_loss = ValueLoss.from_config(cfg)
        # One on-policy update per batch needs no forward pass for the sampling policy's logprobs.
        self.needs_old_logp = a.kl_in_reward or a.epochs > 1 or 0 < a.mini_batch_size < cfg.trainer.batch_size
        self.roles: RLRoles | None = None
        self.handoff: DeviceHandoff | None = None  # who has shared GPUs: the trainers or the engines
        self.ahead: AheadRollouts | None = None  # async: batches sampled ahead of the trainer

    # ---- actors -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.roles = start_roles(self.cfg, self.model_path, self.device)
        self.handoff = DeviceHandoff(list(self.roles.trainers().values()), self.roles.rollout, self.roles.colocated)
        # self-rewarding: the policy's engines judge (taking shared GPUs from the trainers as they generate)
        policy_judge = lambda: judge_term(self.cfg, self.roles.rollout, self.model_path, generate=self.generate)
        self.reward = build_reward(self.reward_specs, actor_term=actor_terms(self.cfg, self.roles.rewards, policy_judge))
        if self.cfg.eval.reward is None:
            self.held_out.reward = self.reward
        (self.out / "placement.json").write_text(json.dumps(self.roles.locations(), indent=2))
        if self.episodes is not None:
            self.episodes.start(self.cfg.env.num_workers, self.cfg.env.cpus_per_worker)
        if self.cfg.rollout.max_staleness > 0:
            self.ahead = AheadRollouts(self.sample_batch, self.cfg.rollout.max_staleness, self.cfg.trainer.max_steps)

    def stop(self) -> None:
        if self.ahead is not None:
            self.ahead.stop()
        if self.roles is not None:
            self.roles.kill()
            self.roles = None
        if self.episodes is not None:
            self.episodes.stop()
        if self.ahead is not None:
            self.ahead.join()
            self.ahead = None

    def restore(self, folder) -> int:
        if self.ahead is not None and self.ahead.running:  # mid-run (the gold stop's best step): sample anew from it
            self.ahead.stop()
            self.ahead.join()
            self.ahead = AheadRollouts(self.sample_batch, self.cfg.rollout.max_staleness, self.cfg.trainer.max_steps)
        self.handoff.to_trainers()  # the optimizer states load where they train
        state = Checkpoints.load(folder, self.roles.trainers())
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.guards.load_state_dict(state.get("reward_guards", {}))
        self.handoff.to_engines(self.send_weights)
        if self.ahead is not None:  # what was sampled ahead and not trained yet goes back into the buffer
            self.ahead.start(state["step"], [batch_from_dict(b) for b in state.get("rollout_buffer", [])])
        return state["step"]

    def save(self, checkpoints: Checkpoints, step: int) -> None:
        self.handoff.to_trainers()  # DeepSpeed saves the optimizer states from where they train
        buffered = [asdict(b) for b in self.ahead.buffered()] if self.ahead is not None else []
        state = {"job": self.cfg.job, "kl_controller": self.kl_ctl.state_dict(), "rollout_buffer": buffered,
                 "reward_guards": self.guards.state_dict()}
        checkpoints.save(step, self.roles.trainers(), state)

    def finish(self) -> None:
        self.roles.policy.save_hf(str(self.out / "checkpoints" / "final"))

    # ---- the algorithm ----------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, float]:
        cfg, a, roles = self.cfg, self.cfg.algo, self.roles
        times: dict[str, float] = {}
        with timed(times, "step"):
            batch = self.next_batch(step, times)
            groups, sampled = batch.groups, batch.sampled
            scores = [s for g in groups for s in g.scores]
            generated = [out for g in groups for out in g.generated]
            samples = training_samples(groups, multi_turn=self.episodes is not None)

            self.handoff.to_trainers()
            with timed(times, "ref"):
                samples.update(self.forward_passes(samples))

            mask = padded(samples.get("loss_mask") or [[1.0] * len(x) for x in samples["response_ids"]])
            ref_logp = padded(samples["ref_logp"]) if roles.reference else None
            old_logp = padded(samples["old_logp"]) if self.needs_old_logp else None
            values = padded(samples["old_values"]) if roles.critic else None
            turn_rewards = rewards_before_last_turn(generated, mask.shape) if self.episodes is not None else None
            advantages, returns = (torch.zeros_like(mask), None) if self.distilling else estimate_advantages(
                a, torch.tensor(scores, dtype=torch.float32), mask, old_logp, ref_logp, values, self.kl_ctl.value,
                turn_rewards)
            distill = {}
            if roles.teacher:  # graded against the sampler's own logprobs: the samples are its
                sampler_logp, teacher_logp = padded(samples["behaviour_logp"]), padded(samples["teacher_logp"])
                advantages = advantages + teacher_advantages(sampler_logp, teacher_logp, mask,
                                                             cfg.distill.teacher_kl_coef)
                distill = distill_metrics(sampler_logp, teacher_logp, mask)
            lengths = [len(x) for x in samples["response_ids"]]
            samples["advantages"] = ragged(advantages, lengths)

            with timed(times, "train"):
                critic_metrics, policy_metrics = {}, {}
                if roles.critic:
                    samples["returns"] = ragged(returns, lengths)
                    critic_metrics = update(roles.critic, samples, self.value_loss, cfg)
                if step > a.critic_warmup_steps or not roles.critic:
                    policy_metrics = update(roles.policy, samples, PolicyLoss.from_config(cfg, self.kl_ctl.value), cfg)

            sync = self.publish(step, times)

        kl_metrics = self.update_kl(policy_metrics.pop("kl", 0.0), old_logp, ref_logp, mask) if roles.reference else {}
        # rewards and responses of everything sampled: with dynamic sampling the trained groups are a biased pick
        all_scores = [s for g in sampled for s in g.scores]
        generated = [out for g in sampled for out in g.generated]
        staleness = float(step - 1 - batch.version)  # updates since the policy that sampled the batch
        return {
            "reward/mean": float(np.mean(all_scores)), "reward/std": float(np.std(all_scores)),
            **{f"reward/{name}": float(np.mean([v for g in sampled for v in g.per_term[name]]))
               for name in sampled[0].per_term},
            **{f"reward/{name}": value for name, value in self.reward.stats().items()},
            "reward/groups_with_spread": float(np.mean([g.has_spread for g in sampled])),
            # samples that cannot move the policy; without a KL or entropy term they are not run
            "train/zero_advantage_frac": float(np.mean([not any(row) for row in samples["advantages"]])),
            **kl_metrics, **distill,
            **{f"train/{k}": v for k, v in policy_metrics.items() if not k.startswith("is/")},
            **{f"rollout/{k[3:]}": v for k, v in policy_metrics.items() if k.startswith("is/")},
            "rollout/staleness_mean": staleness, "rollout/staleness_max": staleness,
            **{f"critic/{k}": v for k, v in critic_metrics.items()},
            **response_metrics(generated, all_scores, times["perf/gen_s"], multi_turn=self.episodes is not None),
            **times,
            "perf/sample_rounds": float(len(sampled) // cfg.trainer.batch_size),
            "perf/sync_mb": sync["sync_mb"], "perf/sync_buckets": sync["sync_buckets"],
        }

    def next_batch(self, step: int, times: dict) -> Batch:
        """Batch `step`: sampled now by the current policy, or taken from those sampled ahead."""
        if self.ahead is None:
            batch = self.sample_batch(step, step - 1)
        else:
            if not self.ahead.running:
                self.ahead.start(step - 1, [])
            batch, waited = self.ahead.take(step)
            times["perf/trainer_idle_s"] = waited
        times.update(batch.times)
        return batch

    def sample_batch(self, step: int, version: int) -> Batch:
        times: dict[str, float] = {}
        groups, sampled = self.sample_groups(step, times)
        return Batch(step, version, groups, sampled, times)

    def publish(self, step: int, times: dict) -> dict[str, float]:
        """The updated policy's weights to the engines (async: once the batch they are sampling is done)."""
        def send() -> dict[str, float]:
            with timed(times, "sync"):
                return self.handoff.to_engines(self.send_weights)

        if self.ahead is None:
            return send()
        sync, waited = self.ahead.publish(step, send)
        times["perf/trainer_idle_s"] = times.get("perf/trainer_idle_s", 0.0) + waited
        return sync

    def send_weights(self) -> dict[str, float]:
        return self.roles.policy.send_weights(self.roles.rollout.engines, self.weight_sync)

    def forward_passes(self, samples: dict[str, list]) -> dict[str, list]:
        """The sampler's, the reference's and the teacher's logprobs and the critic's values, each only when
        something reads it; the groups compute at the same time."""
        roles, temperature = self.roles, self.cfg.rollout.temperature
        pending = {}
        if self.needs_old_logp:
            pending["old_logp"] = roles.policy.submit("logprobs", samples, temperature)
        if roles.reference:
            pending["ref_logp"] = roles.reference.submit("logprobs", samples, temperature)
        if roles.teacher:
            pending["teacher_logp"] = roles.teacher.submit("logprobs", samples, temperature)
        if roles.critic:
            pending["old_values"] = roles.critic.submit("values", samples)
        return {name: next(iter(call.result().values())) for name, call in pending.items()}

    def update_kl(self, kl_during_update: float, old_logp, ref_logp, mask) -> dict[str, float]:
        """KL to the reference of the sampled responses (k3: unbiased, never negative); the controller moves."""
        kl = masked_mean(kl_penalty(old_logp, ref_logp, "k3"), mask).item() if old_logp is not None else kl_during_update
        self.kl_ctl.update(kl, mask.shape[0])
        return {"train/kl": kl, "train/kl_coef": self.kl_ctl.value}

    def sample_groups(self, step: int, times: dict) -> tuple[list[Group], list[Group]]:
        """(the groups to train on, every group sampled): n completions of each of the step's prompts, scored.

        With `algo.dynamic_sampling` (DAPO) a group whose samples all scored the same has no group-relative
        advantage, so more prompts are drawn, up to `algo.max_sample_rounds` rounds, until batch_size groups
        have a spread; when the rounds run out, groups without one fill the batch, so every update keeps its
        shape. Prompts and seeds are a pure function of (step, round): resume stays exact.
        """
        cfg, a = self.cfg, self.cfg.algo
        size = cfg.trainer.batch_size
        sampled: list[Group] = []
        for round_ in range(a.max_sample_rounds if a.dynamic_sampling else 1):
            round_seed = cfg.seed + 7_919 * round_
            indices = batch_indices(len(self.rows), step, size, round_seed)
            batch, prompt_ids = [self.rows[i] for i in indices], [self.row_prompts[i] for i in indices]
            seed = round_seed * 1_000_003 + step
            if self.episodes is not None:  # perf/gen_s and perf/env_s are the runner's
                episodes = self.episodes.run([row for row in batch for _ in range(a.n_samples)],
                                             self.turns(self.sampling), seed, times)
                with timed(times, "score"):
                    sampled += self.episode_groups(batch, prompt_ids, episodes)
            else:
                with timed(times, "gen"):
                    generated = self.generate(prompt_ids, self.sampling, seed=seed)
                with timed(times, "score"):
                    sampled += self.scored_groups(batch, prompt_ids, generated)
            if sum(g.has_spread for g in sampled) >= size:
                break
        if not a.dynamic_sampling:
            return sampled, sampled
        return sorted(sampled, key=lambda g: not g.has_spread)[:size], sampled  # stable: spread first, then draw order

    def scored_groups(self, batch: list[dict], prompt_ids: list[list[int]], generated: list[dict]) -> list[Group]:
        responses = [g["response_ids"] or [self.tokenizer.eos_token_id] for g in generated]
        scores, per_term = self.score(batch, self.tokenizer.batch_decode(responses, skip_special_tokens=True))
        a = self.cfg.algo
        if a.overlong_buffer:
            per_term["overlong"] = overlong_penalty([len(g["response_ids"]) for g in generated],
                                                    self.cfg.rollout.max_new_tokens, a.overlong_buffer,
                                                    a.overlong_penalty)
            scores = scores + per_term["overlong"]
        return self.grouped(prompt_ids, generated, responses, self.guarded(scores, per_term, generated), per_term)

    def guarded(self, scores: np.ndarray, per_term: dict[str, np.ndarray], generated: list[dict]) -> np.ndarray:
        """The rewards to train on: the proxy (the terms' sum) through the guards, with the gold (monitored
        terms) and the proxy kept in per_term for metrics (reward/gold, reward/proxy)."""
        per_term["proxy"] = scores
        if (gold := self.reward.gold(per_term)) is not None:
            per_term["gold"] = gold
        shaped, terms = self.guards(scores, [len(g["response_ids"]) for g in generated])
        per_term.update(terms)
        return shaped

    def episode_groups(self, batch: list[dict], prompt_ids: list[list[int]], episodes: list[Trajectory]) -> list[Group]:
        """Episodes scored: the environment's rewards plus the reward terms on each final answer. An episode
        that failed before its first turn trains on nothing (a placeholder sequence with an empty mask)."""
        generated = [t.sample() for t in episodes]
        for out in generated:
            if not out["response_ids"]:
                out.update(prompt_ids=out["prompt_ids"] or [self.tokenizer.pad_token_id],
                           response_ids=[self.tokenizer.eos_token_id], logp=[float("nan")], loss_mask=[0.0])
        scores, per_term = self.score(batch, [t.final_answer for t in episodes])
        per_term["env"] = np.array([t.env_reward for t in episodes], dtype=np.float32)
        return self.grouped(prompt_ids, generated, [out["response_ids"] for out in generated],
                            self.guarded(scores + per_term["env"], per_term, generated), per_term)

    def grouped(self, prompt_ids, generated, responses, scores, per_term) -> list[Group]:
        n = self.cfg.algo.n_samples
        spread = groups_with_spread(torch.tensor(scores), n).tolist()
        parts = [slice(i * n, (i + 1) * n) for i in range(len(prompt_ids))]  # each prompt's n samples
        return [Group(prompt, generated[part], responses[part], scores[part].tolist(),
                      {name: values[part].tolist() for name, values in per_term.items()}, has_spread)
                for prompt, part, has_spread in zip(prompt_ids, parts, spread)]

    def turns(self, sampling: Sampling):
        """Episodes' turns on the rollout engines: one sample per live episode."""
        turn = replace(sampling, n=1)
        return lambda prompt_ids, seed: self.generate(prompt_ids, turn, seed=seed)

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling, seed: int = 0) -> list[dict]:
        """On shared devices the engines take the GPUs first (and keep them until the trainers need them)."""
        self.handoff.to_engines()
        return self.roles.rollout.generate(prompt_ids, sampling, seed=seed)

    def score(self, batch: list[dict], completions: list[str]):
        return score_samples(self.reward, batch, completions, self.cfg.algo.n_samples)

    def evaluate(self, step: int) -> tuple[dict[str, float], list[dict]]:
        if self.episodes is not None:
            return self.held_out.episodes(self.episodes, self.turns(self.greedy))
        return self.held_out(lambda prompts: [s["response_ids"] for s in self.generate(prompts, self.greedy)])


def train(cfg) -> dict[str, float]:
    return run_steps(RLController(cfg), cfg, cfg.job)
