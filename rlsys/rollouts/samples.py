"""What the trainers read of sampled groups: per-sample records of single answers or multi-turn episodes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlsys.rollouts.ahead import Batch
from rlsys.rollouts.episodes import episode_metrics

CLIPPED = ("length", "max_turns", "max_total_tokens")  # a response or episode that ran out of room


def training_samples(groups: list, multi_turn: bool) -> dict[str, list]:
    """Prompt and response ids and the sampler's logprobs of every sample; episodes add their loss mask (the
    model's tokens; the environment's are context only) and carry prompts of their own."""
    generated = [(g, out, ids) for g in groups for out, ids in zip(g.generated, g.response_ids)]
    samples = {"prompt_ids": [out.get("prompt_ids", g.prompt_ids) for g, out, _ in generated],
               "response_ids": [ids for *_, ids in generated],
               "behaviour_logp": [sampler_logp(out, ids) for _, out, ids in generated]}
    if multi_turn:
        samples["loss_mask"] = [out["loss_mask"] for _, out, _ in generated]
    return samples


def sampler_logp(generated: dict, response_ids: list[int]) -> list[float]:
    """The sampler's logprob of each trained token; NaN where it has none (an empty response stands in as EOS),
    which the importance weights treat as on-policy."""
    logp = generated.get("logp") or []
    return list(logp) if len(logp) == len(response_ids) else [float("nan")] * len(response_ids)


def model_tokens(generated: dict) -> int:
    """Tokens the model sampled (an episode's observations are not)."""
    mask = generated.get("loss_mask")
    return int(sum(mask)) if mask is not None and generated.get("error") is None else len(generated["response_ids"])


def rewards_before_last_turn(generated: list[dict], shape) -> torch.Tensor:
    """[N, T] episodes' rewards of every turn but the last, at the turn's last token."""
    placed = torch.zeros(shape, dtype=torch.float32)
    for row, out in enumerate(generated):
        for end, reward in zip(out.get("turn_ends", [])[:-1], out.get("turn_rewards", [])[:-1]):
            placed[row, end] = reward
    return placed


def response_metrics(generated: list[dict], scores: list[float], gen_s: float, multi_turn: bool) -> dict[str, float]:
    """Lengths and throughput of the model's own tokens; episodes' turns, tool calls and errors."""
    metrics = {"response/length_mean": float(np.mean([model_tokens(out) for out in generated])),
               "response/clipped_frac": float(np.mean([out["finish_reason"] in CLIPPED for out in generated])),
               "perf/gen_tokens_per_s": sum(model_tokens(out) for out in generated) / max(gen_s, 1e-9)}
    if multi_turn:
        metrics |= episode_metrics(generated) | {"env/episode_reward": float(np.mean(scores))}
    return metrics


@dataclass
class Group:
    """One prompt and its n scored samples."""
    prompt_ids: list[int]
    generated: list[dict]
    response_ids: list[list[int]]
    scores: list[float]
    per_term: dict[str, list[float]]
    has_spread: bool  # not all samples scored the same


def batch_from_dict(saved: dict) -> Batch:
    groups = lambda items: [Group(**g) for g in items]
    return Batch(**{**saved, "groups": groups(saved["groups"]), "sampled": groups(saved["sampled"])})


def ragged(tensor: torch.Tensor, lengths: list[int]) -> list[list[float]]:
    return [row[:n] for row, n in zip(tensor.tolist(), lengths)]
