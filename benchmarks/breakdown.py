"""Where an iteration's time goes, per sampler, and how it grows with batch size and length.

    python -m benchmarks.breakdown [--iterations 15]

Phases per iteration: sampling (the generate call), reward step, π_old + π_ref log-prob
passes, learner update, weight sync, and everything else (Ray/RLlib plumbing: episodes,
connectors, metrics, object store). Batch sizes 16/64/256 prompts x 4 samples at <= 5 tokens;
response lengths 4/16/64 tokens (EOS ignored so every response has that length) at 64 prompts.
Also peak memory of the learner process and what a PPO critic of the same size would add.
Writes benchmarks/results/breakdown.json.
"""

from __future__ import annotations

import argparse

from benchmarks.common import WORKLOAD, run_child, save, table

PHASES = ["sampling (generate)", "reward step", "pi_old + pi_ref log-prob passes", "learner update (fwd/bwd/step)",
          "weight sync", "everything else (Ray/RLlib plumbing, metrics, advantages)"]


def critic_memory(num_params: int) -> dict:
    """Memory a PPO critic of the policy's size adds in fp32 Adam training: weights, gradients and
    two Adam moments = 16 bytes per parameter (mixed precision: bf16 weights and grads, fp32
    master copy and moments, also 16), before activations."""
    return {"parameters": num_params, "critic_bytes": 16 * num_params,
            "critic_mb": 16 * num_params / 2**20, "7B_critic_gb": 16 * 7e9 / 2**30}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--samplers", nargs="*", default=["transformers", "vllm"])
    args = parser.parse_args(argv)
    runs = []
    for sampler in args.samplers:
        settings = [("example", WORKLOAD["num_prompts"], WORKLOAD["max_new_tokens"], False)]
        settings += [("batch", k, WORKLOAD["max_new_tokens"], False) for k in (16, 256)]
        settings += [("length", WORKLOAD["num_prompts"], n, True) for n in (4, 16, 64)]
        for kind, prompts, tokens, ignore_eos in settings:
            res = run_child("benchmarks.rpp_child", {**WORKLOAD, "sampler": sampler, "num_prompts": prompts,
                                                     "max_new_tokens": tokens, "ignore_eos": ignore_eos,
                                                     "iterations": args.iterations, "warmup": 3})
            row = {"sampler": sampler, "sweep": kind, "prompts x samples": f"{prompts}x4",
                   "max tokens": tokens, "iteration s": res["iteration_s"],
                   "completions/s": res["completions_per_s"], "peak RSS MB": res["peak_rss_mb"]}
            total = sum(res["breakdown_s"].values())
            for phase in PHASES:
                row[phase] = res["breakdown_s"][phase] / total  # share of the iteration
            runs.append(row)
            print(f"{sampler:12s} {kind:7s} {prompts:4d}x4 {tokens:3d} tok: {res['iteration_s']:.3f} s/iter, "
                  f"plumbing {row[PHASES[-1]]:.1%}, sync {row['weight sync']:.1%}", flush=True)
    short = {p: p.split(" (")[0] for p in PHASES}
    print(table([{**{k: v for k, v in r.items() if k not in PHASES}, **{short[p]: r[p] for p in PHASES}} for r in runs],
                ["sampler", "sweep", "prompts x samples", "max tokens", "iteration s", *short.values()]))
    from envs.tiny_arith import tiny_arith_info

    memory = critic_memory(tiny_arith_info()["parameters"])
    print(f"no critic: a PPO critic of the tiny model's size would add {memory['critic_mb']:.1f} MB "
          f"(7B: {memory['7B_critic_gb']:.0f} GiB) before activations")
    path = save("breakdown", {"iterations": args.iterations, "runs": runs, "critic_memory": memory})
    print(f"raw numbers: {path}")
    return {"runs": runs}


if __name__ == "__main__":
    main()
