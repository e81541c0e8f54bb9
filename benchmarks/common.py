"""Shared helpers: the benchmark workload, machine description, results folder, tables."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(os.environ.get("RLLIB_RPP_RESULTS", Path(__file__).parent / "results"))

# The tiny example's batch shape: 64 prompts x 4 samples, <= 5 new tokens, 2 optimizer steps.
WORKLOAD = {"num_prompts": 64, "samples_per_prompt": 4, "max_new_tokens": 5, "minibatches": 2,
            "lr": 2e-4, "kl_coef": 0.01}
# The real shape: the smollm2 preset (SmolLM2-135M-Instruct, reasoning-gym chat prompts), 16 prompts x 4
# samples x exactly 32 new tokens (EOS ignored, so every contender generates the same amount), 2 steps.
REAL_WORKLOAD = {"task": "smollm2", "preset": "smollm2", "num_prompts": 16, "samples_per_prompt": 4,
                 "max_new_tokens": 32, "ignore_eos": True, "minibatches": 2, "lr": 1e-5, "kl_coef": 0.001}


def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=1))
    return path


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line([_fmt(r.get(c)) for c in columns]) for r in rows]
    return "\n".join(out)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return "" if v is None else str(v)


def run_child(module: str, args: dict, timeout: float = 1800) -> dict:
    """Run `python -m module --json '<args>'` in a fresh process; return its RESULT json line."""
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", module, json.dumps(args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=Path(__file__).resolve().parents[1])
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{module} failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
