"""Child process of benchmarks/memory.py: `python -m benchmarks.memory_child '<json>'`.

mode "iteration": one REINFORCE++ iteration (sampling, log-prob passes, update) in this process
(local runner and learner), peak RSS sampled every 20 ms; aborts above `limit_gb`. Uses only
config options that exist in every version, so it also measures older checkouts.
mode "microbatch": one micro-batch step of the learner's compute core (no Ray): RSS before it,
peak during forward + backward + Adam step, and the memory estimator's prediction.
Prints one `RESULT {json}` line.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time


def rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / (1 << 20)
    return 0.0


class PeakRSS:
    """Samples RSS in a thread; above `limit_gb` the process reports and exits (no swap storm)."""

    def __init__(self, limit_gb: float, report: dict):
        self.peak, self.limit, self.report = 0.0, limit_gb, report
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            now = rss_gb()
            self.peak = max(self.peak, now)
            if now > self.limit:
                out = {**self.report, "aborted": True, "peak_rss_gb": round(now, 2)}
                print("RESULT " + json.dumps(out), flush=True)
                os._exit(3)
            time.sleep(0.02)

    def reset(self):
        self.peak = rss_gb()


def iteration(args: dict) -> dict:
    import ray

    from rllib_rpp import ReinforcePPConfig

    report = {"mode": "iteration", **args}
    monitor = PeakRSS(args.get("limit_gb", 20.0), report)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    n = args["completions"] // args["samples"]
    config = (ReinforcePPConfig()
              .environment(env_config={"prompts": "arithmetic", "reward_funcs": ["exact_match"]})
              .rl_module(model_config={"model": args["model"], "dtype": "float32"})
              .generation(max_new_tokens=args["response_tokens"], ignore_eos=True)
              .training(lr=1e-5, num_prompts_per_iteration=n, num_samples_per_prompt=args["samples"],
                        minibatch_size=args["completions"] // 2, **args.get("training", {}))
              .debugging(seed=0))
    algo = config.build_algo()
    built = rss_gb()
    t = time.perf_counter()
    result = algo.train()
    learner = result["learners"]["default_policy"]
    report.update(peak_rss_gb=round(max(monitor.peak, rss_gb()), 2), after_build_gb=round(built, 2),
                  ru_maxrss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20), 2),
                  iteration_s=round(time.perf_counter() - t, 1), aborted=False,
                  response_tokens_mean=result["env_runners"].get("response_length_mean"),
                  policy_loss=learner.get("policy_loss"))
    algo.stop()
    return report


def microbatch(args: dict) -> dict:
    import torch

    from rllib_rpp import schema as S
    from rllib_rpp.core.batch import prepare_batch
    from rllib_rpp.core.logprobs import LogprobModule
    from rllib_rpp.core.options import UpdateOptions
    from rllib_rpp.core.update import accumulate_gradients
    from rllib_rpp.memory import ModelShape, estimate_learner_memory
    from rpp_hub.models import load_causal_lm, resolve_model_path

    torch.manual_seed(0)
    path = resolve_model_path(args["model"])
    policy, ref = load_causal_lm(path), load_causal_lm(path).eval()
    if args.get("gradient_checkpointing"):
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    B, P, R = args["rows"], args["prompt_tokens"], args["response_tokens"]
    V = policy.config.vocab_size
    batch = {S.PROMPT_IDS: torch.randint(4, V, (B, P)), S.PROMPT_MASK: torch.ones(B, P, dtype=torch.long),
             S.RESPONSE_IDS: torch.randint(4, V, (B, R)), S.RESPONSE_MASK: torch.ones(B, R),
             S.LOSS_MASK: torch.ones(B, R),
             S.SAMPLER_LOGPROBS: torch.zeros(B, R), S.SCORES: torch.randn(B)}
    tokens = B * (P + R)
    opts = UpdateOptions(max_tokens_per_microbatch=tokens, logprob_chunk_tokens=args["chunk_tokens"])
    prepare_batch(LogprobModule(policy, chunk_tokens=opts.logprob_chunk_tokens),
                  LogprobModule(ref, chunk_tokens=opts.logprob_chunk_tokens), batch, opts, kl_coef=0.01)
    optim = torch.optim.Adam(policy.parameters(), lr=1e-6)

    class Forward(torch.nn.Module):
        def forward(self, micro):
            from rllib_rpp.core.logprobs import response_logprobs

            lp, _ = response_logprobs(policy, micro, chunk_tokens=opts.logprob_chunk_tokens)
            return {"logprobs": lp, "entropy": None}

    policy.train()
    report = {"mode": "microbatch", **args}
    monitor = PeakRSS(args.get("limit_gb", 20.0), report)
    time.sleep(0.1)
    monitor.reset()
    before = rss_gb()
    t = time.perf_counter()
    accumulate_gradients(Forward(), batch, opts, kl_coef=0.01, max_tokens=tokens)
    optim.step()
    step_s = time.perf_counter() - t
    time.sleep(0.1)
    est = estimate_learner_memory(ModelShape.from_hf_config(policy.config), tokens_per_microbatch=tokens,
                                  param_dtype="float32", compute_dtype="float32",
                                  gradient_checkpointing=bool(args.get("gradient_checkpointing")),
                                  chunk_tokens=args["chunk_tokens"], attention_rows=B)  # CPU: math attention
    predicted = est.activations + est.logprob_chunk + est.gradients + est.optimizer
    report.update(before_gb=round(before, 3), peak_gb=round(monitor.peak, 3),
                  measured_step_gb=round(monitor.peak - before, 3), predicted_step_gb=round(predicted / (1 << 30), 3),
                  estimate=est.gib(), step_s=round(step_s, 2))
    return report


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    out = iteration(args) if args["mode"] == "iteration" else microbatch(args)
    print("RESULT " + json.dumps(out), flush=True)
