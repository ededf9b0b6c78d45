"""`rlsys distill`: the teacher's verified answers become SFT data, and the student learns from them: it improves
on its start or reaches the teacher's level (a student that starts level with the teacher has little to gain)."""
import json

import pytest

from tests.e2e.conftest import run_job

pytestmark = pytest.mark.e2e


def test_distill_writes_a_dataset_and_the_student_improves(pretrained, sft_model, tmp_path):
    teacher, student = sft_model[0] / "checkpoints" / "final", pretrained[0] / "checkpoints" / "final"
    metrics = run_job("distill", tmp_path, f"distill.teacher={teacher}", f"model.path={student}",
                      "distill.n_samples=8", "distill.temperature=1.0", "trainer.max_steps=40",
                      "trainer.eval_every=20")
    rows = [json.loads(line) for line in (tmp_path / "distilled.jsonl").read_text().splitlines()]
    funnel = json.loads((tmp_path / "distill_summary.json").read_text())
    assert funnel["kept"] == len(rows) > 0 and funnel["answers"] == 8 * funnel["prompts"]
    assert all(row["reward"] == 1.0 and row["messages"][-1]["role"] == "assistant" for row in rows)
    accuracy = [m["eval/accuracy"] for m in metrics if m.get("eval/accuracy") is not None]
    teacher_accuracy = [m["eval/accuracy"] for m in sft_model[1] if m.get("eval/accuracy") is not None][-1]
    assert accuracy[-1] >= min(accuracy[0] + 0.03, teacher_accuracy - 0.02), \
        f"student held-out accuracy {accuracy}, teacher {teacher_accuracy}"
    assert (tmp_path / "checkpoints" / "final" / "config.json").exists()
