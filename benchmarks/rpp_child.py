"""One rllib-rpp measurement in its own process: build, warm up, time N iterations.

Returns throughput and the per-iteration time breakdown (means over the timed iterations)."""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np
import ray


def measure(args: dict) -> dict:
    from rllib_rpp.app.presets import tiny_arith as build_config

    ray.init(num_cpus=max(2, args.get("num_env_runners", 0) + 2), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    if args.get("preset") == "smollm2":  # the real shape: SmolLM2-135M-Instruct on reasoning-gym chain_sum
        from rllib_rpp.app.presets import smollm2

        config = smollm2(sampler=args["sampler"], num_prompts=args["num_prompts"],
                         samples_per_prompt=args["samples_per_prompt"], lr=args["lr"], kl_coef=args["kl_coef"])
        config.training(minibatch_size=args["num_prompts"] * args["samples_per_prompt"] // args["minibatches"])
        if args.get("dtype"):
            config.rl_module(model_config={"model": "smollm2-135m-instruct", "dtype": args["dtype"]})
    elif args.get("defaults"):  # the config's own defaults: only the task and the batch shape set
        from rllib_rpp import ReinforcePPConfig

        config = (ReinforcePPConfig().environment(env_config={"prompts": "arithmetic", "reward_funcs": ["exact_match"]})
                  .rl_module(model_config={"model": args.get("model", "tiny-arith")})
                  .training(num_prompts_per_iteration=args["num_prompts"],
                            num_samples_per_prompt=args["samples_per_prompt"],  # one step: the default 128 > 32
                            minibatch_size=args["num_prompts"] * args["samples_per_prompt"]))
    else:
        config = build_config(sampler=args["sampler"], num_prompts=args["num_prompts"],
                              samples_per_prompt=args["samples_per_prompt"], lr=args["lr"], kl_coef=args["kl_coef"],
                              model=args.get("model", "tiny-arith"))
        config.training(minibatch_size=args["num_prompts"] * args["samples_per_prompt"] // args["minibatches"])
    if args.get("old_logprobs"):
        config.training(old_logprobs=args["old_logprobs"])
    config.generation(max_new_tokens=args["max_new_tokens"])
    if args.get("ignore_eos"):
        config.generation(ignore_eos=True)
    config.env_runners(num_env_runners=args.get("num_env_runners", 0))
    algo = config.build_algo()
    for _ in range(args.get("warmup", 3)):
        algo.train()
    rows = []
    t_all = time.perf_counter()
    for _ in range(args["iterations"]):
        t = time.perf_counter()
        r = algo.train()
        wall = time.perf_counter() - t
        it = r["reinforce_pp"]["iteration"]
        runners, learner = r["env_runners"], r["learners"]["default_policy"]
        rows.append({
            "wall": wall,
            "completions": runners["num_env_steps_sampled"],
            "tokens": learner["response_tokens"],
            "generate": runners["timers"]["sample_s"],
            "reward": runners["timers"]["reward_s"],
            "sample_total": it["sample_s"],
            "score": it["score_s"],
            "old_logprobs": learner["timers"]["old_logprobs_s"],
            "ref_logprobs": learner["timers"]["ref_logprobs_s"],
            "advantages": learner["timers"]["advantages_s"],
            "update_total": it["update_s"],
            "sync": it["sync_s"],
        })
    dt = time.perf_counter() - t_all
    mean = {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}
    breakdown = {
        "sampling (generate)": mean["generate"],
        "reward step": mean["reward"],
        "pi_old + pi_ref log-prob passes": mean["old_logprobs"] + mean["ref_logprobs"],
        "learner update (fwd/bwd/step)": (mean["update_total"] - mean["old_logprobs"] - mean["ref_logprobs"]
                                          - mean["advantages"]),
        "weight sync": mean["sync"],
    }
    breakdown["everything else (Ray/RLlib plumbing, metrics, advantages)"] = mean["wall"] - sum(breakdown.values())
    algo.stop()
    ray.shutdown()
    return {
        "seconds": dt,
        "completions_per_s": sum(r["completions"] for r in rows) / dt,
        "tokens_per_s": sum(r["tokens"] for r in rows) / dt,
        "iteration_s": mean["wall"],
        "breakdown_s": breakdown,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
