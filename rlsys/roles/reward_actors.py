"""Reward terms that need actors: reward models (`type: model`) and LLM judges (`type: judge`).

Each reward model is a frozen TrainWorker group sized by `cluster.reward`; a judge is a group of rollout
engines serving `judge.model`, or the policy's own engines when `judge.model=policy` (self-rewarding).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rlsys import watchdog
from rlsys.actors.group import ActorGroup
from rlsys.actors.rollout import RolloutGroup, Sampling
from rlsys.algorithms.ensemble import combine_heads
from rlsys.config.jobs import SELF_JUDGE, judge_has_engines, reward_model_paths
from rlsys.data.collate import render_ids
from rlsys.data.job_data import response_ids
from rlsys.models.builders import end_of_turn_ids, load_tokenizer
from rlsys.rewards import WeightedReward, plain_specs
from rlsys.rewards.judge import JudgeReward
from rlsys.roles.train_group import start_train_group


def reward_specs(cfg) -> list[dict]:
    """The `reward` terms as plain dicts without unset keys (what `build_reward` takes)."""
    return plain_specs(cfg.reward)


def score_samples(reward: WeightedReward, rows: list[dict], completions: list[str], n: int):
    """(total, per term) of n completions per row (in row order), under the reward_s watchdog."""
    prompts = [row["messages"][-1]["content"] for row in rows for _ in range(n)]
    columns = {k: [row.get(k) for row in rows for _ in range(n)] for k in rows[0] if k != "messages"}
    messages = [row["messages"] for row in rows for _ in range(n)]
    return watchdog.call(reward, prompts, completions, columns, messages=messages, kind="reward_s",
                         role=f"the reward ({', '.join(reward.names)})", call=f"scoring {len(prompts)} samples")


class RewardModelTerm:
    """Scores (prompt, completion) with a reward model, re-tokenised with the reward model's own chat template.

    An ensemble's heads make one score as the term's `ensemble` and `ensemble_penalty` say; their spread is
    reported as reward/<name>_head_std.
    """
    takes_messages = True

    def __init__(self, group: ActorGroup, model_path: str, name: str = "reward_model", ensemble: str = "mean",
                 penalty: float = 0.0):
        self.group = group
        self.tokenizer = load_tokenizer(model_path)
        self.name, self.ensemble, self.penalty = name, ensemble, penalty
        self.last_stats: dict[str, float] = {}

    def __call__(self, prompts, completions, messages, **columns) -> list[float]:
        prompt_ids, responses = [], []
        for conversation, completion in zip(messages, completions):
            ids = render_ids(self.tokenizer, conversation, add_generation_prompt=True)
            prompt_ids.append(ids)
            responses.append(response_ids(self.tokenizer, ids,
                                          conversation + [{"role": "assistant", "content": completion}]))
        heads = self.group.scores({"prompt_ids": prompt_ids, "response_ids": responses})["scores"]
        scores, spread = combine_heads(heads, self.ensemble, self.penalty)
        if len(heads) and len(heads[0]) > 1:
            self.last_stats = {f"{self.name}_head_std": float(spread.mean())}
        return scores


@dataclass
class RewardActors:
    models: dict[str, ActorGroup] = field(default_factory=dict)  # reward model path -> its group
    judge: RolloutGroup | None = None

    def groups(self) -> dict:
        named = {f"reward_model_{i}": g for i, g in enumerate(self.models.values())}
        return {**named, **({"judge": self.judge} if self.judge else {})}

    def kill(self) -> None:
        for group in self.groups().values():
            group.kill()


def start_reward_actors(cfg, device: str, started: RewardActors, judge_engines) -> RewardActors:
    """Start what the reward terms need into `started` (so a caller can kill a half-started set)."""
    for path in reward_model_paths(cfg.reward):
        if path not in started.models:
            started.models[path] = start_train_group("reward", cfg, path, device, trainable=False)
    if judge_has_engines(cfg, cfg.reward):
        started.judge = judge_engines()
    return started


def judge_term(cfg, engines: RolloutGroup, model_path: str, generate=None) -> JudgeReward:
    """A judge asking `engines` (greedy); `generate` overrides how (the policy's engines may sleep)."""
    tokenizer = load_tokenizer(model_path)
    sampling = Sampling(n=1, temperature=0.0, max_new_tokens=cfg.judge.max_new_tokens,
                        stop_token_ids=end_of_turn_ids(tokenizer))
    generate = generate or (lambda ids, params: engines.generate(ids, params))

    def ask(texts: list[str]) -> list[str]:
        ids = [render_ids(tokenizer, [{"role": "user", "content": t}], add_generation_prompt=True) for t in texts]
        replies = generate(ids, sampling)
        return tokenizer.batch_decode([r["response_ids"] for r in replies], skip_special_tokens=True)

    return JudgeReward(ask, cfg.judge)


def actor_terms(cfg, actors: RewardActors, policy_judge=None):
    """`build_reward`'s actor_term: a reward model or judge spec -> (name, function) scored by `actors`.

    `policy_judge()` builds the judge for judge.model=policy (the policy's own engines, self-rewarding).
    """
    def build(spec: dict):
        if spec["type"] == "model":
            name = spec.get("name") or "reward_model"
            return name, RewardModelTerm(actors.models[spec["path"]], spec["path"], name, spec.get("ensemble", "mean"),
                                         spec.get("ensemble_penalty", 0.0))
        if cfg.judge.model == SELF_JUDGE:
            return spec.get("name") or "judge", policy_judge()
        return spec.get("name") or "judge", judge_term(cfg, actors.judge, cfg.judge.model)
    return build
