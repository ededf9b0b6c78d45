"""Held-out evaluation, the same for every job that generates: greedy completions of the evaluation prompts,
scored by the job's reward terms (or `eval.reward`), and `eval/accuracy` where the rows carry an `answer`.

The rows are `data.eval`; without it, the embedded task's held-out split when the job trains on the embedded
task, and nothing when `data.train` is the user's (the arithmetic task says nothing about the user's).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from rlsys.data.job_data import encode_prompts, prompt_rows
from rlsys.errors import ConfigError
from rlsys.rewards import WeightedReward, answer_match, build_reward, plain_specs

Generate = Callable[[list[list[int]]], list[list[int]]]  # prompt ids -> greedy response ids
SHOWN = 8  # sample completions logged per evaluation


class HeldOut:
    """The evaluation rows of a job, encoded once, and how to score a model's greedy answers to them."""

    def __init__(self, cfg, tokenizer, reward: WeightedReward | None = None):
        self.tokenizer = tokenizer
        self.rows: list[dict] = []
        if cfg.data.eval or not (cfg.data.train or cfg.data.mixture):
            self.rows = prompt_rows(cfg, "eval")[: cfg.trainer.eval_samples]
        else:
            print(f"[{cfg.job}] no data.eval: nothing is evaluated (set data.eval to held-out rows of your task)")
        # eval.reward, else the job's reward terms. Jobs with reward actors (RL, rlsys eval) pass the reward
        # built with them; the others score with the terms that need none.
        terms = cfg.eval.reward if cfg.eval.reward is not None else cfg.reward
        self.reward = reward if reward is not None else build_reward(plain_specs(terms))
        self.prompt_ids = encode_prompts(cfg, tokenizer, self.rows) if self.rows else []
        self.prompts = [r["messages"][-1]["content"] for r in self.rows]  # the question each reward sees
        self.has_answers = bool(self.rows) and all(r.get("answer") is not None for r in self.rows)
        if self.rows:
            check_columns(self.reward, self.rows, cfg.data.eval or "the embedded held-out split", "eval.reward")

    def __bool__(self) -> bool:
        return bool(self.rows)

    def __call__(self, generate: Generate) -> tuple[dict[str, float], list[dict]]:
        """(eval/reward, eval/<term>, eval/accuracy where rows have answers; a few sample completions)."""
        if not self.rows:
            return {}, []
        metrics, samples = self.score(self.answer(generate))
        return metrics, samples[:SHOWN]

    def episodes(self, runner, generate_turns) -> tuple[dict[str, float], list[dict]]:
        """Greedy multi-turn episodes from the rows: the final answers scored as above, the environment's
        rewards and turn counts as eval/episode_reward, eval/turns_mean, ...; the transcripts shown."""
        from rlsys.rollouts.episodes import episode_metrics, transcript

        if not self.rows:
            return {}, []
        trajectories = runner.run(self.rows, generate_turns, seed=0)
        metrics, samples = self.score([t.final_answer for t in trajectories])
        env_rewards = [t.env_reward for t in trajectories]
        totals = [s.get("reward", 0.0) + r for s, r in zip(samples, env_rewards)]
        metrics.update(episode_metrics([t.sample() for t in trajectories], "eval"),
                       **{"eval/episode_reward": float(np.mean(totals))})
        for sample, t, total in zip(samples, trajectories, totals):
            sample.update(episode_reward=total, turns=t.turns, transcript=transcript(t, self.tokenizer))
        return metrics, samples[:SHOWN]

    def answer(self, generate: Generate) -> list[str]:
        return self.tokenizer.batch_decode(generate(self.prompt_ids), skip_special_tokens=True)

    def score(self, completions: list[str]) -> tuple[dict[str, float], list[dict]]:
        """The metrics of these completions of the rows, and every row's sample."""
        columns = {k: [r.get(k) for r in self.rows] for k in self.rows[0] if k != "messages"}
        metrics: dict[str, float] = {}
        samples = [{"prompt": p, "completion": c} for p, c in zip(self.prompts, completions)]
        if self.reward.terms:
            total, per_term = self.reward(self.prompts, completions, columns,
                                          messages=[r["messages"] for r in self.rows])
            metrics["eval/reward"] = float(np.mean(total))
            metrics.update({f"eval/{name}": float(np.mean(s)) for name, s in per_term.items()})
            for sample, score in zip(samples, total):
                sample["reward"] = float(score)
        if self.has_answers:
            correct = answer_match(self.prompts, completions, [str(a) for a in columns["answer"]])
            metrics["eval/accuracy"] = float(np.mean(correct))
            for sample, answer, ok in zip(samples, columns["answer"], correct):
                sample.update(answer=answer, correct=ok)
        return metrics, samples


def check_columns(reward: WeightedReward, rows: list[dict], source: str, setting: str) -> None:
    """Every column a reward term reads is in every row, or the job stops before it starts. `setting` is the
    config key that chose the terms."""
    present = set.intersection(*(set(r) for r in rows))
    for term, needed in reward.required_columns().items():
        missing = [c for c in needed if c not in present]
        if missing:
            raise ConfigError(
                f"the {setting} term '{term}' reads the column(s) {missing}; the rows of {source} have "
                f"{sorted(present - {'messages'})}. Map a column of yours to it (data.columns.{missing[0]}="
                f"YOUR_COLUMN), or set {setting} to terms your rows can feed.")
