"""Throughput against TRL and a plain-PyTorch floor, same machine, same run, A/B/A/B.

    python -m benchmarks.throughput [--rounds 2] [--iterations 30]

Each contender runs in a fresh process on the same workload (tiny-arith, 64 prompts x 4
samples, <= 5 new tokens, 2 optimizer steps per iteration); contenders alternate in order
every round so machine drift cancels. Prints completions/s and tokens/s (median over rounds)
and the ratios; writes benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks.common import WORKLOAD, run_child, save, table

CONTENDERS = {
    "plain PyTorch loop": ("benchmarks.plain_loop", {}),
    "rllib-rpp (transformers)": ("benchmarks.rpp_child", {"sampler": "transformers"}),
    "rllib-rpp (transformers, π_old from sampler)": ("benchmarks.rpp_child",
                                                      {"sampler": "transformers", "old_logprobs": "sampler"}),
    "rllib-rpp (vllm)": ("benchmarks.rpp_child", {"sampler": "vllm"}),
    "TRL GRPOTrainer": ("benchmarks.trl_child", {}),
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=30, help="timed iterations per run (TRL: a third)")
    parser.add_argument("--only", nargs="*", choices=list(CONTENDERS), help="a subset of contenders")
    args = parser.parse_args(argv)
    names = args.only or list(CONTENDERS)
    runs = {n: [] for n in names}
    for rnd in range(args.rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        for name in order:
            module, extra = CONTENDERS[name]
            iters = max(3, args.iterations // 3) if "TRL" in name else args.iterations
            res = run_child(module, {**WORKLOAD, **extra, "iterations": iters, "warmup": 3})
            runs[name].append(res)
            print(f"round {rnd + 1}: {name:26s} {res['completions_per_s']:8.1f} completions/s", flush=True)
    rows = []
    for name in names:
        rows.append({"contender": name,
                     "completions/s": statistics.median(r["completions_per_s"] for r in runs[name]),
                     "tokens/s": statistics.median(r["tokens_per_s"] for r in runs[name])})
    ref = {r["contender"]: r["completions/s"] for r in rows}
    for r in rows:
        if "plain PyTorch loop" in ref:
            r["vs plain loop"] = r["completions/s"] / ref["plain PyTorch loop"]
        if "TRL GRPOTrainer" in ref:
            r["vs TRL"] = r["completions/s"] / ref["TRL GRPOTrainer"]
    print(table(rows, ["contender", "completions/s", "tokens/s", "vs plain loop", "vs TRL"]))
    path = save("throughput", {"workload": WORKLOAD, "rounds": args.rounds, "summary": rows, "runs": runs})
    print(f"raw numbers: {path}")
    return {"summary": rows}


if __name__ == "__main__":
    main()
