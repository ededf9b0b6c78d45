"""Checkpoints of a run: checkpoints/step_N/ written atomically, `latest` pointing at the newest, named slots."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from rlsys.actors.group import ActorGroup
from rlsys.errors import RlsysError


class Checkpoints:
    """checkpoints/step_N/ written atomically (temp folder, then rename), `latest` updated last."""

    def __init__(self, output_dir: str, keep_last: int):
        self.root = Path(output_dir) / "checkpoints"
        self.keep_last = keep_last
        self.root.mkdir(parents=True, exist_ok=True)

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.exists():
            return None
        folder = self.root / pointer.read_text().strip()
        return folder if (folder / "trainer_state.json").exists() else None

    def resolve(self, resume) -> Path | None:
        if resume in (False, None, "false"):
            return None
        if resume == "auto":
            return self.latest()
        folder = Path(resume)
        if not (folder / "trainer_state.json").exists():
            raise RlsysError(f"resume={resume} is not an rlsys checkpoint (no trainer_state.json). Use resume=auto "
                             "or a checkpoints/step_N folder.")
        return folder

    def save(self, step: int, groups: dict[str, ActorGroup], state: dict, name: str | None = None) -> Path:
        """checkpoints/step_N, the new latest; or checkpoints/<name> (e.g. `best`), which moves neither."""
        final = self.root / (name or f"step_{step:06d}")
        tmp = self.root / f".tmp_{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            for role, group in groups.items():
                group.save_checkpoint(str(tmp / role))
            with open(tmp / "trainer_state.json", "w") as handle:
                json.dump({"step": step, **state}, handle)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:  # a full disk, a quota, a read-only mount: the previous checkpoint is untouched
            shutil.rmtree(tmp, ignore_errors=True)
            previous = self.latest()
            kept = f"the previous checkpoint {previous.name} is intact" if previous else "no earlier checkpoint exists"
            raise RlsysError(f"could not save checkpoint {final.name} in {self.root} ({err.strerror or err}); {kept}. "
                             "Free disk space (or lower trainer.keep_last) and rerun with resume=auto.") from None
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if name:
            return final
        pointer_tmp = self.root / ".latest.tmp"
        pointer_tmp.write_text(final.name)
        pointer_tmp.replace(self.root / "latest")
        self._prune()
        return final

    def slot(self, name: str) -> "NamedSlot":
        return NamedSlot(self, name)

    def _prune(self) -> None:
        steps = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for old in steps[: max(0, len(steps) - self.keep_last)]:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def load(folder: Path, groups: dict[str, ActorGroup]) -> dict:
        for name, group in groups.items():
            group.load_checkpoint(str(folder / name))
        return json.loads((folder / "trainer_state.json").read_text())


class NamedSlot:
    """A named checkpoint folder (`checkpoints/best`) that controllers save into like into Checkpoints."""

    def __init__(self, checkpoints: Checkpoints, name: str):
        self.checkpoints, self.name = checkpoints, name
        self.folder = checkpoints.root / name

    def save(self, step: int, groups: dict[str, ActorGroup], state: dict) -> Path:
        return self.checkpoints.save(step, groups, state, name=self.name)

    def exists(self) -> bool:
        return (self.folder / "trainer_state.json").exists()
