"""Synchronous loop against one-step-off-policy async rollouts (`max_rollout_staleness=1`), one
command, at the tiny example's shape with ONE remote vLLM runner on CPU:

    python -m benchmarks.async_rollouts [--iterations 400]

Each mode trains the same number of iterations (so the same number of samples) from the same
start, in its own process: seconds per iteration, where the time went (waiting for rollouts,
learner update, sync), the overlap fraction, and held-out greedy accuracy before and after.
Results: benchmarks/results/async_rollouts.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks.common import run_child, save, table


def one_run(args: dict) -> dict:
    import ray

    from rllib_rpp.app.presets import tiny_arith

    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    config = (tiny_arith(seed=args["seed"], sampler="vllm")
              .generation(sampler_kwargs={"kv_cache_memory_bytes": 64 << 20})
              .env_runners(num_env_runners=1)
              .training(max_rollout_staleness=args["staleness"]))
    algo = config.build_algo()
    before = algo.evaluate_greedy()["reward_mean"]
    for _ in range(3):  # warm-up
        algo.train()
    phases = {"update_s": [], "sync_s": [], "wait_s": [], "overlap": []}
    t = time.perf_counter()
    for _ in range(args["iterations"]):
        r = algo.train()
        it = r["reinforce_pp"]["iteration"]
        phases["update_s"].append(it["update_s"])
        phases["sync_s"].append(it["sync_s"])
        if args["staleness"]:
            phases["wait_s"].append(r["reinforce_pp"]["async"]["wait_for_rollouts_s"])
            phases["overlap"].append(r["reinforce_pp"]["async"]["overlap_fraction"])
        else:
            phases["wait_s"].append(it["sample_s"])
    wall = time.perf_counter() - t
    after = algo.evaluate_greedy()["reward_mean"]
    algo.stop()
    mean = {k: (sum(v) / len(v) if v else None) for k, v in phases.items()}
    return {"staleness": args["staleness"], "s_per_iteration": wall / args["iterations"], "before": before,
            "after": after, "gain_points": 100 * (after - before), **mean}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("{"):
        print("RESULT " + json.dumps(one_run(json.loads(sys.argv[1]))), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = [run_child("benchmarks.async_rollouts", {"staleness": k, "iterations": args.iterations, "seed": args.seed},
                      timeout=7200) for k in (0, 1)]
    for r in rows:
        r["mode"] = "async, staleness 1" if r["staleness"] else "synchronous"
        r["speed-up"] = rows[0]["s_per_iteration"] / r["s_per_iteration"]
    print(table(rows, ["mode", "s_per_iteration", "speed-up", "wait_s", "update_s", "sync_s", "overlap", "before",
                       "after", "gain_points"]))
    save("async_rollouts", {"iterations": args.iterations, "rows": rows})


if __name__ == "__main__":
    main()
