"""A Ray Tune search over REINFORCE++ options (β x clip ε x learning rate) on the tiny task,
with ASHA stopping bad trials early; prints the best trial's config and held-out accuracy.

    python -m tuned_examples.tune_search [--samples 8] [--max-iterations 60]
"""

from __future__ import annotations

import argparse

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from rllib_rpp import ReinforcePP
from rllib_rpp.presets import tiny_arith as build_config

METRIC = "greedy_eval/reward_mean"  # held-out greedy accuracy, evaluated every `eval_interval`


def search(*, num_samples: int = 8, max_iterations: int = 60, eval_interval: int = 10, grace: int = 10,
           storage_path: str | None = None, seed: int = 0):
    param_space = (
        build_config(seed=seed)
        .training(kl_coef=tune.choice([0.001, 0.01, 0.05]), clip_low=tune.choice([0.1, 0.2]),
                  clip_high=tune.choice([0.2, 0.28]), lr=tune.loguniform(5e-5, 1e-3))
        .evaluation(greedy_eval_interval=eval_interval)
    )
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_iterations, grace_period=grace,
                              reduction_factor=2)
    tuner = tune.Tuner(
        ReinforcePP,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", num_samples=num_samples, scheduler=scheduler),
        run_config=tune.RunConfig(stop={"training_iteration": max_iterations}, storage_path=storage_path,
                                  verbose=1),
    )
    results = tuner.fit()
    best = results.get_best_result()
    picked = {k: best.config[k] for k in ("kl_coef", "clip_low", "clip_high", "lr")}
    print(f"best trial: {picked} -> held-out greedy accuracy {best.metrics['greedy_eval']['reward_mean']:.3f} "
          f"after {best.metrics['training_iteration']} iterations")
    return results, best


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-iterations", type=int, default=60)
    args = parser.parse_args()
    ray.init(include_dashboard=False)
    search(num_samples=args.samples, max_iterations=args.max_iterations)
