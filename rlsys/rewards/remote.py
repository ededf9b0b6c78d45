"""Reward term that scores completions on an ``rlsys serve-reward`` server (reward type ``remote``)."""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import httpx
import numpy as np

from rlsys.errors import RewardError

TOKEN_ENV = "RLSYS_REWARD_TOKEN"
_MAX_BACKOFF_S = 30.0
_FIX = "is `rlsys serve-reward` running there?"


def _jsonable(name: str, values: Any) -> list:
    """A column as plain JSON values (numpy scalars/arrays become Python numbers/lists)."""
    def default(obj: Any) -> Any:
        if isinstance(obj, (np.generic, np.ndarray)):
            return obj.tolist()
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    try:
        return json.loads(json.dumps(list(values), default=default))
    except (TypeError, ValueError) as exc:
        raise RewardError(f"reward column '{name}' cannot be sent to the remote reward: {exc}") from None


def _server_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text.strip()[:200] or response.reason_phrase


class RemoteReward:
    """Calls ``POST {url}/score`` and returns the server's total rewards, retrying transient failures."""

    takes_messages = True  # the conversations travel as a `messages` column, for reward models on the server

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
    ):
        self.url = url.rstrip("/")
        self.token = token or os.environ.get(TOKEN_ENV)
        self.timeout_s = timeout_s
        self.max_retries = max(0, int(max_retries))
        self.backoff_s = backoff_s

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        payload = {
            "prompts": list(prompts),
            "completions": list(completions),
            "columns": {name: _jsonable(name, values) for name, values in columns.items()},
        }
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        endpoint = f"{self.url}/score"
        attempts = self.max_retries + 1
        problem = ""
        with httpx.Client(timeout=self.timeout_s) as client:
            for attempt in range(attempts):
                if attempt:
                    delay = min(self.backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
                    time.sleep(delay * random.uniform(0.8, 1.2))  # jitter: don't retry in lockstep
                try:
                    response = client.post(endpoint, json=payload, headers=headers)
                except httpx.TimeoutException:
                    problem = f"timed out after {self.timeout_s:g}s"
                    continue
                except httpx.TransportError as exc:
                    problem = f"connection failed ({exc or type(exc).__name__})"
                    continue
                if response.status_code == 200:
                    return self._rewards(endpoint, response, len(completions))
                problem = f"HTTP {response.status_code}: {_server_message(response)}"
                if response.status_code == 401:
                    raise RewardError(
                        f"remote reward {endpoint} refused the token ({problem}); set the reward term's "
                        f"'token' or ${TOKEN_ENV} to the server's token"
                    )
                if response.status_code != 429 and response.status_code < 500:
                    raise RewardError(f"remote reward {endpoint} rejected the request: {problem}")
        raise RewardError(f"remote reward {endpoint} failed after {attempts} attempts, last: {problem}; {_FIX}")

    @staticmethod
    def _rewards(endpoint: str, response: httpx.Response, n: int) -> list[float]:
        try:
            rewards = [float(r) for r in response.json()["rewards"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RewardError(
                f"remote reward {endpoint} sent an unexpected answer ({exc}); is it an rlsys reward server?"
            ) from None
        if len(rewards) != n:
            raise RewardError(f"remote reward {endpoint} sent {len(rewards)} rewards for {n} completions")
        return rewards
