"""rllib-rpp: REINFORCE++ on Ray RLlib.

  rllib-rpp train tiny-arith            REINFORCE++ on the built-in tiny model (CPU, ~5 min)
  rllib-rpp train math --model M --prompts P [--gpus N]     math answers, vLLM, GPUs
  rllib-rpp train general --model M --reward-model RM --prompts P [--gpus N]
  rllib-rpp tiny-model [--rebuild]      where the built-in model is (built on first use)

Also `python -m rllib_rpp ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from rllib_rpp.estimators import ESTIMATORS
from rllib_rpp.presets import PRESETS
from rllib_rpp.samplers.base import SAMPLERS

_COMMON = ("lr", "kl_coef", "estimator", "seed", "num_prompts", "samples_per_prompt")


def _tiny_model(args) -> None:
    from envs.cache import build_info
    from envs.reward_model import ensure_tiny_arith_rm
    from envs.tiny_arith import ensure_tiny_arith

    path = ensure_tiny_arith_rm(rebuild=args.rebuild) if args.reward_model else ensure_tiny_arith(rebuild=args.rebuild)
    info = build_info(path)
    info.pop("recipe", None)
    print(path)
    print(json.dumps(info), file=sys.stderr)


def _train(args) -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from rllib_rpp.driver import run

    options = {k: v for k, v in vars(args).items() if k in _COMMON and v is not None}
    if args.example == "tiny-arith":
        if args.sampler:
            options["sampler"] = args.sampler
    else:
        if not args.model or not args.prompts:
            raise SystemExit(f"`train {args.example}` needs --model and --prompts")
        options.update(model=args.model, prompts=args.prompts, eval_prompts=args.eval_prompts, gpus=args.gpus,
                       learner_gpus=args.learner_gpus, rollout_gpus=args.rollout_gpus, colocate=args.colocate,
                       train_batch=args.train_batch, reward_gpus=args.reward_gpus)
        if args.learner_gpus is not None or args.rollout_gpus is not None:
            options["gpus"] = None
        if args.example == "general":
            if not args.reward_model:
                raise SystemExit("`train general` needs --reward-model (a Bradley-Terry reward model id or path)")
            options["reward_model"] = args.reward_model
    config = PRESETS[args.example](**options)
    budget = args.time_budget if args.time_budget is not None else (300.0 if args.example == "tiny-arith" else None)
    if budget is None and args.iterations is None:
        raise SystemExit("give --time-budget or --iterations")
    every = args.checkpoint_every
    if every is not None and not every.endswith("s"):
        if not every.isdigit():
            raise SystemExit(f"--checkpoint-every {every!r}: expected iterations (e.g. 50) or seconds (e.g. 600s)")
        every = int(every)
    run(config, time_budget_s=budget, iterations=args.iterations, eval_every_s=args.eval_every,
        checkpoint_dir=args.checkpoint_dir, export_dir=args.export_dir, checkpoint_every=every,
        keep_checkpoints=args.keep_checkpoints, resume=args.resume)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rllib-rpp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a preset", description="Train a preset configuration, "
                       "printing progress and held-out greedy evaluations before, during and after.")
    t.add_argument("example", choices=tuple(PRESETS), help="which preset (rllib_rpp.presets)")
    t.add_argument("--time-budget", type=float, default=None,
                   help="seconds of training, evaluations excluded (default: 300 for tiny-arith, none otherwise)")
    t.add_argument("--iterations", type=int, default=None, help="stop after this many iterations")
    t.add_argument("--eval-every", type=float, default=30.0, help="seconds of training between evaluations")
    t.add_argument("--sampler", choices=tuple(SAMPLERS), help="generation backend of the env runners")
    t.add_argument("--lr", type=float, help="learning rate")
    t.add_argument("--kl-coef", type=float, help="β, the KL penalty coefficient")
    t.add_argument("--estimator", choices=tuple(ESTIMATORS), help="advantage estimator")
    t.add_argument("--num-prompts", type=int, help="prompts per iteration")
    t.add_argument("--samples-per-prompt", type=int, help="completions per prompt")
    t.add_argument("--seed", type=int, help="random seed")
    t.add_argument("--model", help="math/general: policy model (HF id or local path)")
    t.add_argument("--prompts", help="math/general: prompt source (.jsonl with prompt [+ answer] columns)")
    t.add_argument("--eval-prompts", help="math/general: held-out prompt source for greedy evaluations")
    t.add_argument("--reward-model", help="general: Bradley-Terry reward model (HF id or local path)")
    t.add_argument("--gpus", type=int, default=2,
                   help="math/general: GPUs to use, half learners and half vLLM runners (1 = colocated)")
    t.add_argument("--learner-gpus", type=int, help="math/general: learner GPUs (FSDP when > 1), with --rollout-gpus")
    t.add_argument("--rollout-gpus", type=int, help="math/general: vLLM runner GPUs, with --learner-gpus")
    t.add_argument("--colocate", action="store_true",
                   help="math/general: a learner and a vLLM runner on every GPU (vLLM sleeps while learners train)")
    t.add_argument("--reward-gpus", type=float,
                   help="math/general: reward workers' GPUs: a share < 0.5 next to each vLLM runner, or whole GPUs")
    t.add_argument("--train-batch", type=int, help="math/general: completions per optimizer step, all learners")
    t.add_argument("--checkpoint-dir", help="save checkpoints here (iter_NNNNNN/ and `latest`), always at the end")
    t.add_argument("--checkpoint-every", help="also checkpoint every N iterations, or every N seconds ('600s')")
    t.add_argument("--keep-checkpoints", type=int, default=3, help="how many checkpoints to keep (default 3)")
    t.add_argument("--resume", help="continue the run checkpointed here (a --checkpoint-dir or one checkpoint)")
    t.add_argument("--export-dir", help="export the trained policy (save_pretrained) here at the end")
    t.set_defaults(func=_train)

    p = sub.add_parser("tiny-model", help="print where the built-in tiny-arith model is (building it if needed)")
    p.add_argument("--rebuild", action="store_true", help="rebuild it even if it is cached")
    p.add_argument("--reward-model", action="store_true", help="the built-in reward model tiny-arith-rm instead")
    p.set_defaults(func=_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad options, models, layouts, checkpoints: say which
        raise SystemExit(f"rllib-rpp: error: {e}") from None


if __name__ == "__main__":
    main()
