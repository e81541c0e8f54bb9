"""Learner memory at a real vocabulary size (one command):

    python -m benchmarks.memory [--before 3a141d8]

1. Peak RSS of one training iteration (sampling, π_old / π_ref passes, update; everything in one
   process) for a random-initialised model with Qwen2.5's 151,936-entry vocabulary and a small
   body (`random:qwen-vocab-tiny`), 64 completions x 256 response tokens (EOS ignored), default
   memory options: this checkout against an older commit (checked out into a temporary git
   worktree), which is stopped when it passes 20 GB.
2. The learner's peak per micro-batch (one forward + backward + Adam step of the compute core)
   against the memory estimator's prediction, with and without gradient checkpointing.
Each measurement runs in its own process. Results: benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import save, table

ROOT = Path(__file__).resolve().parents[1]
ITERATION = {"mode": "iteration", "completions": 64, "samples": 4, "response_tokens": 256}
MICRO = [
    {"model": "random:qwen-vocab-tiny", "rows": 8, "prompt_tokens": 8, "response_tokens": 256, "chunk_tokens": 1024},
    {"model": "random:gen-10m", "rows": 16, "prompt_tokens": 8, "response_tokens": 256, "chunk_tokens": 1024},
    {"model": "random:gen-10m", "rows": 16, "prompt_tokens": 8, "response_tokens": 256, "chunk_tokens": 1024,
     "gradient_checkpointing": True},
]


def child(args: dict, checkout: Path = ROOT, timeout: float = 1800) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_child.py"), json.dumps(args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=checkout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"memory child failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="3a141d8", help="the commit to compare with ('' to skip)")
    args = parser.parse_args()
    from rpp_hub.models import resolve_model_path

    model = resolve_model_path("random:qwen-vocab-tiny")  # a directory: older checkouts load it too
    rows = [{"code": "this checkout", **child({**ITERATION, "model": model})}]
    if args.before:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.before], cwd=ROOT, check=True,
                           capture_output=True)
            try:
                rows.insert(0, {"code": f"commit {args.before}", **child({**ITERATION, "model": model}, tree)})
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    for r in rows:
        r["peak RSS (GB)"] = f"> {r['peak_rss_gb']} (stopped)" if r["aborted"] else r["peak_rss_gb"]
    print("One iteration, V = 151,936, 64 completions x 256 tokens, default options:")
    print(table(rows, ["code", "peak RSS (GB)", "after_build_gb", "iteration_s"]))
    micro = [child({"mode": "microbatch", **m}) for m in MICRO]
    for m in micro:
        m["checkpointing"] = bool(m.get("gradient_checkpointing"))
        m["tokens"] = m["rows"] * (m["prompt_tokens"] + m["response_tokens"])
        m["measured / predicted"] = round(m["measured_step_gb"] / m["predicted_step_gb"], 2)
    print("\nLearner peak per micro-batch (forward + backward + Adam step) vs the estimator (fp32):")
    print(table(micro, ["model", "tokens", "checkpointing", "measured_step_gb", "predicted_step_gb",
                        "measured / predicted"]))
    print(f"\nsaved {save('memory', {'iteration': rows, 'microbatch': micro})}")


if __name__ == "__main__":
    main()
