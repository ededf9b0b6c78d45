"""`rlsys pipeline` as a user runs it (its own Ray, a subprocess): three stages, a table, summary.json."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_pipeline_runs_all_stages_and_writes_the_summary(tmp_path):
    short = {"pretrain": "['trainer.max_steps=20']", "sft": "['trainer.max_steps=5']",
             "grpo": "['trainer.max_steps=2','trainer.eval_every=0','trainer.eval_samples=16']"}
    command = [sys.executable, "-m", "rlsys", "pipeline", f"output_dir={tmp_path}",
               "data.task.heldout_size=100", *(f"pipeline.stages.{stage}={value}" for stage, value in short.items())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary) == ["pretrain", "sft", "grpo"] and all(0 <= v <= 1 for v in summary.values())
    assert "held-out accuracy" in result.stdout
    for stage in summary:
        assert (tmp_path / stage / "checkpoints" / "final" / "model.safetensors").exists()
