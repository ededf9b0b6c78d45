"""metrics.jsonl: one JSON object per logged step, rewound on resume so no step appears twice."""
from __future__ import annotations

import json
import math
from pathlib import Path


class JsonlSink:
    def __init__(self, output_dir: str, resume_step: int | None = None):
        self.path = Path(output_dir) / "metrics.jsonl"
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            self.rewind(resume_step)

    def rewind(self, step: int) -> None:
        """Keep only the records up to `step` (those a checkpoint at `step` has seen)."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                   for k, v in metrics.items()}}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def close(self) -> None:
        pass


def read_metrics(output_dir: str) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
