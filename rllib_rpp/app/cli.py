"""rllib-rpp: REINFORCE++ on Ray RLlib.

  rllib-rpp train tiny-arith            REINFORCE++ on the built-in tiny model (CPU, ~5 min)
  rllib-rpp train math --model M --prompts P [--gpus N]     math answers, vLLM, GPUs
  rllib-rpp train general --model M --reward-model RM --prompts P [--gpus N]
  rllib-rpp train tiny-arith --set training.lr=1e-4 --set generation.max_new_tokens=8
  rllib-rpp show-config tiny-arith [--set ...] [--config run.yaml]    the resolved config (YAML)
  rllib-rpp plot RUN_DIR [RUN_DIR ...] [--out curves.png]              overlay runs' curves
  rllib-rpp train smollm2               a real model (SmolLM2-135M-Instruct) on reasoning-gym (CPU, 20 min)
  rllib-rpp model NAME [--rebuild]      where a built-in model is (built on first use)
  rllib-rpp tiny-model [--rebuild]      where the built-in tiny-arith model is

Also `python -m rllib_rpp ...`.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path

from rllib_rpp.app import overrides
from rllib_rpp.app.presets import CPU_PRESETS, PRESETS
from rllib_rpp.estimators import ESTIMATORS
from rllib_rpp.samplers.base import SAMPLERS
from rpp_hub.models import BUILTIN_MODELS

_COMMON = ("lr", "kl_coef", "estimator", "seed", "num_prompts", "samples_per_prompt")


def _model(args) -> None:
    from rpp_hub.cache import build_info
    from rpp_hub.models import ensure_builtin

    path = ensure_builtin(args.name, rebuild=args.rebuild)
    info = build_info(Path(path))
    info.pop("recipe", None)
    print(path)
    print(json.dumps(info), file=sys.stderr)


def _tiny_model(args) -> None:
    from envs.reward_model import ensure_tiny_arith_rm
    from envs.tiny_arith import ensure_tiny_arith
    from rpp_hub.cache import build_info

    path = ensure_tiny_arith_rm(rebuild=args.rebuild) if args.reward_model else ensure_tiny_arith(rebuild=args.rebuild)
    info = build_info(path)
    info.pop("recipe", None)
    print(path)
    print(json.dumps(info), file=sys.stderr)


_GPU_FLAGS = ("model", "prompts", "eval_prompts", "reward_model", "gpus", "learner_gpus", "rollout_gpus",
              "colocate", "reward_gpus", "train_batch")
_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt")


def _given(args, names) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) not in (None, False, [])]


def _build_config(args):
    """The preset with the flags, then `--config FILE`, then every `--set` in order."""
    options = {k: v for k, v in vars(args).items() if k in _COMMON and v is not None}
    if args.example in CPU_PRESETS:
        takes_model = "model" in inspect.signature(PRESETS[args.example]).parameters and args.example != "tiny-arith"
        if ignored := _given(args, [f for f in _GPU_FLAGS if not (takes_model and f == "model")]):
            raise ValueError(f"{', '.join(ignored)}: options of the math/general presets, not of {args.example}")
        if getattr(args, "sampler", None):
            options["sampler"] = args.sampler
        if takes_model and args.model:
            options["model"] = args.model
    else:
        if not args.model or not args.prompts:
            raise ValueError(f"`{args.example}` needs --model and --prompts")
        for flag, source in (("--prompts", args.prompts), ("--eval-prompts", args.eval_prompts)):
            if source and source.endswith(_FILE_SUFFIXES) and not os.path.isfile(source):
                raise ValueError(f"{flag} {source}: no such file")
        options.update(model=args.model, prompts=args.prompts, eval_prompts=args.eval_prompts, gpus=args.gpus,
                       learner_gpus=args.learner_gpus, rollout_gpus=args.rollout_gpus, colocate=args.colocate,
                       train_batch=args.train_batch, reward_gpus=args.reward_gpus)
        if args.learner_gpus is not None or args.rollout_gpus is not None:
            options["gpus"] = None
        elif args.gpus is None:
            options["gpus"] = 2
        if args.example == "general":
            if not args.reward_model:
                raise ValueError("`train general` needs --reward-model (a Bradley-Terry reward model id or path)")
            options["reward_model"] = args.reward_model
        elif args.reward_model:
            raise ValueError("--reward-model: an option of the general preset (math rewards answers with math-verify)")
    pairs = overrides.load_file(args.config) if args.config else []
    pairs += [overrides.parse_set(item) for item in args.set]
    return overrides.apply(PRESETS[args.example](**options), pairs)


def _calm_libraries() -> None:
    """Keep the console for the run: no weight-loading progress bars, no notices a user cannot act on
    (the algorithm's import drops those, where they are logged: `rllib_rpp.reinforce_pp.library_notices`;
    other deprecations still reach the user)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _train(args) -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    _calm_libraries()
    from rllib_rpp.app.console import Console
    from rllib_rpp.app.driver import run

    if args.checkpoint_every is not None and not args.checkpoint_dir:
        raise ValueError("--checkpoint-every needs --checkpoint-dir (where to save)")
    if args.resume:  # the checkpoint holds the config: options given with --resume would be ignored
        if ignored := _given(args, (*_COMMON, "sampler", *_GPU_FLAGS, "set", "config")):
            raise ValueError(f"--resume continues the checkpointed run with its own config; {', '.join(ignored)} "
                             f"would be ignored: leave them out (or start a new run from a preset)")
        config = None
    else:
        config = _build_config(args)
    budget = args.time_budget if args.time_budget is not None else CPU_PRESETS.get(args.example)
    if budget is None and args.iterations is None:
        raise ValueError("give --time-budget or --iterations")
    console = Console(mode="quiet" if args.quiet else "auto", every_s=args.log_every)
    run(config, time_budget_s=budget, iterations=args.iterations, eval_every_s=args.eval_every,
        checkpoint_dir=args.checkpoint_dir, export_dir=args.export_dir, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, resume=args.resume, run_dir=args.run_dir, name=args.example,
        wandb_project=args.wandb, mlflow=args.mlflow is not None, mlflow_uri=args.mlflow or None, console=console)


def _show_config(args) -> None:
    import yaml

    config = _build_config(args)
    config.validate(warn=False)  # as `train` checks it: show-config prints only configs that train
    print(yaml.safe_dump(overrides.resolved(config), sort_keys=False), end="")


def _plot(args) -> None:
    from rllib_rpp.app.run_record import CURVES, plot_runs

    out = args.out or (os.path.join(args.run_dirs[0], CURVES) if len(args.run_dirs) == 1 else CURVES)
    print(plot_runs(args.run_dirs, out, labels=args.labels))


def _config_flags(t) -> None:
    t.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any config option, e.g. training.lr=1e-5 or generation.max_new_tokens=256 "
                        "(JSON values where they parse, strings otherwise; repeatable; after --config)")
    t.add_argument("--config", metavar="FILE.yaml", help="options as YAML sections, the keys of --set "
                   "(`rllib-rpp show-config` prints one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rllib-rpp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a preset", description="Train a preset configuration, "
                       "printing progress and held-out greedy evaluations before, during and after.")
    t.add_argument("example", choices=tuple(PRESETS), help="which preset (rllib_rpp.app.presets)")
    t.add_argument("--time-budget", type=float, default=None,
                   help="seconds of training, evaluations excluded (default: 300 for tiny-arith, 1200 for smollm2, "
                        "none otherwise)")
    t.add_argument("--iterations", type=int, default=None, help="stop after this many iterations")
    t.add_argument("--eval-every", type=float, default=30.0, help="seconds of training between evaluations")
    t.add_argument("--sampler", choices=tuple(SAMPLERS), help="the sampler the env runners generate with")
    t.add_argument("--lr", type=float, help="learning rate")
    t.add_argument("--kl-coef", type=float, help="β, the KL penalty coefficient")
    t.add_argument("--estimator", choices=tuple(ESTIMATORS), help="advantage estimator")
    t.add_argument("--num-prompts", type=int, help="prompts per iteration")
    t.add_argument("--samples-per-prompt", type=int, help="completions per prompt")
    t.add_argument("--seed", type=int, help="random seed")
    t.add_argument("--model", help="smollm2/math/general: policy model (HF id, local path or built-in name)")
    t.add_argument("--prompts", help="math/general: prompt source (.jsonl with prompt [+ answer] columns)")
    t.add_argument("--eval-prompts", help="math/general: held-out prompt source for greedy evaluations")
    t.add_argument("--reward-model", help="general: Bradley-Terry reward model (HF id or local path)")
    t.add_argument("--gpus", type=int,
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
    t.add_argument("--keep-checkpoints", type=int, default=3,
                   help="how many checkpoints to keep (default 3; 0 keeps all); `latest`'s is never deleted")
    t.add_argument("--resume", help="continue the run checkpointed here (a --checkpoint-dir or one checkpoint)")
    t.add_argument("--export-dir", help="export the trained policy (save_pretrained) here at the end")
    t.add_argument("--run-dir", help="where the run's metrics.jsonl, summary.json, config.yaml and curves.png go "
                   "(default: runs/<preset>-<date>-<time>; with --resume, the resumed run's)")
    t.add_argument("--wandb", metavar="PROJECT", help="log to this Weights & Biases project (offline without a "
                   "W&B login; needs the track extra: pip install -e '.[track]')")
    t.add_argument("--mlflow", nargs="?", const="", metavar="TRACKING_URI", help="log to MLflow (default: "
                   "./mlruns, a local SQLite store; or a server / database URI; needs the track extra)")
    t.add_argument("--quiet", action="store_true", help="print only errors and the closing summary")
    t.add_argument("--log-every", type=float, default=30.0, metavar="SECONDS", help="when the output is not a "
                   "terminal: a progress line every SECONDS of wall time (default 30; 0: every iteration)")
    _config_flags(t)
    t.set_defaults(func=_train)

    c = sub.add_parser("show-config", help="print a preset's resolved config (YAML, valid for --config)")
    c.add_argument("example", choices=tuple(PRESETS), help="which preset")
    for flag in ("--model", "--prompts", "--eval-prompts", "--reward-model"):
        c.add_argument(flag, help="as for train")
    c.set_defaults(sampler=None, gpus=None, learner_gpus=None, rollout_gpus=None, colocate=False, reward_gpus=None,
                   train_batch=None, func=_show_config)
    _config_flags(c)

    pl = sub.add_parser("plot", help="overlay the curves of one or more run directories")
    pl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (`--run-dir` of train)")
    pl.add_argument("--out", help="the picture to write (default: RUN_DIR/curves.png for one run, else ./curves.png)")
    pl.add_argument("--labels", nargs="+", help="one label per run (default: the directories' names)")
    pl.set_defaults(func=_plot)

    m = sub.add_parser("model", help="print where a built-in model is (building it if needed)")
    m.add_argument("name", help=f"a built-in model: {', '.join(BUILTIN_MODELS)}, or random:<shape>")
    m.add_argument("--rebuild", action="store_true", help="rebuild it even if it is cached")
    m.set_defaults(func=_model)

    p = sub.add_parser("tiny-model", help="print where the built-in tiny-arith model is (building it if needed)")
    p.add_argument("--rebuild", action="store_true", help="rebuild it even if it is cached")
    p.add_argument("--reward-model", action="store_true", help="the built-in reward model tiny-arith-rm instead")
    p.set_defaults(func=_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as e:  # bad options, models, layouts, checkpoints, full or read-only disks: say which
        raise SystemExit(f"rllib-rpp: error: {e}") from None


if __name__ == "__main__":
    main()
