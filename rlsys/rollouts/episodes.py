"""Multi-turn rollouts: the engines write a turn, the environments answer, until each episode is done.

    prompt   = template(reset(row), tools)                          rendered once
    repeat:  turn = engine.generate(prompt + response)              every live episode at once, on all engines
             response += turn          (loss mask 1, the sampler's logprobs kept)
             observations, reward, done = env.step(parse(turn))     every live episode at once, on the pool
             response += render(new turn only)                      (loss mask 0)
    until done, env.max_turns or env.max_total_tokens

The model's tokens are never decoded and encoded again: the trained ids are the sampled ids. A trajectory is
the same record a single-turn sample is (prompt ids, response ids, logprobs) plus its loss mask, so
advantages, updates, recovery and resume treat it like any other.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from rlsys.actors.env_pool import EnvPool
from rlsys.actors.rollout import sample_seed
from rlsys.envs.loading import EnvSpec, env_spec, tool_schemas
from rlsys.envs.rendering import TurnRenderer
from rlsys.envs.tools import parse_assistant
from rlsys.errors import RlsysError

# (prompt ids of each live episode, seed) -> one generated turn each: response_ids, logp, finish_reason
GenerateTurns = Callable[[list[list[int]], int], list[dict]]


class EnvironmentFailed(RlsysError, RuntimeError):
    """More episodes failed in user code than env.max_error_rate allows."""


@dataclass
class Trajectory:
    row: dict
    prompt_ids: list[int] = field(default_factory=list)
    response_ids: list[int] = field(default_factory=list)  # model turns and observations after the prompt
    loss_mask: list[float] = field(default_factory=list)  # 1.0 on the model's tokens
    logp: list[float] = field(default_factory=list)  # the sampler's logprobs; NaN on observation tokens
    turn_ends: list[int] = field(default_factory=list)  # index in response_ids of each model turn's last token
    turn_rewards: list[float] = field(default_factory=list)  # the environment's reward after each turn
    messages: list[dict] = field(default_factory=list)  # the conversation, as the environment saw it
    info: dict = field(default_factory=dict)  # the environment's last info
    finish_reason: str = "running"  # done | max_turns | max_total_tokens | error
    error: str | None = None

    @property
    def live(self) -> bool:
        return self.finish_reason == "running"

    @property
    def turns(self) -> int:
        return len(self.turn_ends)

    @property
    def env_reward(self) -> float:
        return float(sum(self.turn_rewards))

    @property
    def final_answer(self) -> str:
        """The content of the last assistant message (what reward terms score)."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "assistant"), "")

    def add_turn(self, ids: list[int], logp: list[float]) -> None:
        self.response_ids += ids
        self.loss_mask += [1.0] * len(ids)
        self.logp += list(logp) if len(logp) == len(ids) else [math.nan] * len(ids)
        self.turn_ends.append(len(self.response_ids) - 1)

    def add_observation(self, ids: list[int]) -> None:
        self.response_ids += ids
        self.loss_mask += [0.0] * len(ids)
        self.logp += [math.nan] * len(ids)

    def fail(self, error: str) -> None:
        """The episode ends; none of its tokens are trained on (the fault was not the model's)."""
        self.finish_reason, self.error = "error", error
        self.loss_mask = [0.0] * len(self.loss_mask)

    def sample(self) -> dict:
        """The sample record the trainer reads (what single-turn rollouts return, plus the mask)."""
        return {"prompt_ids": self.prompt_ids, "response_ids": self.response_ids, "logp": self.logp,
                "loss_mask": self.loss_mask, "finish_reason": self.finish_reason, "turn_ends": self.turn_ends,
                "turn_rewards": self.turn_rewards, "turns": self.turns, "error": self.error,
                "tool_calls": int(self.info.get("tool_calls", 0)), "tool_errors": int(self.info.get("tool_errors", 0))}


@dataclass
class Limits:
    max_turns: int
    max_total_tokens: int
    max_error_rate: float


class EpisodeRunner:
    """The environment pool, the renderer and the limits of a job's episodes."""

    def __init__(self, spec: EnvSpec, tokenizer, end_of_turn: list[int], limits: Limits, model: str = ""):
        self.spec, self.tokenizer, self.limits = spec, tokenizer, limits
        self.end_of_turn = set(end_of_turn)
        self.renderer = TurnRenderer(tokenizer, tool_schemas(spec), end_of_turn, model)
        self.pool: EnvPool | None = None
        self.ids = itertools.count()  # episode ids are never reused, so concurrent batches cannot collide

    def start(self, num_workers: int, cpus_per_worker: float) -> None:
        self.pool = EnvPool(self.spec, num_workers, cpus_per_worker)

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.kill()
            self.pool = None

    def run(self, rows: list[dict], generate: GenerateTurns, seed: int, times: dict | None = None) -> list[Trajectory]:
        """One episode per row (repeat a row for several samples), in row order."""
        times = times if times is not None else {}
        episodes = {next(self.ids): Trajectory(row) for row in rows}
        env_s = gen_s = 0.0
        began = time.perf_counter()
        for episode, outcome in self.pool.reset({e: t.row for e, t in episodes.items()}).items():
            self.begin(episodes[episode], outcome)
        env_s += time.perf_counter() - began
        for turn in range(self.limits.max_turns):
            live = {e: t for e, t in episodes.items() if t.live}
            if not live:
                break
            began = time.perf_counter()
            outputs = generate([t.prompt_ids + t.response_ids for t in live.values()], sample_seed(seed, turn))
            gen_s += time.perf_counter() - began
            messages = {e: self.model_turn(t, out) for (e, t), out in zip(live.items(), outputs)}
            began = time.perf_counter()
            results = self.pool.step(messages)
            env_s += time.perf_counter() - began
            for episode, outcome in results.items():
                self.observe(live[episode], outcome, last_turn=turn + 1 == self.limits.max_turns)
        self.pool.close(list(episodes))
        trajectories = list(episodes.values())
        times["perf/env_s"] = times.get("perf/env_s", 0.0) + env_s
        times["perf/gen_s"] = times.get("perf/gen_s", 0.0) + gen_s
        self.check_errors(trajectories)
        return trajectories

    def begin(self, trajectory: Trajectory, outcome: dict) -> None:
        if outcome.get("error"):
            return trajectory.fail(f"reset(): {outcome['error']}")
        trajectory.messages = outcome["messages"]
        trajectory.prompt_ids = self.renderer.prompt_ids(trajectory.messages)
        if len(trajectory.prompt_ids) >= self.limits.max_total_tokens:
            trajectory.fail(f"its first prompt has {len(trajectory.prompt_ids)} tokens, env.max_total_tokens="
                            f"{self.limits.max_total_tokens}")

    def model_turn(self, trajectory: Trajectory, output: dict) -> dict:
        """The sampled tokens join the trajectory as they are (cut to the token budget: a prefix of a sample
        is what sampling with fewer tokens would have drawn); the environment sees them as a message."""
        room = self.limits.max_total_tokens - len(trajectory.prompt_ids) - len(trajectory.response_ids)
        ids, logp = output["response_ids"][:room], output.get("logp", [])[:room]
        trajectory.add_turn(ids, logp)
        if len(ids) < len(output["response_ids"]) or len(trajectory.prompt_ids) + len(trajectory.response_ids) >= \
                self.limits.max_total_tokens:
            trajectory.finish_reason = "max_total_tokens"
        message = parse_assistant(self.tokenizer.decode(ids, skip_special_tokens=True))
        trajectory.messages.append(message)
        return message

    def observe(self, trajectory: Trajectory, outcome: dict, last_turn: bool) -> None:
        if outcome.get("error"):
            return trajectory.fail(f"step(): {outcome['error']}")
        trajectory.turn_rewards.append(outcome["reward"])
        trajectory.info = outcome["info"]
        if outcome["done"]:
            trajectory.finish_reason = "done"
        if not trajectory.live:
            return
        if last_turn:
            trajectory.finish_reason = "max_turns"
            return
        ended = bool(trajectory.response_ids) and trajectory.response_ids[-1] in self.end_of_turn
        ids = self.renderer.observation_ids(outcome["observations"], ended)
        if len(trajectory.prompt_ids) + len(trajectory.response_ids) + len(ids) >= self.limits.max_total_tokens:
            trajectory.finish_reason = "max_total_tokens"
            return
        trajectory.add_observation(ids)
        trajectory.messages += outcome["observations"]

    def check_errors(self, trajectories: list[Trajectory]) -> None:
        failed = [t for t in trajectories if t.error]
        if not failed:
            return
        first = failed[0]
        where = f"environment {self.spec.name}, row {str(first.row.get('messages', first.row))[:100]}"
        if len(failed) > self.limits.max_error_rate * len(trajectories):
            raise EnvironmentFailed(
                f"{len(failed)} of {len(trajectories)} episodes failed, more than env.max_error_rate="
                f"{self.limits.max_error_rate:g} allows. The first: {where}: {first.error}. Fix the environment, "
                f"or raise env.max_error_rate (or env.timeout_s) to let it fail that often")
        print(f"env: {len(failed)} of {len(trajectories)} episodes failed and were not trained on; the first: "
              f"{where}: {first.error}", flush=True)


def episode_runner(cfg, tokenizer, model_path: str, end_of_turn: list[int]) -> EpisodeRunner:
    """The runner of a job's `env` section (its pool starts with the job's actors)."""
    e = cfg.env
    return EpisodeRunner(env_spec(cfg), tokenizer, end_of_turn, Limits(e.max_turns, e.max_total_tokens,
                                                                       e.max_error_rate), model_path)


def episode_metrics(samples: list[dict], prefix: str = "env") -> dict[str, float]:
    """Means over episodes' sample records (Trajectory.sample()); tool errors and failed episodes counted."""
    count = max(1, len(samples))
    return {f"{prefix}/turns_mean": sum(s["turns"] for s in samples) / count,
            f"{prefix}/tool_calls_mean": sum(s["tool_calls"] for s in samples) / count,
            f"{prefix}/tool_errors": float(sum(s["tool_errors"] for s in samples)),
            f"{prefix}/errors": float(sum(s["error"] is not None for s in samples)),
            f"{prefix}/truncated_frac": sum(s["finish_reason"] in ("max_turns", "max_total_tokens")
                                            for s in samples) / count}


def transcript(trajectory: Trajectory, tokenizer) -> str:
    """The episode as the model saw it, special tokens and all (for the evaluation tables)."""
    return tokenizer.decode(trajectory.prompt_ids + trajectory.response_ids, skip_special_tokens=False)
