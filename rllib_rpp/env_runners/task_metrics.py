"""Per-task metrics of a batch (a task mixture's, or any prompts with a `task` column): reward,
accuracy (the share of samples whose reward reaches the task's `correct_at`) and response length.
Pure numpy: the env runner logs them under `tasks/<task>/`, evaluations return them under `tasks`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def correct_at(env) -> dict[str, float]:
    """Each task's `correct_at` (a mixture's tasks; 1.0 for any other task)."""
    return {t.name: t.correct_at for t in env.tasks} if getattr(env, "tasks", None) else {}


def task_summary(tasks: Sequence, rewards, lengths, thresholds: Mapping[str, float]) -> dict[str, dict]:
    """{task: {"reward_mean", "accuracy", "response_length_mean", "num_samples"}} over the samples that
    have a task; skipped samples (NaN reward) count in the length, not in reward or accuracy."""
    rewards, lengths = np.asarray(rewards, np.float64), np.asarray(lengths, np.float64)
    out = {}
    for task in dict.fromkeys(t for t in tasks if t is not None):
        idx = np.array([i for i, t in enumerate(tasks) if t == task])
        r = rewards[idx][np.isfinite(rewards[idx])]
        hit = r >= thresholds.get(task, 1.0) - 1e-9
        out[str(task)] = {"reward_mean": float(r.mean()) if r.size else float("nan"),
                          "accuracy": float(hit.mean()) if r.size else float("nan"),
                          "response_length_mean": float(lengths[idx].mean()), "num_samples": int(idx.size)}
    return out


def log_task_metrics(metrics, summary: Mapping[str, Mapping]) -> None:
    """Into an RLlib MetricsLogger: means per iteration (like `episode_return_mean`), counts summed."""
    for task, stats in summary.items():
        for key, value in stats.items():
            if key == "num_samples":
                metrics.log_value(("tasks", task, key), value, reduce="sum")
            elif np.isfinite(value):
                metrics.log_value(("tasks", task, key), value, reduce="mean")
