"""The reward step as a service (issue 19): iteration time with the reward scored inside each env
runner vs on shared reward workers, and a reward that hangs on 1 % of samples.

    python -m benchmarks.reward_service            # ~3 minutes on 2 cores

tiny-arith, 2 remote env runners, 32 prompts x 4 samples per iteration. The slow reward sleeps
20 ms per sample (a verifier or a remote call: latency, not CPU), isolated in its own process
like every rule function under a timeout. The hanging reward never returns for ~1 % of prompts
(by their answer), with `reward_timeout_s=2` and `on_reward_error="skip"`. Prints one JSON
document and writes benchmarks/results/reward_service.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rllib_rpp import ReinforcePPConfig


def slow_reward(completions, answer, **kwargs):
    import time as _time

    _time.sleep(0.02 * len(completions))
    return [float(c.strip() == a) for c, a in zip(completions, answer)]


def hanging_reward(completions, answer, **kwargs):
    import time as _time

    if any(a in ("37", "137") for a in answer):  # ~1 % of the prompts (sums range 0..198), fixed by the prompt
        _time.sleep(3600)
    return [float(c.strip() == a) for c, a in zip(completions, answer)]


def config(reward, workers: int, overlap: bool = False) -> ReinforcePPConfig:
    return (ReinforcePPConfig()
            .environment(env_config={"prompts": "arithmetic", "reward_funcs": [reward]})
            .generation(max_new_tokens=5)
            .training(lr=1e-4, num_prompts_per_iteration=32, num_samples_per_prompt=4, minibatch_size=64)
            .env_runners(num_env_runners=2)
            .rewards(num_reward_workers=workers, reward_timeout_s=2.0, on_reward_error="skip",
                     overlap_scoring=overlap)
            .debugging(seed=0))


def run(cfg, iterations: int) -> dict:
    algo = cfg.build_algo()
    try:
        algo.train()  # warm-up: processes start, models load
        times, reward_s, calls = [], [], []
        for _ in range(iterations):
            t0 = time.perf_counter()
            result = algo.train()
            times.append(time.perf_counter() - t0)
            reward_s.append(float(result["env_runners"]["timers"]["reward_s"]))
            calls.append({k: int(v) for k, v in result["env_runners"]["reward_calls"].items()})
    finally:
        algo.stop()
    return {"iteration_s": [round(t, 2) for t in times], "iteration_s_mean": round(sum(times) / len(times), 2),
            "reward_s_summed_over_runners": [round(r, 2) for r in reward_s],
            "stall_s_max": round(max(times) - min(times), 2),
            "reward_calls_total": {k: sum(c[k] for c in calls) for k in calls[0]}}


def main(only: str | None = None) -> dict:
    import ray

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    report = {"slow_reward_in_runners": run(config(slow_reward, 0), 3),
              "slow_reward_2_workers": run(config(slow_reward, 2), 3),
              "slow_reward_4_workers": run(config(slow_reward, 4), 3),
              "slow_reward_4_workers_overlap": run(config(slow_reward, 4, overlap=True), 3),
              "hanging_1pct_2_workers": run(config(hanging_reward, 2), 10)}
    out = Path(__file__).parent / "results" / "reward_service.json"
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
