"""Throughput against TRL and a plain-PyTorch floor, same machine, same run, A/B/A/B.

    python -m benchmarks.throughput [--rounds 2] [--iterations 30] [--shape tiny|real]

Each contender runs in a fresh process on the same workload (tiny: tiny-arith, 64 prompts x 4
samples, <= 5 new tokens, 2 optimizer steps per iteration; real: `common.REAL_WORKLOAD`,
SmolLM2-135M-Instruct, 16 x 4 x exactly 32 tokens); contenders alternate in order every round so
machine drift cancels. Prints completions/s and tokens/s (median over rounds) and the ratios;
writes benchmarks/results/throughput.json (real: throughput_real.json).
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks.common import REAL_WORKLOAD, WORKLOAD, run_child, save, table

CONTENDERS = {
    "plain PyTorch loop": ("benchmarks.plain_loop", {}),
    "plain PyTorch loop (π_old from sampler)": ("benchmarks.plain_loop", {"old_logprobs": "sampler"}),
    # The package's default (old_logprobs="auto") takes π_old from the transformers sampler in fp32.
    "rllib-rpp (transformers)": ("benchmarks.rpp_child", {"sampler": "transformers"}),
    "rllib-rpp (transformers, π_old recomputed)": ("benchmarks.rpp_child",
                                                    {"sampler": "transformers", "old_logprobs": "recompute"}),
    "rllib-rpp (vllm)": ("benchmarks.rpp_child", {"sampler": "vllm"}),
    "TRL GRPOTrainer": ("benchmarks.trl_child", {}),
}
# Equal work: each rllib-rpp contender against the plain loop that does the same passes.
SAME_WORK = {"rllib-rpp (transformers)": "plain PyTorch loop (π_old from sampler)",
             "rllib-rpp (transformers, π_old recomputed)": "plain PyTorch loop",
             "rllib-rpp (vllm)": "plain PyTorch loop"}
# At the real shape every contender runs its defaults but the shape; the package's default takes π_old from
# the sampler there (the plain loop does the same work); TRL also with its fastest CPU settings.
REAL_CONTENDERS = {
    "plain PyTorch loop": ("benchmarks.plain_loop", {"old_logprobs": "sampler"}),
    "rllib-rpp (transformers)": ("benchmarks.rpp_child", {"sampler": "transformers"}),
    "rllib-rpp (vllm)": ("benchmarks.rpp_child", {"sampler": "vllm"}),
    "TRL GRPOTrainer": ("benchmarks.trl_child", {"defaults": True}),
    "TRL GRPOTrainer (β, no checkpointing)": ("benchmarks.trl_child", {"gradient_checkpointing": False}),
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=30, help="timed iterations per run (TRL: a third)")
    parser.add_argument("--shape", choices=("tiny", "real"), default="tiny", help="the workload (see above)")
    parser.add_argument("--only", nargs="*", choices=sorted({*CONTENDERS, *REAL_CONTENDERS}),
                        help="a subset of contenders")
    args = parser.parse_args(argv)
    contenders, workload = (REAL_CONTENDERS, REAL_WORKLOAD) if args.shape == "real" else (CONTENDERS, WORKLOAD)
    names = args.only or list(contenders)
    runs = {n: [] for n in names}
    for rnd in range(args.rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        for name in order:
            module, extra = contenders[name]
            iters = max(3, args.iterations // 3) if "TRL" in name else args.iterations
            res = run_child(module, {**workload, **extra, "iterations": iters,
                                     "warmup": 3 if args.shape == "tiny" else 1}, timeout=7200)
            runs[name].append(res)
            print(f"round {rnd + 1}: {name:26s} {res['completions_per_s']:8.1f} completions/s", flush=True)
    rows = []
    for name in names:
        rows.append({"contender": name,
                     "completions/s": statistics.median(r["completions_per_s"] for r in runs[name]),
                     "tokens/s": statistics.median(r["tokens_per_s"] for r in runs[name])})
    ref = {r["contender"]: r["completions/s"] for r in rows}
    for r in rows:
        name = r["contender"]
        same = name if name.startswith("plain") else SAME_WORK.get(name, "plain PyTorch loop")
        same = same if args.shape == "tiny" else "plain PyTorch loop"
        if same in ref:
            r["vs plain loop (same work)"] = r["completions/s"] / ref[same]
        if "TRL GRPOTrainer" in ref:
            r["vs TRL"] = r["completions/s"] / ref["TRL GRPOTrainer"]
    print(table(rows, ["contender", "completions/s", "tokens/s", "vs plain loop (same work)", "vs TRL"]))
    path = save("throughput" if args.shape == "tiny" else "throughput_real",
                {"workload": workload, "rounds": args.rounds, "summary": rows, "runs": runs})
    print(f"raw numbers: {path}")
    return {"summary": rows}


if __name__ == "__main__":
    main()
