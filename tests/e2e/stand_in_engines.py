"""Rollout engines that misbehave, as Ray actors (in a module of their own: workers import them by name)."""
import time


class HangingEngine:
    """Starts, then never answers: every call sleeps far past any deadline here."""

    def __init__(self, spec):
        self.spec = spec

    def startup_times(self) -> dict:
        return {}

    def _hang(self, *args):
        time.sleep(600)

    wake_up = sleep = prompt_logprobs = generate = transfer_update = location = _hang

    def transfer_start(self) -> None:
        raise ValueError("There is no parameter named 'model.layers.0.mlp.gate.weight'")


class SlowStartEngine(HangingEngine):
    def startup_times(self) -> dict:
        time.sleep(600)
        return {}
