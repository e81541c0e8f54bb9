"""Per-task reward steps: in a task mixture each sample is scored by its own task's reward
functions only (a reasoning-gym verifier never scores an OpenEnv episode, nor exact-match a
reasoning-gym answer). Same interface as `RewardStep`; samples are routed by their `task` column."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from envs.reward_guard import GuardStats
from envs.rewards import RewardResult, RewardStep


class TaskRewardStep:
    """`steps[task]` scores that task's samples; samples of any other task (or none) go to `default`,
    a RewardStep built on first need (a mixture whose every task has its own never builds it)."""

    def __init__(self, steps: Mapping[str, RewardStep], default: Callable[[], RewardStep]):
        self.steps, self._make_default, self._default = dict(steps), default, None

    def step_for(self, task) -> RewardStep:
        if task in self.steps:
            return self.steps[task]
        if self._default is None:
            self._default = self._make_default()
        return self._default

    def check_columns(self, rows: Sequence[Mapping], row_ids: Sequence[int] | None = None) -> None:
        ids = list(range(len(rows))) if row_ids is None else list(row_ids)
        for task, idx in _groups([r.get("task") for r in rows]).items():
            self.step_for(task).check_columns([rows[i] for i in idx], [ids[i] for i in idx])

    def __call__(self, prompts: Sequence, completions: Sequence, completion_ids=None, **columns) -> RewardResult:
        n = len(completions)
        tasks = columns.get("task") or [None] * n
        if len(tasks) != n:
            raise ValueError(f"column 'task' has {len(tasks)} values for {n} completions")
        groups = _groups(tasks)
        if len(groups) == 1:  # one task: no routing to do
            return self.step_for(tasks[0] if n else None)(prompts, completions, completion_ids, **columns)
        rewards, skipped, components, stats = np.full(n, np.nan), np.zeros(n, bool), {}, GuardStats()
        for task, idx in groups.items():
            part = self.step_for(task)([prompts[i] for i in idx], [completions[i] for i in idx],
                                       _pick(completion_ids, idx), **{k: _pick(v, idx) for k, v in columns.items()})
            rewards[idx] = part.rewards
            if part.skipped is not None:
                skipped[idx] = part.skipped
            for name, values in part.components.items():
                components.setdefault(name, np.full(n, np.nan))[idx] = values
            if part.stats is not None:
                for key in GuardStats.COUNTS:
                    setattr(stats, key, getattr(stats, key) + getattr(part.stats, key))
                stats.culprits += [idx[i] for i in part.stats.culprits]
        stats.culprits.sort()
        return RewardResult(rewards, components, skipped, stats)

    def _all(self) -> list[RewardStep]:
        return [*self.steps.values(), *([self._default] if self._default is not None else [])]

    def process_ids(self) -> list[int]:
        return [pid for step in self._all() for pid in step.process_ids()]

    def close(self) -> None:
        for step in self._all():
            step.close()


def _pick(values, idx: list[int]):
    return [values[i] for i in idx] if isinstance(values, (list, tuple)) else values


def _groups(tasks: Sequence) -> dict:
    """{task: [sample indices]} in order of first appearance."""
    out: dict = {}
    for i, t in enumerate(tasks):
        out.setdefault(t, []).append(i)
    return out
