"""A wheel built from the repository runs jobs when installed outside it: presets, entry point and actors."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """The wheel, installed into a folder of its own (its `rlsys` script included); the environment that
    puts it first on the path, in a working directory outside the repository."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy: setuptools builds in the source folder
    for name in ("rlsys", "actors", "launchers", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(work / "dist"), str(source)], check=True, cwd=work, timeout=300)
    wheel = next((work / "dist").glob("rlsys-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--target", str(work / "site"), str(wheel)], check=True, cwd=work, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(work / "site"), "WANDB_MODE": "offline"}
    return work, env


def test_the_wheel_holds_one_package_with_every_module_and_preset(installed):
    work, _ = installed
    names = zipfile.ZipFile(next((work / "dist").glob("rlsys-*.whl"))).namelist()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {"rlsys"}
    sources = {"rlsys": ROOT / "rlsys", "rlsys/actors": ROOT / "actors", "rlsys/launchers": ROOT / "launchers",
               "rlsys/configs": ROOT / "configs"}
    expected = {f"{prefix}/{path.relative_to(folder).as_posix()}" for prefix, folder in sources.items()
                for pattern in ("*.py", "*.yaml") for path in folder.rglob(pattern) if "__pycache__" not in path.parts}
    assert expected <= set(names), sorted(expected - set(names))


def test_jobs_run_from_the_installed_wheel(installed):
    work, env = installed
    script = work / "site" / "bin" / "rlsys"
    where = subprocess.run([sys.executable, "-c", "import rlsys.actors, rlsys.configs; "
                            "print(rlsys.actors.__file__); print(rlsys.configs.__file__)"],
                           capture_output=True, text=True, env=env, cwd=work, check=True)
    assert all(line.startswith(str(work / "site")) for line in where.stdout.split()), where.stdout

    shown = subprocess.run([str(script), "sft", "--cfg", "job"], capture_output=True, text=True, env=env, cwd=work,
                           timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "job: sft" in shown.stdout

    out = work / "run"
    ran = subprocess.run([str(script), "sft", f"output_dir={out}", "trainer.max_steps=2", "trainer.batch_size=8",
                          "trainer.eval_samples=8", "cluster.policy.num_ranks=1", "logger=[jsonl]"],
                         capture_output=True, text=True, env=env, cwd=work, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps] == [1, 2] and "eval/accuracy" in steps[-1]
    assert (out / "checkpoints" / "final" / "model.safetensors").exists()
