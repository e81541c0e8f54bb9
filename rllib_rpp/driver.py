"""The training driver behind `rllib-rpp train`: train with progress lines, greedy evaluations before,
during and after, optional checkpoint and export, and a one-line JSON summary at the end."""

from __future__ import annotations

import json
import os
import sys
import time

import ray


def _line(msg: str) -> None:
    print(msg, flush=True)


def init_ray(log=_line) -> None:
    """Attach to a running Ray cluster (RAY_ADDRESS, or one started with `ray start` on this node,
    e.g. under `ray job submit`) or start a local one with every core of this machine."""
    if ray.is_initialized():
        return
    quiet = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", **quiet)
        log(f"attached to the Ray cluster at {ray.get_runtime_context().gcs_address} "
            f"({ray.cluster_resources().get('CPU', 0):.0f} CPUs, {ray.cluster_resources().get('GPU', 0):.0f} GPUs)")
    except ConnectionError:
        if os.environ.get("RAY_ADDRESS"):
            raise
        ray.init(num_cpus=os.cpu_count(), **quiet)


def run(config, *, time_budget_s: float | None = 300.0, iterations: int | None = None,
        eval_every_s: float = 30.0, checkpoint_dir: str | None = None, export_dir: str | None = None,
        quiet: bool = False) -> dict:
    """Train `config` until the time budget (training time, evaluations excluded) or the
    iteration count is used up. Returns a summary dict (also printed as JSON)."""
    log = (lambda m: None) if quiet else _line
    init_ray(log)
    t0 = time.time()
    est = config.memory_estimate()
    if est is not None:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in est.gib().items() if k != "total")
        log(f"learner memory estimate: {est.total / (1 << 30):.2f} GiB per learner ({parts} GiB)")
    log("building the algorithm (first run: builds and caches the tiny model) ...")
    algo = config.build_algo()
    log(f"built in {time.time() - t0:.1f} s")
    evals = []
    can_eval = config.greedy_eval_prompts is not None

    def evaluate(train_s):
        if not can_eval:
            return
        res = algo.evaluate_greedy()
        evals.append({"train_s": round(train_s, 1), **res})
        log(f"[eval] after {train_s:6.1f} s of training: held-out greedy reward {res['reward_mean']:.3f} "
            f"on {res['num_prompts']} prompts")

    evaluate(0.0)
    train_s, last_eval, it, completions = 0.0, 0.0, 0, 0
    result = {}
    while (iterations is None or it < iterations) and (time_budget_s is None or train_s < time_budget_s):
        t = time.time()
        result = algo.train()
        train_s += time.time() - t
        it += 1
        runners, learner = result["env_runners"], result["learners"]["default_policy"]
        completions += runners.get("num_env_steps_sampled", 0)
        log(f"iter {it:4d} | {train_s:6.1f} s | reward {runners['episode_return_mean']:.3f} | "
            f"kl/token {learner.get('kl_ref_per_token', 0):.4f} | clip {learner.get('clip_fraction', 0):.3f} | "
            f"len {runners.get('response_length_mean', 0):.1f} | {completions / train_s:.0f} completions/s")
        if train_s - last_eval >= eval_every_s:
            evaluate(train_s)
            last_eval = train_s
    if not evals or evals[-1]["train_s"] != round(train_s, 1):
        evaluate(train_s)
    summary = {
        "iterations": it,
        "train_seconds": round(train_s, 1),
        "completions_per_s": round(completions / max(train_s, 1e-9), 1),
        "last_result_reward_mean": result.get("env_runners", {}).get("episode_return_mean"),
    }
    if evals:
        summary.update(
            eval_before=evals[0]["reward_mean"], eval_after=evals[-1]["reward_mean"],
            eval_last_two_mean=sum(e["reward_mean"] for e in evals[-2:]) / len(evals[-2:]),
            evals=[(e["train_s"], round(e["reward_mean"], 4)) for e in evals],
        )
        summary["gain_points"] = round(100 * (summary["eval_last_two_mean"] - summary["eval_before"]), 1)
    if checkpoint_dir:
        summary["checkpoint"] = str(algo.save_to_path(os.path.abspath(checkpoint_dir)))
        log(f"checkpoint: {summary['checkpoint']}")
    if export_dir:
        summary["export"] = str(algo.export_policy(export_dir))
        log(f"exported policy (transformers / vLLM loadable): {summary['export']}")
    if evals:
        log(f"held-out greedy reward: {summary['eval_before']:.3f} before -> {summary['eval_after']:.3f} after "
            f"({summary['gain_points']:+.1f} points, mean of the last two evaluations)")
    print("SUMMARY " + json.dumps(summary), file=sys.stdout, flush=True)
    algo.stop()
    return summary
