"""Watching a gold reward next to the proxy a policy is trained on (`trainer.stop_on_gold_drop`).

The proxy (a reward model) rising while the gold (a rule, a stronger judge: terms marked `monitor: true`)
falls is reward hacking caught in the act. The watch compares means over `gold_window` steps: a new best
gold mean is worth a checkpoint, and a gold mean `gold_tolerance` below the best while the proxy's mean is
above its value then stops the run, which ends with the best checkpoint.
"""
from __future__ import annotations

import math
from collections import deque

BEST, STOP = "best", "stop"


class GoldWatch:
    def __init__(self, window: int, tolerance: float):
        self.window, self.tolerance = window, tolerance
        self.gold: deque[float] = deque(maxlen=window)
        self.proxy: deque[float] = deque(maxlen=window)
        self.best, self.best_step, self.proxy_at_best = -math.inf, 0, -math.inf

    def observe(self, step: int, metrics: dict[str, float]) -> str | None:
        """BEST when this step's gold mean is the best so far, STOP when the run should stop, else None."""
        self.gold.append(metrics["reward/gold"])
        self.proxy.append(metrics["reward/proxy"])
        if len(self.gold) < self.window:
            return None
        gold, proxy = sum(self.gold) / len(self.gold), sum(self.proxy) / len(self.proxy)
        if gold > self.best:
            self.best, self.best_step, self.proxy_at_best = gold, step, proxy
            return BEST
        if gold < self.best - self.tolerance and proxy > self.proxy_at_best:
            return STOP
        return None

    def metrics(self) -> dict[str, float]:
        return {"gold/best_mean": self.best, "gold/best_step": float(self.best_step)} if self.best_step else {}

    def state_dict(self) -> dict:
        return {"gold": list(self.gold), "proxy": list(self.proxy), "best": self.best, "best_step": self.best_step,
                "proxy_at_best": self.proxy_at_best}

    def load_state_dict(self, state: dict) -> None:
        self.gold.extend(state["gold"])
        self.proxy.extend(state["proxy"])
        self.best, self.best_step, self.proxy_at_best = state["best"], state["best_step"], state["proxy_at_best"]
