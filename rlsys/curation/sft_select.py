"""SFT data selection: what each conversation is judged and deduplicated on, and the top-k pick.

A conversation's reply (its assistant turns) goes through the quality rules and classifier; its prompt (the
user turns) is what near-duplicate removal compares, so the kept set does not ask the same thing twice.
"""
from __future__ import annotations

import numpy as np

from rlsys.data.sources import as_messages


def prompt_and_reply(row: dict) -> tuple[str, str]:
    """(user turns, assistant turns) of a `messages` or `prompt` / `response` row, each joined by blank lines."""
    messages = as_messages(row)
    prompt = "\n\n".join(str(m["content"]) for m in messages if m["role"] == "user")
    reply = "\n\n".join(str(m["content"]) for m in messages if m["role"] == "assistant")
    return prompt, reply


def top_k(ids: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """The ids of the k largest values; ties go to the earlier id."""
    order = np.lexsort((ids, -values))
    return np.sort(ids[order[:k]])
