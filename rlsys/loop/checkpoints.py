"""Checkpoints of a run: checkpoints/step_N/ written atomically, `latest` pointing at the newest, named slots.

Each checkpoint lists the size of every file it holds (manifest.json, written at save). A checkpoint whose files
are missing or of another size (a bad copy, a disk that filled up under a copy) is damaged: `resume=auto`
passes over it to the newest intact one and says so; a damaged checkpoint named with `resume=PATH` is refused.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from rlsys.actors.group import ActorGroup
from rlsys.errors import RlsysError
from rlsys.watchdog import RESTARTABLE


MANIFEST = "manifest.json"
STATE = "trainer_state.json"


def damage(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder, or None when every file it saved is there at its saved size."""
    if not (folder / STATE).exists():
        return f"it has no {STATE}"
    if not (folder / MANIFEST).exists():
        return None  # written before manifests: complete as far as can be told
    try:
        sizes = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        return f"its {MANIFEST} cannot be read ({err})"
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes where {size} were saved"
    return None


def write_manifest(folder: Path) -> None:
    sizes = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / MANIFEST).write_text(json.dumps(sizes, indent=0))


class Checkpoints:
    """checkpoints/step_N/ written atomically (temp folder, then rename), `latest` updated last."""

    def __init__(self, output_dir: str, keep_last: int):
        self.root = Path(output_dir) / "checkpoints"
        self.keep_last = keep_last
        self.root.mkdir(parents=True, exist_ok=True)

    def latest(self) -> Path | None:
        """The newest intact checkpoint (`latest` first, then step_N from the highest N); damaged ones passed
        over are named on the console."""
        pointer = self.root / "latest"
        named = [self.root / pointer.read_text().strip()] if pointer.exists() else []
        steps = sorted((p for p in self.root.glob("step_*") if p.is_dir()), reverse=True)
        for folder in dict.fromkeys(named + steps):
            problem = damage(folder) if folder.is_dir() else "it is gone"
            if problem is None:
                return folder
            if folder.is_dir():
                print(f"checkpoint {folder} is damaged ({problem}); passing over it to an older one", flush=True)
        return None

    def resolve(self, resume) -> Path | None:
        if resume in (False, None, "false"):
            return None
        if resume == "auto":
            return self.latest()
        folder = Path(resume)
        if not (folder / STATE).exists():
            raise RlsysError(f"resume={resume} is not an rlsys checkpoint (no {STATE}). Use resume=auto "
                             "or a checkpoints/step_N folder.")
        problem = damage(folder)
        if problem:
            raise RlsysError(f"checkpoint {folder} is damaged: {problem}. Resume from another one (resume=auto "
                             "takes the newest intact checkpoint).")
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
            write_manifest(tmp)
            with open(tmp / STATE, "w") as handle:
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
            try:
                group.load_checkpoint(str(folder / name))
            except RESTARTABLE:  # a dead actor or a stalled call, not a damaged file
                raise
            except Exception as err:  # noqa: BLE001 - torch and DeepSpeed raise many kinds for a damaged file
                cause = str(err).strip().splitlines()[-1][:200]
                raise RlsysError(f"checkpoint {folder} could not be loaded into the {name} ({cause}). Resume from "
                                 f"an older one: resume={folder.parent}/step_N.") from None
        return json.loads((folder / STATE).read_text())


class NamedSlot:
    """A named checkpoint folder (`checkpoints/best`) that controllers save into like into Checkpoints."""

    def __init__(self, checkpoints: Checkpoints, name: str):
        self.checkpoints, self.name = checkpoints, name
        self.folder = checkpoints.root / name

    def save(self, step: int, groups: dict[str, ActorGroup], state: dict) -> Path:
        return self.checkpoints.save(step, groups, state, name=self.name)

    def exists(self) -> bool:
        return (self.folder / STATE).exists()
