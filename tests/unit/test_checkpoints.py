"""Checkpoints you can trust: every file's size is recorded at save; resume=auto passes over a damaged checkpoint
to the newest intact one (and says so), a damaged one named explicitly is refused, a load that fails is one line."""
import json

import pytest

from rlsys.errors import RlsysError
from rlsys.loop.checkpoints import Checkpoints


class FileGroup:
    """An actor group whose checkpoint is one model file of `size` bytes."""

    def __init__(self, size: int = 1000, load_error: Exception | None = None):
        self.size, self.load_error = size, load_error

    def save_checkpoint(self, folder: str) -> None:
        from pathlib import Path

        Path(folder).mkdir(parents=True)
        (Path(folder) / "mp_rank_00_model_states.pt").write_bytes(b"w" * self.size)

    def load_checkpoint(self, folder: str) -> None:
        if self.load_error:
            raise self.load_error


@pytest.fixture
def saved(tmp_path) -> Checkpoints:
    checkpoints = Checkpoints(str(tmp_path), keep_last=3)
    for step in (2, 4, 6):
        checkpoints.save(step, {"policy": FileGroup()}, {})
    return checkpoints


def model_file(checkpoints: Checkpoints, step: int):
    return checkpoints.root / f"step_{step:06d}" / "policy" / "mp_rank_00_model_states.pt"


def test_the_manifest_lists_every_saved_file_with_its_size(saved):
    manifest = json.loads((saved.root / "step_000006" / "manifest.json").read_text())
    assert manifest == {"policy/mp_rank_00_model_states.pt": 1000}
    assert saved.latest().name == "step_000006"


@pytest.mark.parametrize("damage, why", [
    (lambda f: f.write_bytes(f.read_bytes()[:300]), "has 300 bytes where 1000 were saved"),  # a bad copy, a full disk
    (lambda f: f.unlink(), "policy/mp_rank_00_model_states.pt is missing"),
    (lambda f: (f.parents[1] / "trainer_state.json").unlink(), "it has no trainer_state.json"),
])
def test_resume_auto_passes_over_a_damaged_checkpoint(saved, capsys, damage, why):
    damage(model_file(saved, 6))
    assert saved.resolve("auto").name == "step_000004"
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and "step_000006 is damaged" in said[0] and why in said[0]


def test_the_newest_intact_checkpoint_when_several_are_damaged(saved):
    for step in (4, 6):
        model_file(saved, step).write_bytes(b"")
    assert saved.latest().name == "step_000002"
    model_file(saved, 2).unlink()
    assert saved.latest() is None, "nothing intact: the run starts from the beginning"


def test_a_damaged_checkpoint_named_explicitly_is_refused(saved):
    model_file(saved, 4).write_bytes(b"w" * 10)
    with pytest.raises(RlsysError, match=r"step_000004 is damaged: policy/.* has 10 bytes where 1000 were saved. "
                                         r"Resume from another one \(resume=auto"):
        saved.resolve(str(saved.root / "step_000004"))
    assert saved.resolve(str(saved.root / "step_000002")).name == "step_000002"


def test_a_checkpoint_saved_before_manifests_still_resumes(saved):
    (saved.root / "step_000006" / "manifest.json").unlink()
    assert saved.latest().name == "step_000006"


def test_a_checkpoint_that_fails_to_load_is_one_line(saved):
    broken = FileGroup(load_error=RuntimeError("PytorchStreamReader failed reading zip archive: failed finding "
                                                "central directory"))
    with pytest.raises(RlsysError) as failed:
        Checkpoints.load(saved.latest(), {"policy": broken})
    message = str(failed.value)
    assert "step_000006 could not be loaded into the policy" in message and "central directory" in message
    assert "resume=" in message and len(message.splitlines()) == 1


def test_an_interruption_says_where_a_rerun_goes_on_from(saved, tmp_path):
    from rlsys.launchers.run import resume_point

    assert resume_point(str(tmp_path)) == f"resume=auto goes on from {saved.root / 'step_000006'}"
    assert "no checkpoint was saved" in resume_point(str(tmp_path / "never_saved"))
