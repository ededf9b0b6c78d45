"""One score from a reward model ensemble's heads, and the bootstrap that makes the heads differ.

A policy that finds answers the reward model overrates usually finds them where the heads disagree:
scoring with mean - penalty x std (or the minimum) makes such answers worth less (Coste et al. 2023,
"Reward Model Ensembles Help Mitigate Overoptimization").
"""
from __future__ import annotations

import numpy as np

from rlsys.config.choices import ENSEMBLES


def combine_heads(scores, how: str = "mean", penalty: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(one score per row, the heads' standard deviation per row) from rows of per-head scores."""
    heads = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    spread = heads.std(axis=1)
    if how == "min":
        return heads.min(axis=1), spread
    if how != "mean":
        raise ValueError(f"unknown ensemble {how!r}; choose one of {ENSEMBLES}")
    return heads.mean(axis=1) - penalty * spread, spread


def bootstrap_weights(pair_ids, heads: int, seed: int = 0) -> np.ndarray:
    """[pairs, heads] Poisson(1) counts: how often each head sees each pair in its bootstrap of the data.

    A pure function of (seed, pair, head), so every rank, micro-batch split and resume agrees. One head
    trains on every pair once.
    """
    if heads == 1:
        return np.ones((len(pair_ids), 1))
    return np.stack([np.random.default_rng((seed, int(i))).poisson(1.0, heads) for i in pair_ids]).astype(np.float64)
