"""Speed where it counts: a generation-heavy shape, rllib-rpp against TRL and a plain loop, with MFU.

    python -m benchmarks.generation_heavy [--rounds 2] [--iterations 4] [--eos] [--only NAME ...]

Shape: a random-initialised 10.7M-parameter Llama (`random:gen-10m`: hidden 384, 6 layers, the
built-in 100-character vocabulary), 8 prompts x 4 samples, exactly 128 new tokens (EOS ignored;
`--eos` lets responses end at EOS instead), 2 optimizer steps per iteration, fp32, β 0.01 with a
reference model. Contenders alternate over rounds, each in its own process. `--defaults` runs
each system as it comes instead (rllib-rpp's config defaults, one optimizer step per batch;
TRL's GRPOConfig defaults: β 0, so no reference model, and no π_old pass).

MFU = model FLOPs of an iteration / (seconds per iteration x the fp32 matmul peak measured in
this run, 2048² products). Model FLOPs per completion of P prompt and R response tokens, with
N the parameters that multiply (all but the embedding lookup; the output layer counts):
    generation 2·N·(P+R), π_old pass 2·N·(P+R) (skipped when π_old comes from the sampler),
    π_ref pass 2·N·(P+R), update forward+backward 6·N·(P+R),
    plus attention 4·L·h·Σ_t t per forward-equivalent (causal).
Results: benchmarks/results/generation_heavy.json.
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks.common import run_child, save, table
from benchmarks.throughput import CONTENDERS, SAME_WORK  # the same contenders as the tiny shape

WORKLOAD = {"model": "random:gen-10m", "num_prompts": 8, "samples_per_prompt": 4, "max_new_tokens": 128,
            "minibatches": 2, "lr": 1e-5, "kl_coef": 0.01, "ignore_eos": True}
# --defaults: each system as it comes (only the task, model, batch shape and length set).
DEFAULTS = {
    "rllib-rpp defaults": ("benchmarks.rpp_child", {"defaults": True, "sampler": "transformers"}),
    "TRL GRPOTrainer defaults": ("benchmarks.trl_child", {"defaults": True, "minibatches": 1}),
}


def matmul_peak(dtype: str = "float32", n: int = 2048, reps: int = 20) -> float:
    """FLOP/s of an n x n matrix product in `dtype` on the CPU (the MFU denominator)."""
    import torch

    from benchmarks.gpu_check import matmul_peak as measured

    return measured(torch.device("cpu"), getattr(torch, dtype), n, reps)


def iteration_flops(tokens_per_completion: float, prompt_tokens: float, completions: int, passes: int) -> float:
    """Model FLOPs of an iteration: `passes` forward-equivalents (2 + 2 + 2 + 6 = 12 with a π_old
    pass, 10 without), each 2·N per token plus causal attention."""
    from rllib_rpp.memory import ModelShape
    from rpp_hub.synthetic import model_config

    shape = ModelShape.from_hf_config(model_config("gen-10m"))
    n = shape.num_params - shape.vocab_size * shape.hidden_size * (0 if shape.tie_word_embeddings else 1)
    seq = prompt_tokens + tokens_per_completion
    per_forward = 2 * n * seq + 4 * shape.num_layers * shape.hidden_size * seq * seq / 2
    return completions * per_forward * passes / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--eos", action="store_true", help="variable-length responses (no ignore_eos)")
    parser.add_argument("--defaults", action="store_true", help="each system's defaults instead")
    parser.add_argument("--only", nargs="*", choices=list(CONTENDERS) + list(DEFAULTS))
    args = parser.parse_args()
    workload = {**WORKLOAD, "ignore_eos": not args.eos}
    contenders = DEFAULTS if args.defaults else CONTENDERS
    names = args.only or list(contenders)
    runs = {n: [] for n in names}
    peaks = []
    for rnd in range(args.rounds):
        peaks.append(matmul_peak())
        for name in (names if rnd % 2 == 0 else names[::-1]):
            module, extra = {**CONTENDERS, **DEFAULTS}[name]
            res = run_child(module, {**workload, **extra, "iterations": args.iterations, "warmup": 1}, timeout=7200)
            runs[name].append(res)
            print(f"round {rnd + 1}: {name:46s} {res['completions_per_s']:6.2f} completions/s", flush=True)
    peak = statistics.median(peaks)
    bf16_peak = matmul_peak("bfloat16", 1024, 3)  # is bf16 compute worth it on this machine?
    completions = workload["num_prompts"] * workload["samples_per_prompt"]
    rows = []
    for name in names:
        cps = statistics.median(r["completions_per_s"] for r in runs[name])
        tps = statistics.median(r["tokens_per_s"] for r in runs[name])
        # In 2·N-per-token units: generation 2, π_old 2, π_ref 2, update 6 (TRL's defaults: β 0, no
        # reference pass; one step per generation batch, no π_old pass).
        sampler_old = "from sampler" in name or name in ("rllib-rpp (transformers)", "rllib-rpp defaults")
        passes = 10 if sampler_old else 8 if name == "TRL GRPOTrainer defaults" else 12
        flops = iteration_flops(tps / cps, 7.0, completions, passes)
        rows.append({"contender": name, "completions/s": cps, "tokens/s": tps,
                     "MFU": flops / (completions / cps) / peak})
    ref = {r["contender"]: r["completions/s"] for r in rows}
    for r in rows:
        for base in ("TRL GRPOTrainer", "TRL GRPOTrainer defaults"):
            if base in ref:
                r["vs TRL"] = r["completions/s"] / ref[base]
        same = SAME_WORK.get(r["contender"], r["contender"] if r["contender"].startswith("plain") else None)
        if same in ref:
            r["vs plain (same work)"] = r["completions/s"] / ref[same]
    print(f"matmul peak measured in this run: fp32 {peak / 1e9:.0f} GFLOP/s (2048²), bf16 {bf16_peak / 1e9:.0f} "
          f"GFLOP/s (1024²)")
    print(table(rows, ["contender", "completions/s", "tokens/s", "MFU", "vs TRL", "vs plain (same work)"]))
    save("generation_heavy" + ("_eos" if args.eos else "") + ("_defaults" if args.defaults else ""),
         {"workload": workload, "peak_flops": peak, "bf16_peak_flops": bf16_peak, "summary": rows, "runs": runs})


if __name__ == "__main__":
    main()
