"""The real model side by side: REINFORCE++ and GRPO through this package against TRL's GRPOTrainer.

    python -m benchmarks.real_model [--minutes 10] [--eval-every 60] [--only rllib-rpp-reinforce_pp ...]

SmolLM2-135M-Instruct (the built-in `smollm2-135m-instruct`) on reasoning-gym's one-digit chain_sum,
the `smollm2` preset's task: the same checkpoint, train and held-out prompts, reward, group size,
new tokens, learning rate and β for every contender, each in a fresh process, one after the
other (nothing else may run: two jobs on 2 cores slow each other far more than 2x). Held-out
greedy accuracy against training time (evaluations excluded). One picture:
benchmarks/results/real_model.png; numbers in benchmarks/results/real_model.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import RESULTS, run_child, save, table
from rllib_rpp.app.presets import smollm2

CONTENDERS = ("rllib-rpp reinforce_pp", "rllib-rpp grpo", "TRL GRPOTrainer")


def shared_settings() -> dict:
    """The preset's task and hyperparameters, read from the preset itself."""
    config = smollm2()
    return {"model": config.model_config["model"], "num_prompts": config.num_prompts_per_iteration,
            "samples_per_prompt": config.num_samples_per_prompt, "max_new_tokens": config.max_new_tokens,
            "lr": config.lr, "kl_coef": config.kl_coef,
            "minibatches": config.num_prompts_per_iteration * config.num_samples_per_prompt // config.minibatch_size,
            "train": config.env_config["prompts"], "eval": config.greedy_eval_prompts}


def run_rllib_rpp(estimator: str, budget_s: float, eval_every_s: float, seed: int) -> dict:
    """`rllib-rpp train smollm2` as a user runs it (the settings are the preset's); its run directory's
    summary holds the curve."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"real-{estimator}-"))
    cmd = [sys.executable, "-m", "rllib_rpp", "train", "smollm2", "--estimator", estimator, "--seed", str(seed),
           "--time-budget", str(budget_s), "--eval-every", str(eval_every_s), "--run-dir", str(run_dir), "--quiet"]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=budget_s * 3 + 900)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"evals": summary["evals"], "train_seconds": summary["train_seconds"],
            "completions_per_s": summary["completions_per_s"], "iterations": summary["iterations"],
            "run_dir": str(run_dir)}


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, res in results.items():
        t, acc = zip(*res["evals"])
        ax.plot([x / 60 for x in t], [100 * a for a in acc], marker="o", ms=3, label=name)
    ax.set_xlabel("training time, minutes (evaluations excluded)")
    ax.set_ylabel("held-out greedy accuracy, %")
    ax.set_title("SmolLM2-135M-Instruct, reasoning-gym chain_sum (1 digit), 2-core CPU")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training time per contender")
    parser.add_argument("--eval-every", type=float, default=60.0, help="seconds of training between evaluations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=CONTENDERS, help="a subset of contenders")
    args = parser.parse_args(argv)
    settings, budget = shared_settings(), args.minutes * 60
    results = {}
    for name in args.only or CONTENDERS:
        if name.startswith("rllib-rpp"):
            results[name] = run_rllib_rpp(name.split()[-1], budget, args.eval_every, args.seed)
        else:
            results[name] = run_child("benchmarks.trl_real_child", {**settings, "budget_s": budget, "seed": args.seed,
                                                                     "eval_every_s": args.eval_every},
                                      timeout=budget * 3 + 900)
        res = results[name]
        print(f"{name:24s} held-out {res['evals'][0][1]:.3f} -> {res['evals'][-1][1]:.3f} in "
              f"{res['train_seconds']:.0f} s, {res['completions_per_s']:.2f} completions/s", flush=True)
    rows = [{"contender": n, "before": r["evals"][0][1], "after": r["evals"][-1][1],
             "best": max(a for _, a in r["evals"]), "completions/s": r["completions_per_s"]}
            for n, r in results.items()]
    print(table(rows, ["contender", "before", "after", "best", "completions/s"]))
    picture = RESULTS / "real_model.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(results, picture)
    path = save("real_model", {"settings": settings, "minutes": args.minutes, "results": results})
    print(f"picture: {picture}\nraw numbers: {path}")
    return results


if __name__ == "__main__":
    main()
