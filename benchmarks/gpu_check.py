"""The learner's compute core on one GPU, with nothing but torch and transformers (no Ray, no
vLLM, nothing downloaded): one command, under 8 minutes on an H100.

    python -m benchmarks.gpu_check            # Qwen2.5-0.5B and -1.5B shapes, random weights
    python -m benchmarks.gpu_check --smoke    # a toy shape on CPU (CI runs this so it never rots)

For each shape: fp32 master weights with bf16 compute (autocast), a bf16 reference, one
micro-batch of `--tokens` tokens. It measures the card's bf16 matmul peak, the π_old and π_ref
passes, and one micro-batch update (forward, backward, Adam step) with and without gradient
checkpointing: time, peak device memory next to the memory estimator's prediction, and the
update's model FLOPs utilisation (MFU):

    update FLOPs = 6 · N_matmul · T + 6 · L · h · Σ_rows S_r²      (forward 1x, backward 2x)
    N_matmul = parameters that multiply (every weight but the embedding lookup; the output
    layer counts once even when tied); the attention term is causal (half of 12·L·h·S²);
    gradient-checkpointing recompute is not counted (model FLOPs, not hardware FLOPs).

Prints one JSON document (and writes benchmarks/results/gpu_check.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rllib_rpp import schema as S
from rllib_rpp.core.batch import prepare_batch
from rllib_rpp.core.logprobs import LogprobModule, response_logprobs
from rllib_rpp.core.options import UpdateOptions
from rllib_rpp.core.update import accumulate_gradients, clip_and_check
from rllib_rpp.memory import GiB, ModelShape, estimate_learner_memory

SHAPES = ["qwen2.5-0.5b", "qwen2.5-1.5b"]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device, dtype, n: int, reps: int) -> float:
    """Measured matmul FLOP/s of [n, n] @ [n, n] in `dtype`."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def build(shape_name: str, device, dtype: str, toy: bool):
    from transformers import AutoModelForCausalLM

    if toy:
        from transformers import LlamaConfig

        cfg = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    else:
        from rpp_hub.synthetic import model_config

        cfg = model_config(shape_name)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    return model, cfg


def random_batch(cfg, rows: int, prompt: int, response: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    V = cfg.vocab_size
    batch = {S.PROMPT_IDS: torch.randint(4, V, (rows, prompt), generator=g),
             S.PROMPT_MASK: torch.ones(rows, prompt, dtype=torch.long),
             S.RESPONSE_IDS: torch.randint(4, V, (rows, response), generator=g),
             S.RESPONSE_MASK: torch.ones(rows, response), S.LOSS_MASK: torch.ones(rows, response),
             S.SAMPLER_LOGPROBS: torch.zeros(rows, response),
             S.SCORES: torch.randn(rows, generator=g)}
    return {k: v.to(device) for k, v in batch.items()}


def update_flops(shape: ModelShape, rows: int, seq: int) -> float:
    n_matmul = shape.num_params - shape.vocab_size * shape.hidden_size * (0 if shape.tie_word_embeddings else 1)
    return 6 * n_matmul * rows * seq + 6 * shape.num_layers * shape.hidden_size * rows * seq**2


class Policy(torch.nn.Module):
    def __init__(self, lm, opts):
        super().__init__()
        self.lm, self.opts = lm, opts

    def forward(self, micro):
        lp, ent = response_logprobs(self.lm, micro, temperature=self.opts.temperature,
                                    chunk_tokens=self.opts.logprob_chunk_tokens)
        return {"logprobs": lp, "entropy": ent}


def check_shape(name: str, args, device, peak: float) -> dict:
    compute = "float32" if args.smoke else "bfloat16"
    policy, cfg = build(name, device, "float32", args.smoke)
    ref, _ = build(name, device, compute, args.smoke)
    ref.requires_grad_(False)
    shape = ModelShape.from_hf_config(cfg)
    rows, prompt = args.rows, args.prompt_tokens
    response = args.tokens // rows - prompt
    tokens = rows * (prompt + response)
    opts = UpdateOptions(param_dtype="float32", compute_dtype=compute, max_tokens_per_microbatch=tokens,
                         logprob_chunk_tokens=args.chunk_tokens)
    optim = torch.optim.Adam(policy.parameters(), lr=1e-6, fused=device.type == "cuda")
    out = {"shape": name, "parameters": shape.num_params, "tokens_per_microbatch": tokens, "rows": rows,
           "compute_dtype": compute}
    batch = random_batch(cfg, rows, prompt, response, device)
    passes = [LogprobModule(m, temperature=opts.temperature, chunk_tokens=opts.logprob_chunk_tokens)
              for m in (policy, ref)]
    stats = prepare_batch(*passes, batch, opts, kl_coef=0.01)  # warm-up
    stats = prepare_batch(*passes, batch, opts, kl_coef=0.01)
    out["old_logprobs_s"], out["ref_logprobs_s"] = round(stats["old_logprobs_s"], 4), round(stats["ref_logprobs_s"], 4)
    flops = update_flops(shape, rows, prompt + response)
    for ckpt in (False, True):
        if ckpt:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.train()
        times = []
        for step in range(args.steps + 1):  # the first step warms up (and allocates Adam's state)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            t = time.perf_counter()
            optim.zero_grad(set_to_none=True)
            accumulate_gradients(Policy(policy, opts), batch, opts, kl_coef=0.01, max_tokens=tokens,
                                 autocast=lambda: opts.autocast(device.type))
            clip_and_check(list(policy.parameters()), 1.0)
            optim.step()
            sync(device)
            if step:
                times.append(time.perf_counter() - t)
        est = estimate_learner_memory(shape, tokens_per_microbatch=tokens, param_dtype="float32",
                                      compute_dtype=compute, ref_dtype=compute, gradient_checkpointing=ckpt,
                                      chunk_tokens=args.chunk_tokens)
        step_s = sorted(times)[len(times) // 2]
        key = "checkpointing" if ckpt else "no_checkpointing"
        out[key] = {
            "step_s": round(step_s, 4),
            "tokens_per_s": round(tokens / step_s, 1),
            "mfu": round(flops / step_s / peak, 4),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / GiB, 3) if device.type == "cuda" else None,
            "estimated_gib": est.gib(),
        }
    del policy, ref, optim, batch
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a toy shape on CPU, in seconds")
    parser.add_argument("--shapes", nargs="*", default=SHAPES)
    parser.add_argument("--tokens", type=int, default=8192, help="tokens per micro-batch (padded)")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--chunk-tokens", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3, help="timed update steps (after one warm-up)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_check.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.shapes, args.tokens, args.rows, args.prompt_tokens, args.chunk_tokens, args.steps = (
            ["toy"], 96, 4, 8, 32, 1)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    t0 = time.time()
    peak = matmul_peak(device, torch.float32 if args.smoke else torch.bfloat16, 512 if args.smoke else 8192,
                       5 if args.smoke else 50)
    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "matmul_peak_tflops": round(peak / 1e12, 2), "shapes": []}
    for name in args.shapes:
        report["shapes"].append(check_shape(name, args, device, peak))
        print(json.dumps(report["shapes"][-1]), flush=True)
    report["wall_s"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print("REPORT " + json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    main()
