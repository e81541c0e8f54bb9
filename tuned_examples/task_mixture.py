"""Several tasks in one run: a prompt file scored by exact match, reasoning-gym's chain_sum scored by
its verifier, and an OpenEnv environment scored by its own step, drawn 2 : 1 : 1. Each prompt
carries its task; reward, accuracy and response length are reported per task (metrics, console,
run directory with tasks.png, trackers) and each task has its own held-out evaluation.

    python -m tuned_examples.task_mixture [--iterations 30] [--url http://127.0.0.1:8011] [--curriculum]

`--curriculum` adds a difficulty schedule to chain_sum (one-digit, then two-digit terms): up when
its running accuracy reaches 0.6 over 64 samples, after 100 iterations at the latest.
"""

from __future__ import annotations

import argparse

from envs.tasks import mixture
from tuned_examples import openenv_env

ONE_DIGIT = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
CURRICULUM = {"levels": [{}, {"config": {"max_digits": 2}}], "promote_at": 0.6, "window": 64, "schedule": [100]}


def tasks(*, weights=(2.0, 1.0, 1.0), url: str | None = None, curriculum: dict | None = None) -> list[dict]:
    """The three tasks (tiny-arith reads plain text: no chat prompts)."""
    sums = {"source": "reasoning_gym", "dataset": "chain_sum", "config": ONE_DIGIT, "size": 500, "eval_size": 32,
            "chat": False, "instruction": ""}
    return [
        {"name": "add", "prompts": "arithmetic", "eval_prompts": "arithmetic-eval", "weight": weights[0],
         "reward_funcs": ["exact_match"]},
        {"name": "chain_sum", "prompts": sums, "weight": weights[1],
         **({"curriculum": curriculum} if curriculum else {})},
        {"name": "openenv", "prompts": openenv_env.task(url, size=200, eval_size=32), "weight": weights[2]},
    ]


def build_config(*, weights=(2.0, 1.0, 1.0), url: str | None = None, curriculum: dict | None = None,
                 num_prompts: int = 32, samples: int = 4):
    """tiny-arith's preset on the mixture; the held-out evaluation is the mixture's eval split."""
    from rllib_rpp.app.presets import tiny_arith

    task_list = tasks(weights=weights, url=url, curriculum=curriculum)
    return (tiny_arith(num_prompts=num_prompts, samples_per_prompt=samples)
            .environment(env_config={"prompts": mixture.spec(task_list), "reward_funcs": ["exact_match"]})
            .evaluation(greedy_eval_prompts=mixture.spec(task_list, "eval"))
            .rewards(reward_timeout_s=30.0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--url", help="the OpenEnv task from this server (python -m tuned_examples.openenv_env "
                                      "--serve) instead of in process")
    parser.add_argument("--curriculum", action="store_true")
    args = parser.parse_args(argv)
    from rllib_rpp.app.driver import run

    config = build_config(url=args.url, curriculum=CURRICULUM if args.curriculum else None)
    return run(config, iterations=args.iterations, time_budget_s=None, eval_every_s=20.0, name="task-mixture")


if __name__ == "__main__":
    main()
