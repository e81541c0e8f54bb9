"""The training driver behind `rllib-rpp train`: train with a live status line, greedy evaluations
before, during and after, a run directory (metrics, summary, curves.png), optional W&B / MLflow
tracking, checkpoints and export, and a one-line JSON summary at the end."""

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

from rllib_rpp.app import overrides
from rllib_rpp.app.console import Console, status_line, task_fields, task_note, time_left
from rllib_rpp.app.run_control import Checkpointer, StopRequest, check_writable, exit_after_signal, init_ray, within
from rllib_rpp.app.run_record import RunRecord
from rllib_rpp.app.tracking import Trackers, build_trackers, check_tracking, flatten_metrics
from rllib_rpp.checkpoints import LATEST

__all__ = ["run", "default_run_dir", "Checkpointer", "check_writable", "init_ray"]


def default_run_dir(name: str = "run") -> str:
    """`runs/<name>-<YYYYmmdd-HHMMSS>` under the working directory."""
    return str(Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}")


def run(config, *, time_budget_s: float | None = 300.0, iterations: int | None = None,
        eval_every_s: float = 30.0, checkpoint_dir: str | None = None, export_dir: str | None = None,
        checkpoint_every: int | str | None = None, keep_checkpoints: int = 3, resume: str | None = None,
        run_dir: str | None = None, name: str = "run", wandb_project: str | None = None,
        mlflow: bool = False, mlflow_uri: str | None = None, console: Console | None = None,
        quiet: bool = False) -> dict:
    """Train `config` (or continue the run checkpointed in `resume`) until the time budget
    (training time, evaluations excluded) or the iteration count is used up, or SIGINT/SIGTERM.
    Writes the run directory (`rllib_rpp.app.run_record`), logs to W&B (`wandb_project`) and/or MLflow
    (`mlflow`, at `mlflow_uri`). Returns the summary dict (also printed as JSON); exits non-zero
    after a signal."""
    for flag, value in (("--time-budget", time_budget_s), ("--iterations", iterations), ("--eval-every", eval_every_s)):
        if value is not None and not value > 0:
            raise ValueError(f"{flag} {value!r} is invalid: expected a positive number")
    console = console or Console(mode="quiet" if quiet else "auto")
    log = console.event
    if config is not None:  # the checks build_algo would make, before anything is made or written
        config.validate(warn=False)
    check_tracking(wandb_project=wandb_project, use_mlflow=mlflow, mlflow_uri=mlflow_uri)
    check_writable(checkpoint_dir, export_dir)
    checkpointer = Checkpointer(checkpoint_dir, checkpoint_every, keep_checkpoints)
    checkpointer.claim(resume)
    record, t0 = None, time.time()
    try:
        # A new run's directory is checked before anything is built; a resumed run's is in its checkpoint.
        record = None if resume else RunRecord(run_dir or default_run_dir(name), unique=not run_dir)
        if record is not None:
            check_writable(str(record.dir))
        init_ray(log)
        algo = _build(config, resume, log)
    except BaseException:
        if record is not None:  # a run that never started leaves no empty run directory behind
            record.discard_if_empty()
        checkpointer.release()
        raise
    log(f"built in {time.time() - t0:.1f} s")
    config = algo.config if resume else config
    info = dict(algo.run_info)  # what the checkpoint remembers of the run (empty for a new run)
    if resume and info.get("preset") not in (None, name):
        algo.stop()
        checkpointer.release()
        raise ValueError(f"--resume {resume} is a checkpoint of a {info['preset']!r} run, not {name!r}: "
                         f"resume it with `train {info['preset']} --resume ...`")
    start_it, train_s = algo.iteration, float(info.get("train_s", 0.0))
    if record is None:
        try:
            record = RunRecord(run_dir or info.get("run_dir") or default_run_dir(name), resume_at=start_it)
        except (OSError, ValueError):
            algo.stop()
            checkpointer.release()
            raise
    sections = overrides.resolved(config)
    record.write_config(sections)
    trackers, stop = Trackers([]), StopRequest()
    try:
        trackers = build_trackers(wandb_project=wandb_project, mlflow_uri=mlflow_uri, use_mlflow=mlflow,
                                  run_dir=str(record.dir), run_name=record.dir.name, experiment=f"rllib-rpp-{name}",
                                  warn=log)
        trackers.start({"preset": name, **overrides.flat(sections)}, ids=info.get("trackers") if resume else None)
        for where in trackers.describe():
            log(f"tracking: {where}")
        algo.run_info = {**info, "run_dir": str(record.dir), "trackers": trackers.ids(), "preset": name}
        summary = _train(algo, config, console, record, trackers, checkpointer, stop, train_s=train_s,
                         start_it=start_it, time_budget_s=time_budget_s, iterations=iterations,
                         eval_every_s=eval_every_s, resumed=bool(resume))
    except BaseException as e:
        trackers.finish(ok=False)
        console.close()
        _plot(record, log)
        _stop(algo, stop)
        record.release()
        checkpointer.release()
        if isinstance(e, SystemExit) and isinstance(e.code, int) and e.code > 128:  # a second signal
            exit_after_signal(e.code)
        signum = stop.signum
        if signum and not isinstance(e, SystemExit):  # e.g. a SIGTERM to the process group ended Ray too
            print(f"stopped by {signal.Signals(signum).name}; the iteration in progress failed with it "
                  f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); last checkpoint: "
                  f"{_latest(checkpointer)}", file=sys.stderr, flush=True)
            exit_after_signal(128 + signum)
        raise
    if export_dir:
        summary["export"] = str(algo.export_policy(export_dir))
        log(f"exported policy (transformers / vLLM loadable): {summary['export']}")
    summary["run_dir"] = str(record.dir)
    curves = _plot(record, log)
    if curves:
        summary["curves"] = str(curves)
    record.write_summary(summary)
    trackers.finish(ok=stop.signum is None)
    print("SUMMARY " + json.dumps(summary), file=sys.stdout, flush=True)
    _stop(algo, stop)
    record.release()
    checkpointer.release()
    if stop.signum is not None:
        where = f"; checkpoint: {summary['checkpoint']}" if checkpoint_dir else " (no --checkpoint-dir: nothing saved)"
        print(f"stopped by {signal.Signals(stop.signum).name} after {summary['iterations']} iterations{where}",
              file=sys.stderr, flush=True)
        exit_after_signal(128 + stop.signum)
    return summary


def _build(config, resume: str | None, log):
    if resume:
        from rllib_rpp import ReinforcePP

        log(f"resuming from {resume} ...")
        return ReinforcePP.from_checkpoint(resume)
    est = config.memory_estimate()
    if est is not None:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in est.gib().items() if k != "total")
        log(f"learner memory estimate: at most {est.total / (1 << 30):.2f} GiB per learner ({parts} GiB; activations "
            f"for full micro-batches of {config.max_tokens_per_microbatch} tokens)")
    log("building the algorithm (a built-in model is built and cached on its first use) ...")
    return config.build_algo()


def _stop(algo, stop: StopRequest) -> None:
    """algo.stop(); after a signal, waited for 10 s at most: a SIGTERM to the process group may have
    ended the Ray head, and stopping its actors would wait 60 s for it (the process exits next)."""
    if stop.signum is None:
        algo.stop()
    elif not within(algo.stop, 10.0):
        print("(Ray did not answer the stop within 10 s: its head went with the signal)", file=sys.stderr, flush=True)


def _latest(checkpointer: Checkpointer) -> str:
    latest = checkpointer.root / LATEST if checkpointer.root else None
    return str(checkpointer.root / latest.read_text().strip()) if latest and latest.is_file() else "none"


def _plot(record: RunRecord, log) -> Path | None:
    try:
        path = record.plot()
    except Exception as e:  # a picture is never worth losing the run's summary or checkpoint
        log(f"could not draw {record.dir / 'curves.png'}: {type(e).__name__}: {e}")
        return None
    log(f"curves: {path}")
    return path


def _train(algo, config, console, record, trackers, checkpointer, stop, *, train_s, start_it, time_budget_s,
           iterations, eval_every_s, resumed) -> dict:
    evals = []
    can_eval = config.greedy_eval_prompts is not None

    def evaluate():
        if not can_eval:
            return
        res = algo.evaluate_greedy()
        evals.append({"train_s": round(train_s, 1), **res})
        per_task = task_fields(res.get("tasks"))
        record.add("eval", iteration=algo.iteration, train_s=round(train_s, 2), reward=res["reward_mean"],
                   **({"tasks": per_task} if per_task else {}))
        trackers.log(flatten_metrics({"greedy_eval": res}), step=algo.iteration)
        when = "at resume" if resumed and len(evals) == 1 else f"after {train_s:6.1f} s of training"
        console.event(f"[eval] {when}: held-out greedy reward {res['reward_mean']:.3f} on {res['num_prompts']} prompts"
                      + task_note(per_task, minimum=2))

    def save():
        algo.run_info["train_s"] = train_s
        path = checkpointer.save(algo)
        console.event(f"checkpoint: {path}")
        return path

    evaluate()
    session_s, it, completions, last_eval, result = 0.0, 0, 0, train_s, {}
    while ((iterations is None or it < iterations) and (time_budget_s is None or session_s < time_budget_s)
           and stop.signum is None):
        t = time.time()
        result = algo.train()
        dt = time.time() - t
        train_s, session_s, it = train_s + dt, session_s + dt, it + 1
        # (no learner results when no iteration has made an update yet, `reinforce_pp.no_update`)
        runners, learner = result["env_runners"], result.get("learners", {}).get("default_policy", {})
        sampled = runners.get("num_env_steps_sampled", 0)
        completions += sampled
        reward, kl = runners["episode_return_mean"], learner.get("kl_ref_per_token", 0.0)
        per_task = task_fields(runners.get("tasks"), result.get("reinforce_pp", {}).get("curriculum"))
        record.add("train", iteration=algo.iteration, train_s=round(train_s, 2), reward=reward,
                   kl_per_token=kl, response_length=runners.get("response_length_mean"),
                   completions_per_s=sampled / dt, clip_fraction=learner.get("clip_fraction"),
                   **({"tasks": per_task} if per_task else {}))
        trackers.log({**flatten_metrics(result), "perf/completions_per_s": completions / session_s,
                      "perf/train_seconds": train_s}, step=algo.iteration)
        left = time_left(session_s, time_budget_s, it, iterations)
        console.status(status_line(algo.iteration, train_s, reward, kl, completions / session_s, left)
                       + task_note(per_task, minimum=2))
        if checkpointer.due(algo.iteration) and stop.signum is None:
            save()
        if train_s - last_eval >= eval_every_s and stop.signum is None:
            evaluate()
            last_eval = train_s
    if stop.signum is None and it and (not evals or evals[-1]["train_s"] != round(train_s, 1)):
        evaluate()
    console.close()
    summary = {
        "iterations": it,
        "first_iteration": start_it + 1 if it else None,
        "last_iteration": algo.iteration,
        "train_seconds": round(session_s, 1),
        "total_train_seconds": round(train_s, 1),
        "completions_per_s": round(completions / max(session_s, 1e-9), 1),
        "last_result_reward_mean": result.get("env_runners", {}).get("episode_return_mean"),
    }
    if evals:
        trained = evals[1:]  # evaluations after some training (none if stopped early)
        summary.update(eval_before=evals[0]["reward_mean"], evals=[(e["train_s"], round(e["reward_mean"], 4))
                                                                    for e in evals])
        if trained:
            summary.update(eval_after=trained[-1]["reward_mean"],
                           eval_last_two_mean=sum(e["reward_mean"] for e in trained[-2:]) / len(trained[-2:]))
            summary["gain_points"] = round(100 * (summary["eval_last_two_mean"] - summary["eval_before"]), 1)
    if checkpointer.root is not None:
        summary["checkpoint"] = save()
    if "eval_after" in summary:
        before = "at resume" if resumed else "before"
        console.event(f"held-out greedy reward: {summary['eval_before']:.3f} {before} -> {summary['eval_after']:.3f} "
                      f"after ({summary['gain_points']:+.1f} points, mean of the last two evaluations)")
    elif evals:
        console.event(f"held-out greedy reward: {summary['eval_before']:.3f} before; no evaluation after training "
                      f"(stopped before one)")
    return summary
