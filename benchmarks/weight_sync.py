"""Weight-sync seconds: the object store against vLLM's weight-transfer engine (gloo), one command.

    python -m benchmarks.weight_sync [--runners 1] [--repeats 3]

A random-initialised ~106M-parameter Llama (`random:sync-100m`, fp32, untied 32k vocabulary),
remote vLLM runners on CPU, the learner in the driver. Each path pushes the same weights
`--repeats` times (the engine path's first push also forms the group: reported apart).
Results: benchmarks/results/weight_sync.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import ray

from benchmarks.common import save, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runners", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from rllib_rpp import ReinforcePPConfig

    ray.init(num_cpus=2 + args.runners, include_dashboard=False, log_to_driver=False, configure_logging=False)
    config = (ReinforcePPConfig()
              .environment(env_config={"prompts": "arithmetic", "reward_funcs": ["exact_match"]})
              .rl_module(model_config={"model": "random:sync-100m"})
              .generation(sampler="vllm", max_new_tokens=4,
                          sampler_kwargs={"kv_cache_memory_bytes": 256 << 20})
              .training(num_prompts_per_iteration=4 * args.runners, num_samples_per_prompt=2, minibatch_size=8)
              .env_runners(num_env_runners=args.runners))
    algo = config.build_algo()
    params = sum(v.numel() for v in algo.get_policy_state_dict().values())
    engine = algo._engine_sync
    rows = []

    def timed(fn, n):
        out = []
        for _ in range(n):
            algo._learner_version += 1  # a new version each time
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return out

    first = timed(lambda: engine.sync(algo._learner_version, fallback=None), 1)[0]
    engine_s = timed(lambda: engine.sync(algo._learner_version, fallback=None), args.repeats)
    store_s = timed(algo._sync_through_object_store, args.repeats)
    mb = params * 4 / 2**20
    rows.append({"path": "Ray object store (driver, pickled CPU tensors)", "seconds": statistics.median(store_s),
                 "MB/s": mb / statistics.median(store_s)})
    rows.append({"path": "vLLM weight-transfer engine (gloo broadcast)", "seconds": statistics.median(engine_s),
                 "MB/s": mb / statistics.median(engine_s)})
    print(f"{params / 1e6:.1f}M parameters, {mb:.0f} MB in fp32, {args.runners} runner(s); first engine sync "
          f"(forms the group): {first:.2f} s")
    print(table(rows, ["path", "seconds", "MB/s"]))
    save("weight_sync", {"parameters": params, "runners": args.runners, "first_engine_sync_s": first,
                         "engine_s": engine_s, "object_store_s": store_s})
    algo.stop()


if __name__ == "__main__":
    main()
