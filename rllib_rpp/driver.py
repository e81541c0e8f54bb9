"""The training driver behind `rllib-rpp train`: train with progress lines, greedy evaluations before,
during and after, optional checkpoint and export, and a one-line JSON summary at the end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import ray

from rllib_rpp.checkpoints import LATEST


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


class Checkpointer:
    """Checkpoints of a run in `root`: `iter_000042/` directories (each written atomically), the
    newest named in `root/latest` (what `--resume root` and `from_checkpoint(root)` restore), the
    last `keep` kept. `every`: iterations (int) or seconds ("300s"); None: only at the end."""

    def __init__(self, root: str | None, every: int | str | None = None, keep: int = 3):
        self.root = Path(root).absolute() if root else None
        self.every_s = float(every[:-1]) if isinstance(every, str) and every.endswith("s") else None
        self.every_it = int(every) if every is not None and self.every_s is None else None
        self.keep, self.last_t = keep, time.time()
        if self.every_it is not None and self.every_it < 1 or self.every_s is not None and self.every_s <= 0:
            raise ValueError(f"checkpoint_every={every!r} is invalid: expected a number of iterations >= 1 "
                             f"or seconds like '300s'")

    def due(self, iteration: int) -> bool:
        if self.root is None:
            return False
        if self.every_it is not None:
            return iteration % self.every_it == 0
        return self.every_s is not None and time.time() - self.last_t >= self.every_s

    def save(self, algo) -> str:
        path = algo.save_to_path(str(self.root / f"iter_{algo.iteration:06d}"))
        tmp = self.root / f".{LATEST}.tmp"
        tmp.write_text(Path(path).name)
        os.replace(tmp, self.root / LATEST)  # atomic: `latest` always names a complete checkpoint
        for old in sorted(self.root.glob("iter_*"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        self.last_t = time.time()
        return path


def check_writable(*dirs: str | None) -> None:
    """Fail before training, not after it, when an output directory cannot be written."""
    for d in filter(None, dirs):
        path = Path(d).absolute()
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise SystemExit(f"cannot write to {path}: {e.strerror or e}") from e


class StopRequest:
    """SIGINT/SIGTERM: finish the current iteration, save, export, then stop (a second signal
    stops at once)."""

    def __init__(self):
        self.signum = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"{signal.Signals(signum).name}: finishing this iteration, then saving and stopping "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)


def run(config, *, time_budget_s: float | None = 300.0, iterations: int | None = None,
        eval_every_s: float = 30.0, checkpoint_dir: str | None = None, export_dir: str | None = None,
        checkpoint_every: int | str | None = None, keep_checkpoints: int = 3, resume: str | None = None,
        quiet: bool = False) -> dict:
    """Train `config` (or continue the run checkpointed in `resume`) until the time budget
    (training time, evaluations excluded) or the iteration count is used up, or SIGINT/SIGTERM.
    Returns a summary dict (also printed as JSON); exits non-zero after a signal."""
    log = (lambda m: None) if quiet else _line
    check_writable(checkpoint_dir, export_dir)
    checkpointer = Checkpointer(checkpoint_dir, checkpoint_every, keep_checkpoints)
    init_ray(log)
    t0 = time.time()
    if resume:
        from rllib_rpp import ReinforcePP

        log(f"resuming from {resume} ...")
        algo = ReinforcePP.from_checkpoint(resume)
        config = algo.config
    else:
        est = config.memory_estimate()
        if est is not None:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in est.gib().items() if k != "total")
            log(f"learner memory estimate: {est.total / (1 << 30):.2f} GiB per learner ({parts} GiB)")
        log("building the algorithm (first run: builds and caches the tiny model) ...")
        algo = config.build_algo()
    log(f"built in {time.time() - t0:.1f} s")
    stop = StopRequest()
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
    while ((iterations is None or it < iterations) and (time_budget_s is None or train_s < time_budget_s)
           and stop.signum is None):
        t = time.time()
        result = algo.train()
        train_s += time.time() - t
        it += 1
        runners, learner = result["env_runners"], result["learners"]["default_policy"]
        completions += runners.get("num_env_steps_sampled", 0)
        log(f"iter {it:4d} | {train_s:6.1f} s | reward {runners['episode_return_mean']:.3f} | "
            f"kl/token {learner.get('kl_ref_per_token', 0):.4f} | clip {learner.get('clip_fraction', 0):.3f} | "
            f"len {runners.get('response_length_mean', 0):.1f} | {completions / train_s:.0f} completions/s")
        if checkpointer.due(algo.iteration) and stop.signum is None:
            log(f"checkpoint: {checkpointer.save(algo)}")
        if train_s - last_eval >= eval_every_s and stop.signum is None:
            evaluate(train_s)
            last_eval = train_s
    if stop.signum is None and (not evals or evals[-1]["train_s"] != round(train_s, 1)):
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
        summary["checkpoint"] = checkpointer.save(algo)
        log(f"checkpoint: {summary['checkpoint']}")
    if export_dir:
        summary["export"] = str(algo.export_policy(export_dir))
        log(f"exported policy (transformers / vLLM loadable): {summary['export']}")
    if evals:
        log(f"held-out greedy reward: {summary['eval_before']:.3f} before -> {summary['eval_after']:.3f} after "
            f"({summary['gain_points']:+.1f} points, mean of the last two evaluations)")
    print("SUMMARY " + json.dumps(summary), file=sys.stdout, flush=True)
    algo.stop()
    if stop.signum is not None:
        where = f"; checkpoint: {summary['checkpoint']}" if checkpoint_dir else " (no --checkpoint-dir: nothing saved)"
        print(f"stopped by {signal.Signals(stop.signum).name} after {it} iterations{where}", file=sys.stderr,
              flush=True)
        raise SystemExit(128 + stop.signum)
    return summary
