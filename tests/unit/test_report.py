"""`rlsys report`: plots and a summary from metrics.jsonl, for one run and for a pipeline's stages."""
import json
import math
import random

import numpy as np
import pytest
from matplotlib.image import imread

from rlsys.launchers.report import main_report

RL_FIGURES = ("loss.png", "reward.png", "kl.png", "eval_accuracy.png", "step_time.png")


def rl_records(steps: int = 60, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = [{"step": 0, "eval/accuracy": 0.12}]
    for step in range(1, steps + 1):
        parts = {"gen": 0.6 + rng.random() * 0.2, "score": 0.02, "ref": 0.15, "train": 0.4 + rng.random() * 0.1,
                 "sync": 0.05}
        records.append({
            "step": step,
            "train/policy_loss": -0.02 + rng.gauss(0, 0.05), "critic/value_loss": 1.5 * math.exp(-step / 20) + 0.1,
            "reward/mean": 0.2 + 0.5 * step / steps + rng.gauss(0, 0.05), "reward/std": 0.3,
            "train/kl": 0.001 * step + abs(rng.gauss(0, 0.005)),
            "train/clip_frac": None,  # logged but null: must not break anything
            **{f"perf/{k}_s": v for k, v in parts.items()}, "perf/step_s": sum(parts.values()) + 0.05,
            **({"eval/accuracy": 0.12 + 0.5 * step / steps} if step % 20 == 0 else {}),
        })
    return records


def sft_records(steps: int = 40) -> list[dict]:
    return [{"step": s, "train/loss": 3.0 * math.exp(-s / 10) + 0.3, "perf/step_s": 0.2 + 0.01 * (s % 3),
             **({"eval/accuracy": 0.3} if s == steps else {})} for s in range(1, steps + 1)]


def write_run(folder, records, tail: str = "") -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def assert_image(path) -> None:
    assert path.stat().st_size > 10_000, f"{path.name} looks empty"
    pixels = imread(path)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500
    assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 50, f"{path.name} is nearly blank"


def test_rl_run_gets_one_figure_per_family_and_a_summary(tmp_path, capsys):
    run = tmp_path / "grpo"
    write_run(run, rl_records(), tail='{"step": 61, "train/po')  # a run still writing its last line
    assert main_report([str(run)]) == 0
    for name in RL_FIGURES:
        assert_image(run / "report" / name)
    summary = (run / "report" / "summary.txt").read_text()
    for metric in ("train/policy_loss", "critic/value_loss", "reward/mean", "train/kl", "eval/accuracy"):
        assert metric in summary
    assert "steps: 0..60" in summary
    for phase in ("gen", "train", "sync", "other"):
        assert f"  {phase} " in summary
    assert "%" in summary and summary in capsys.readouterr().out


def test_supervised_run_has_loss_accuracy_and_step_time_only(tmp_path):
    write_run(tmp_path / "sft", sft_records())
    assert main_report([str(tmp_path / "sft")]) == 0
    assert sorted(p.name for p in (tmp_path / "sft" / "report").glob("*.png")) == [
        "eval_accuracy.png", "loss.png", "step_time.png"]


def test_pipeline_reports_each_stage_and_accuracy_per_stage(tmp_path):
    write_run(tmp_path / "pretrain", sft_records(30))
    write_run(tmp_path / "sft", sft_records())
    write_run(tmp_path / "grpo", rl_records(steps=20))  # few steps: step time as stacked bars
    (tmp_path / "summary.json").write_text(json.dumps({"pretrain": 0.05, "sft": 0.3, "grpo": 0.62}))
    assert main_report([str(tmp_path)]) == 0
    report = tmp_path / "report"
    assert_image(report / "accuracy_per_stage.png")
    for name in RL_FIGURES:
        assert_image(report / "grpo" / name)
    assert (report / "sft" / "loss.png").exists() and (report / "pretrain" / "loss.png").exists()
    summary = (report / "summary.txt").read_text()
    assert "grpo" in summary and "0.620" in summary and "reward/mean" in summary and "train/loss" in summary


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "absent", "no such folder"),
    (lambda root: root, "no metrics.jsonl"),
    (lambda root: (write_run(root / "empty", []), root / "empty")[1], "no metrics yet"),
])
def test_unusable_folder_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    assert main_report([str(make(tmp_path))]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("rlsys report: error: ") and message in line
