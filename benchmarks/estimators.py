"""REINFORCE++ vs its variants, as in the paper's comparison: same sample budget, several seeds.

    python -m benchmarks.estimators [--iterations 120] [--seeds 0 1 2] [--only NAME ...]

Estimators reinforce_pp, reinforce_pp_baseline, grpo, rloo on the tiny arithmetic task, each
with its default KL placement (k1 in the reward for reinforce_pp/rloo, a k2 loss term for the
other two), β = 0.01; then the other policy losses and the tricks (VARIANTS): GSPO and CISPO
with REINFORCE++, Dr.GRPO's aggregation, DAPO dynamic sampling with GRPO, overlong shaping.
Per iteration: sampled reward, KL(π_old || π_ref) per sequence (always the k1 estimate, so runs
are comparable whatever they penalise), response length. At the end: held-out greedy accuracy
and the training wall time. Plots (PNG): reward vs samples, KL vs samples, reward gain vs KL, response
length vs samples. Writes benchmarks/results/estimators.json and estimators.png.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from benchmarks.common import RESULTS, WORKLOAD, run_child, save, table
from rllib_rpp.estimators import ESTIMATORS as ESTIMATOR_TABLE

ESTIMATORS = list(ESTIMATOR_TABLE)  # every registered estimator
# name -> (estimator, extra .training options)
VARIANTS = {
    "reinforce_pp + gspo": ("reinforce_pp", {"policy_loss": "gspo", "clip_low": 3e-4, "clip_high": 4e-4,
                                             "loss_agg_mode": "seq-mean-token-mean"}),
    "reinforce_pp + cispo": ("reinforce_pp", {"policy_loss": "cispo", "clip_low": 0.2, "clip_high": 0.28}),
    "grpo + dr_grpo agg": ("grpo", {"loss_agg_mode": "seq-mean-token-sum-norm"}),
    "grpo + dynamic sampling": ("grpo", {"dynamic_sampling": True, "max_sampling_rounds": 3}),
    "reinforce_pp + overlong": ("reinforce_pp", {"overlong_buffer_len": 1, "overlong_penalty": 0.5}),
}
CONTENDERS = {**{e: (e, {}) for e in ESTIMATORS}, **VARIANTS}


def one_run(args: dict) -> dict:
    import time

    import ray

    from rllib_rpp.app.presets import tiny_arith as build_config

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    estimator, extra = CONTENDERS[args["estimator"]]
    algo = build_config(estimator=estimator, seed=args["seed"], lr=WORKLOAD["lr"],
                        kl_coef=WORKLOAD["kl_coef"]).training(**extra).build_algo()
    before = algo.evaluate_greedy()["reward_mean"]
    curve, t0, samples = [], time.perf_counter(), 0
    for _ in range(args["iterations"]):
        r = algo.train()
        learner = r["learners"]["default_policy"]
        samples += int(r["env_runners"]["num_env_steps_sampled"])  # dynamic sampling draws more than 256
        curve.append({"samples": samples, "reward": r["env_runners"]["episode_return_mean"],
                      "kl_per_seq": learner["kl_ref_k1_per_seq"], "length": r["env_runners"]["response_length_mean"]})
    wall = time.perf_counter() - t0
    after = algo.evaluate_greedy()["reward_mean"]
    algo.stop()
    return {"estimator": args["estimator"], "seed": args["seed"], "before": before, "after": after, "curve": curve,
            "wall_s": wall}


def smooth(x, k=10):
    x = np.asarray(x, float)
    return np.convolve(x, np.ones(k) / k, mode="valid") if len(x) >= k else x


def plot(runs: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    for est in dict.fromkeys(r["estimator"] for r in runs):
        mine = [r for r in runs if r["estimator"] == est]
        samples = smooth([c["samples"] for c in mine[0]["curve"]])
        for key, ax in (("reward", axes[0]), ("kl_per_seq", axes[1]), ("length", axes[3])):
            ys = np.stack([smooth([c[key] for c in r["curve"]]) for r in mine])
            ax.plot(samples, ys.mean(0), label=est)
            ax.fill_between(samples, ys.min(0), ys.max(0), alpha=0.15)
        gain = np.stack([smooth([c["reward"] for c in r["curve"]]) - r["curve"][0]["reward"] for r in mine]).mean(0)
        kl = np.stack([smooth([c["kl_per_seq"] for c in r["curve"]]) for r in mine]).mean(0)
        axes[2].plot(kl, gain, label=est)
    for ax, (x, y) in zip(axes, [("samples", "sampled reward"), ("samples", "KL(π||π_ref) per sequence"),
                                 ("KL per sequence", "reward gain"), ("samples", "response length (tokens)")]):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    axes[0].legend()
    seeds = len({r["seed"] for r in runs})
    fig.suptitle(f"tiny-arith, {seeds} seeds each (mean, min-max band; 10-iteration smoothing)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=120)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", default=list(CONTENDERS), choices=list(CONTENDERS), metavar="NAME",
                        help=f"contenders to run (default: all): {', '.join(CONTENDERS)}")
    args = parser.parse_args(argv)
    runs = []
    for seed in args.seeds:
        for est in args.only:
            res = run_child("benchmarks.estimators", {"estimator": est, "seed": seed, "iterations": args.iterations})
            runs.append(res)
            print(f"{est:22s} seed {seed}: held-out {res['before']:.3f} -> {res['after']:.3f}, "
                  f"KL/seq {res['curve'][-1]['kl_per_seq']:.3f}", flush=True)
    rows = []
    for est in args.only:
        mine = [r for r in runs if r["estimator"] == est]
        acc = np.array([r["after"] for r in mine])
        kl = np.array([np.mean([c["kl_per_seq"] for c in r["curve"][-10:]]) for r in mine])
        gain = np.array([np.mean([c["reward"] for c in r["curve"][-10:]])
                         - np.mean([c["reward"] for c in r["curve"][:5]])
                         for r in mine])
        length = np.array([np.mean([c["length"] for c in r["curve"][-10:]]) for r in mine])
        per_kl = gain / np.maximum(kl, 1e-6)
        rows.append({"estimator": est, "held-out acc": f"{acc.mean():.3f} ± {acc.std():.3f}",
                     "KL/seq (last 10)": f"{kl.mean():.3f} ± {kl.std():.3f}",
                     "reward gain": f"{gain.mean():.3f} ± {gain.std():.3f}",
                     "gain per unit KL": f"{per_kl.mean():.2f} ± {per_kl.std():.2f}",
                     "length": f"{length.mean():.2f}",
                     "wall s / run": f"{np.mean([r['wall_s'] for r in mine]):.0f}",
                     "samples": f"{np.mean([r['curve'][-1]['samples'] for r in mine]):.0f}"})
    print(table(rows, list(rows[0])))
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(runs, RESULTS / "estimators.png")
    path = save("estimators", {"iterations": args.iterations, "seeds": args.seeds, "summary": rows, "runs": runs})
    print(f"raw numbers: {path}; plots: {RESULTS / 'estimators.png'}")
    return {"summary": rows}


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        print("RESULT " + json.dumps(one_run(json.loads(sys.argv[1]))), flush=True)
    else:
        main()
