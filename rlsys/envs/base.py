"""The environment protocol: what a user writes to train a policy that acts over several turns.

    class MyEnv(Environment):
        tools = [...]                       # JSON schemas, the form chat templates take with tools=
        def reset(self, row) -> messages    # the episode's first messages, from a dataset row
        def step(self, message) -> (observation messages, reward, done, info)   # or a string observation

Both methods may be `async def`. One instance plays one episode, so an environment may keep its state on
`self`. `message` is the assistant's turn as a chat message: {"role": "assistant", "content": str,
"tool_calls": [{"type": "function", "function": {"name", "arguments"}}]}, with "tool_call_errors" listing
calls that could not be parsed. Rewards of every step are summed; `info` may carry "tool_calls" and
"tool_errors" counts and "correct", which the run reports as env/... metrics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


class Environment:
    """Base class (optional: any class with reset and step will do)."""

    tools: list[dict] = []

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs

    def reset(self, row: dict) -> list[dict]:
        """The episode's first messages; by default the row's prompt."""
        return row["messages"]

    def step(self, message: dict) -> "StepResult | tuple":
        raise NotImplementedError


@dataclass
class StepResult:
    observations: list[dict] = field(default_factory=list)
    reward: float = 0.0
    done: bool = False
    info: dict = field(default_factory=dict)


class MalformedOutput(ValueError):
    """What an environment returned is not what the protocol says."""


def check_messages(value: Any, what: str, text_is_a_message: bool = False) -> list[dict]:
    """A list of chat messages. An observation may be a bare string (one user message, as text environments
    answer); reset() may not: the episode's start is a conversation, and a string there is usually a row's
    field returned by mistake."""
    if isinstance(value, str) and text_is_a_message:
        return [{"role": "user", "content": value}]
    if not isinstance(value, (list, tuple)) or not all(isinstance(m, dict) for m in value):
        raise MalformedOutput(f"{what} returned {type(value).__name__} {str(value)[:80]!r}; expected a list of "
                              f"messages, e.g. [{{'role': 'user', 'content': ...}}]")
    for message in value:
        if message.get("role") not in ROLES or not isinstance(message.get("content", ""), str):
            raise MalformedOutput(f"{what} holds {str(message)[:80]}; each message needs a role in {ROLES} and "
                                  f"string content")
    return [dict(m) for m in value]


def check_step(value: Any) -> StepResult:
    """step()'s result as a StepResult: a StepResult or a tuple (observations, reward, done[, info])."""
    if isinstance(value, StepResult):
        parts = (value.observations, value.reward, value.done, value.info)
    elif isinstance(value, tuple) and len(value) in (3, 4):
        parts = (*value, {}) if len(value) == 3 else value
    else:
        raise MalformedOutput(f"step() returned {type(value).__name__}: {str(value)[:80]}; return "
                              f"(observation messages, reward, done, info) or a StepResult")
    observations, reward, done, info = parts
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
        raise MalformedOutput(f"step() returned the reward {reward!r}; it must be a finite number")
    if not isinstance(info, dict):
        raise MalformedOutput(f"step() returned info of type {type(info).__name__}; it must be a dict")
    return StepResult(check_messages(observations or [], "step()'s observations", text_is_a_message=True),
                      float(reward), bool(done), info)
