"""A Ray Tune search over REINFORCE++ options (β x clip ε x learning rate) on the tiny task,
with ASHA stopping bad trials early; prints a compact table of the searched options and the
metric while it runs, then the best trial's options and held-out accuracy.

    python -m tuned_examples.tune_search [--samples 8] [--max-iterations 60] [--wandb PROJECT] [--mlflow [URI]]
    python -m tuned_examples.tune_search --over tasks [--samples 2]

`--over tasks` searches a task mixture instead (`task_space`): the weight of the addition task
against reasoning-gym's chain_sum (a choice) x chain_sum's difficulty (a grid over its digits),
ranked by the mean of the tasks' held-out accuracies (`greedy_eval/task_accuracy_mean`); each
trial's held-out split follows its own sampled tasks (`tune.sample_from`).

Tracking goes through Tune's own logger callbacks (W&B: offline without a W&B login; MLflow:
default ./mlruns, a local SQLite store), with the same metric names as Tune's TensorBoard logs.
"""

from __future__ import annotations

import argparse
import os

import ray
from ray import tune
from ray.tune import CLIReporter
from ray.tune.schedulers import ASHAScheduler

from envs.tasks import mixture
from rllib_rpp import ReinforcePP
from rllib_rpp.app.presets import tiny_arith as build_config
from rllib_rpp.app.tracking import mlflow_store_uri, wandb_mode

METRIC = "greedy_eval/reward_mean"  # held-out greedy accuracy, evaluated every `eval_interval`
SEARCHED = {"kl_coef": "β", "clip_low": "ε_low", "clip_high": "ε_high", "lr": "lr"}
TASK_METRIC = "greedy_eval/task_accuracy_mean"  # the mean over the mixture's tasks of their held-out accuracy
TASKS = "env_config/prompts/tasks"
SEARCHED_TASKS = {f"{TASKS}/0/weight": "add weight", f"{TASKS}/1/prompts/config/max_digits": "chain_sum digits"}


def task_space(*, weights=(1.0, 3.0), digits=(1, 2), size: int = 500, eval_size: int = 32) -> list[dict]:
    """The mixture's tasks with Tune search spaces in them (a weight choice, a difficulty grid)."""
    sums = {"source": "reasoning_gym", "dataset": "chain_sum", "size": size, "eval_size": eval_size, "chat": False,
            "instruction": "", "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1,
                                          "max_digits": tune.grid_search(list(digits))}}
    return [{"name": "add", "prompts": "arithmetic", "eval_prompts": "arithmetic-eval",
             "weight": tune.choice(list(weights)), "reward_funcs": ["exact_match"]},
            {"name": "chain_sum", "prompts": sums, "weight": 1.0}]


def _held_out(spec) -> dict:
    """A trial's held-out split: its own (sampled) tasks' eval split."""
    return mixture.spec(spec.config["env_config"]["prompts"]["tasks"], "eval")


def reporter(over: str = "options") -> CLIReporter:
    """Tune's table with the searched options and the metrics that matter, not the whole config
    (Tune's newer console, RAY_AIR_NEW_OUTPUT=1, ignores reporters: `main` turns it off)."""
    searched, metric = (SEARCHED_TASKS, TASK_METRIC) if over == "tasks" else (SEARCHED, METRIC)
    # print_intermediate_tables: Tune otherwise decides from its global verbosity when the reporter is
    # built, which an earlier run with verbose=0 in the same process leaves at 0 (no table at all).
    return CLIReporter(parameter_columns=searched, max_report_frequency=30, print_intermediate_tables=True,
                       metric_columns={
                           "training_iteration": "iter", metric: "held-out acc",
                           "env_runners/episode_return_mean": "reward",
                           "learners/default_policy/kl_ref_per_token": "kl/token", "time_total_s": "time (s)"})


def tracking_callbacks(wandb_project: str | None = None, mlflow_uri: str | None = None) -> list:
    """Tune's W&B and MLflow logger callbacks."""
    callbacks = []
    if wandb_project:
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=wandb_project, mode=wandb_mode()))
    if mlflow_uri is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(MLflowLoggerCallback(tracking_uri=mlflow_store_uri(mlflow_uri or "mlruns"),
                                              experiment_name="rllib-rpp-tune-search", save_artifact=False))
    return callbacks


def search(*, num_samples: int = 8, max_iterations: int = 60, eval_interval: int = 10, grace: int = 10,
           storage_path: str | None = None, seed: int = 0, callbacks=None, progress_reporter=None,
           over: str = "options", tasks: list[dict] | None = None, num_prompts: int = 64):
    """`over="options"`: β x clip ε x lr; `over="tasks"`: the mixture `tasks` (default `task_space()`)."""
    if over not in ("options", "tasks"):
        raise ValueError(f"over={over!r} is invalid: expected 'options' or 'tasks'")
    param_space = build_config(seed=seed, num_prompts=num_prompts).evaluation(greedy_eval_interval=eval_interval)
    if over == "tasks":
        param_space = (param_space.environment(env_config={"prompts": mixture.spec(tasks or task_space())})
                       .evaluation(greedy_eval_prompts=tune.sample_from(_held_out)))
    else:
        param_space = param_space.training(kl_coef=tune.choice([0.001, 0.01, 0.05]), clip_low=tune.choice([0.1, 0.2]),
                                           clip_high=tune.choice([0.2, 0.28]), lr=tune.loguniform(5e-5, 1e-3))
    metric = TASK_METRIC if over == "tasks" else METRIC
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_iterations, grace_period=grace,
                              reduction_factor=2)
    tuner = tune.Tuner(
        ReinforcePP,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=metric, mode="max", num_samples=num_samples, scheduler=scheduler),
        run_config=tune.RunConfig(stop={"training_iteration": max_iterations}, storage_path=storage_path,
                                  verbose=1, callbacks=callbacks, progress_reporter=progress_reporter),
    )
    results = tuner.fit()
    best = results.get_best_result()
    if over == "tasks":
        picked = {t["name"]: {"weight": t["weight"], **({"config": t["prompts"]["config"]} if isinstance(
            t["prompts"], dict) else {})} for t in best.config["env_config"]["prompts"]["tasks"]}
    else:
        picked = {k: best.config[k] for k in SEARCHED}
    acc = best.metrics["greedy_eval"]["task_accuracy_mean" if over == "tasks" else "reward_mean"]
    print(f"best trial: {picked} -> held-out greedy accuracy {acc:.3f} after {best.metrics['training_iteration']} "
          f"iterations")
    return results, best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--over", choices=("options", "tasks"), default="options",
                        help="search REINFORCE++ options (β, ε, lr) or a task mixture's weights and difficulty")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-iterations", type=int, default=60)
    parser.add_argument("--storage-path", help="where Tune keeps the trials (default ~/ray_results)")
    parser.add_argument("--wandb", metavar="PROJECT", help="log every trial to this W&B project")
    parser.add_argument("--mlflow", nargs="?", const="", metavar="TRACKING_URI",
                        help="log every trial to MLflow (default ./mlruns)")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's reporter table instead of the config dump
    ray.init(include_dashboard=False, ignore_reinit_error=True)
    return search(num_samples=args.samples, max_iterations=args.max_iterations, storage_path=args.storage_path,
                  callbacks=tracking_callbacks(args.wandb, args.mlflow), progress_reporter=reporter(args.over),
                  over=args.over)


if __name__ == "__main__":
    main()
