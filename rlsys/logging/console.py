"""Progress on the terminal: a rich bar (step, ETA, loss, tokens/s) on a TTY, otherwise a plain line every few
seconds (and at evaluations and the last step); every step is in metrics.jsonl either way."""
from __future__ import annotations

import sys
import time

SHOWN = {"train/loss": "loss", "reward/mean": "reward", "eval/accuracy": "eval_acc", "train/kl": "kl",
         "perf/tokens_per_s": "tok/s", "perf/gen_tokens_per_s": "gen_tok/s", "perf/step_s": "step_s"}


def _summary(metrics: dict[str, float]) -> str:
    return "  ".join(f"{label}={metrics[k]:.4g}" for k, label in SHOWN.items() if metrics.get(k) is not None)


class ConsoleSink:
    def __init__(self, title: str, total_steps: int, start_step: int = 0, every: int = 1, interval_s: float = 5.0):
        self.total, self.every, self.start_time, self.start_step = total_steps, every, time.time(), start_step
        self.interval_s, self.last_line = interval_s, 0.0
        self.progress = None
        if sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
            self.task = self.progress.add_task(title, total=total_steps, completed=start_step, info="")
            self.progress.start()
        self.title = title

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=_summary(metrics))
        elif (step % self.every == 0 and time.time() - self.last_line >= self.interval_s) or step == self.total \
                or "eval/accuracy" in metrics:
            self.last_line = time.time()
            elapsed = time.time() - self.start_time
            rate = (step - self.start_step) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - step) / rate if rate > 0 else float("nan")
            print(f"[{self.title}] step {step}/{self.total}  eta {eta:.0f}s  {_summary(metrics)}", flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
