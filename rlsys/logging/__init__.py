"""Metric sinks behind one object: `MetricsLogger.log(step, metrics)` reaches console, JSONL and wandb."""
from __future__ import annotations

from omegaconf import OmegaConf

from rlsys.logging.console import ConsoleSink
from rlsys.logging.jsonl import JsonlSink, read_metrics


class MetricsLogger:
    def __init__(self, cfg, title: str, total_steps: int, start_step: int = 0, resumed: bool = False):
        self.sinks = []
        if "console" in cfg.logger:
            self.sinks.append(ConsoleSink(title, total_steps, start_step, cfg.trainer.log_every))
        if "jsonl" in cfg.logger:
            self.sinks.append(JsonlSink(cfg.output_dir, start_step if resumed else None))
        if "wandb" in cfg.logger:
            from rlsys.logging.wandb_sink import WandbSink

            self.sinks.append(WandbSink(cfg.output_dir, OmegaConf.to_container(cfg, resolve=True), cfg.wandb, resumed))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.log(step, metrics)

    def rewind(self, step: int) -> None:
        """After a recovery: forget what was logged past the checkpoint the run goes on from."""
        for sink in self.sinks:
            if hasattr(sink, "rewind"):
                sink.rewind(step)

    def log_samples(self, step: int, rows: list[dict]) -> None:
        for sink in self.sinks:
            if hasattr(sink, "log_samples"):
                sink.log_samples(step, rows)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


__all__ = ["MetricsLogger", "read_metrics"]
