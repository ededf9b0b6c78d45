"""Per-token KL estimators and KL-coefficient controllers."""

from __future__ import annotations

from typing import Any

import torch

from rlsys.config.choices import KL_ESTIMATORS


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || ref) from sampled-token log-probs.

    Estimators follow Schulman's "Approximating KL Divergence" note: k1 is unbiased
    but high variance (can be negative), k2 is low variance but biased, k3 is
    unbiased, always >= 0, and low variance.
    """
    log_ratio = logp.float() - ref_logp.float()
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        # exp() overflows only where the reference is far above the policy: the cap is on that side alone. Where the
        # policy is far above the reference the estimate grows linearly and keeps its gradient.
        neg_log_ratio = (-log_ratio).clamp(max=20.0)
        return torch.exp(neg_log_ratio) - neg_log_ratio - 1.0
    if estimator == "abs":
        return log_ratio.abs()
    raise ValueError(f"Unknown KL estimator {estimator!r}; allowed estimators: {', '.join(KL_ESTIMATORS)}")


class FixedKLController:
    """Constant KL coefficient; ``update`` is a no-op so trainers can treat both alike."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. (2019), steering KL towards ``target``.

    The proportional error is clipped to +-0.2 so a single noisy batch cannot
    change the coefficient by much; ``horizon`` sets how many samples it takes.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0:
            raise ValueError(f"target must be > 0, got {target!r}")
        if horizon <= 0:
            raise ValueError(f"horizon must be > 0, got {horizon!r}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = int(state["horizon"])


KLController = FixedKLController | AdaptiveKLController


def build_kl_controller(
    kind: str, kl_coef: float, target: float | None = None, horizon: int | None = None
) -> KLController:
    """Factory used by configs: ``kind`` is ``"fixed"`` or ``"adaptive"``."""
    if kind == "fixed":
        return FixedKLController(kl_coef)
    if kind == "adaptive":
        if target is None or horizon is None:
            raise ValueError("adaptive KL controller needs both target and horizon")
        return AdaptiveKLController(kl_coef, target, horizon)
    raise ValueError(f"Unknown KL controller kind {kind!r}; allowed kinds: fixed, adaptive")
