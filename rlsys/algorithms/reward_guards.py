"""Guards on the reward a policy is trained on, against over-optimising a learned (proxy) reward:
normalisation by running moments, clipping, and a per-token length penalty.

A reward model is only trustworthy near the answers it was trained on; these keep one lucky score from
dominating an update (normalise, clip) and stop the policy from buying reward with length.
"""
from __future__ import annotations

import numpy as np


class RunningMoments:
    """Mean and variance of every reward seen so far (Chan et al.'s parallel update); saved in checkpoints."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: np.ndarray) -> None:
        n = len(values)
        if n == 0:
            return
        mean, m2 = float(np.mean(values)), float(np.var(values)) * n
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta ** 2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return (self.m2 / self.count) ** 0.5 if self.count > 1 else 1.0

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


def guard_rewards(scores: np.ndarray, lengths: list[int], moments: RunningMoments | None, clip: float = 0.0,
                  length_penalty: float = 0.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(the rewards to train on, per-sample terms to log): minus length_penalty per token, normalised by the
    running moments (updated with this batch first) when given, then cut to [-clip, clip] when clip > 0."""
    terms: dict[str, np.ndarray] = {}
    shaped = np.asarray(scores, dtype=np.float64)
    if length_penalty:
        terms["length_penalty"] = -length_penalty * np.asarray(lengths, dtype=np.float64)
        shaped = shaped + terms["length_penalty"]
    if moments is not None:
        moments.update(shaped)
        shaped = (shaped - moments.mean) / max(moments.std, 1e-6)
    if clip:
        terms["clipped"] = (np.abs(shaped) > clip).astype(np.float64)  # the share cut, as reward/clipped
        shaped = np.clip(shaped, -clip, clip)
    return shaped, terms


class RewardGuards:
    """A run's guards (algo.reward_normalize, reward_clip, length_penalty) and the running moments they keep."""

    def __init__(self, algo):
        self.clip, self.length_penalty = algo.reward_clip, algo.length_penalty
        self.moments = RunningMoments() if algo.reward_normalize else None

    def __call__(self, scores: np.ndarray, lengths: list[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if self.moments is None and not self.clip and not self.length_penalty:
            return scores, {}
        return guard_rewards(scores, lengths, self.moments, self.clip, self.length_penalty)

    def state_dict(self) -> dict:
        return self.moments.state_dict() if self.moments is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.moments is not None and state:
            self.moments.load_state_dict(state)
