"""Reward shaping by response length: DAPO's soft overlong penalty."""
from __future__ import annotations

import numpy as np


def overlong_penalty(lengths: list[int], max_new_tokens: int, buffer: int, factor: float) -> np.ndarray:
    """0 up to `max_new_tokens - buffer` tokens, then falling linearly to -factor at `max_new_tokens` (a cut-off
    response gets all of it): long answers lose reward smoothly instead of all at once at the limit."""
    if buffer <= 0:
        return np.zeros(len(lengths))
    over = np.asarray(lengths, dtype=np.float64) - (max_new_tokens - buffer)
    return -factor * np.clip(over / buffer, 0.0, 1.0)
