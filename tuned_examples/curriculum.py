"""A curriculum: reasoning-gym's chain_sum from one-digit to three-digit terms, one level up each time
the running accuracy over the last 64 samples reaches `promote_at`, and after 150 and 300
iterations at the latest (`schedule`). The levels are overrides of the task's reasoning-gym config;
the held-out evaluation follows the current level; the levels and their windows are saved in
checkpoints and restored exactly (`--resume`).

    python -m tuned_examples.curriculum [--iterations 400] [--promote-at 0.5]
        [--checkpoint-dir ckpt] [--resume ckpt/latest]
"""

from __future__ import annotations

import argparse

from envs.tasks import mixture

LEVELS = [{}, {"config": {"max_digits": 2}}, {"config": {"max_digits": 3}}]


def task(*, promote_at: float | None = 0.5, window: int = 64, schedule=(150, 300), correct_at: float = 1.0,
         size: int = 500, eval_size: int = 32) -> dict:
    """chain_sum with a curriculum (tiny-arith reads plain text: no chat prompts)."""
    curriculum = {"levels": LEVELS, "window": window}
    if promote_at is not None:
        curriculum["promote_at"] = promote_at
    if schedule is not None:
        curriculum["schedule"] = list(schedule)
    sums = {"source": "reasoning_gym", "dataset": "chain_sum", "size": size, "eval_size": eval_size,
            "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}, "chat": False,
            "instruction": ""}
    return {"name": "chain_sum", "prompts": sums, "correct_at": correct_at, "curriculum": curriculum}


def build_config(*, num_prompts: int = 32, samples: int = 4, **options):
    from rllib_rpp.app.presets import tiny_arith

    tasks = [task(**options)]
    return (tiny_arith(num_prompts=num_prompts, samples_per_prompt=samples)
            .environment(env_config={"prompts": mixture.spec(tasks), "reward_funcs": ["reasoning_gym"]})
            .evaluation(greedy_eval_prompts=mixture.spec(tasks, "eval")))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--promote-at", type=float, default=0.5)
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--resume")
    args = parser.parse_args(argv)
    from rllib_rpp.app.driver import run

    config = None if args.resume else build_config(promote_at=args.promote_at)
    return run(config, iterations=args.iterations, time_budget_s=None, eval_every_s=20.0, name="curriculum",
               checkpoint_dir=args.checkpoint_dir, resume=args.resume)


if __name__ == "__main__":
    main()
