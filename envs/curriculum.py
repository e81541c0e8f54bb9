"""Curricula: a difficulty schedule per task of a mixture (`envs.tasks.mixture`). No Ray in here.

A task's `curriculum`:

    {"levels": [{}, {"config": {"max_digits": 2}}, {"config": {"max_digits": 3}}],  # overrides of its spec
     "promote_at": 0.8, "window": 64,      # raise the level when the running accuracy reaches 0.8 ...
     "schedule": [50, 120]}                # ... and/or after these iterations (level i + 1 after schedule[i])

Each level is a dict merged (recursively) into the task's prompt-source spec, so any task source
whose spec has knobs works (reasoning-gym's `config`, an OpenEnv env's `env_kwargs` or
`reset_kwargs`); level 0 is usually `{}`, the spec as given. Every level's prompts are built when the
env is, so a bad level is refused before training. `promote_at`: the level goes up when at least
`window` samples were scored at the current level and the fraction of the last `window` that were
correct (reward >= the task's `correct_at`) is >= `promote_at`; the window then starts afresh.
`schedule`: the number of iterations after which each next level starts, at the latest (with
`promote_at` too, whichever comes first). Levels only go up. The state (levels and windows) is saved in checkpoints
and restored exactly.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

KEYS = ("levels", "promote_at", "window", "schedule")


def merge(base, over: Mapping):
    """`base` with `over` merged in: dicts recursively, anything else replaced."""
    if not isinstance(base, Mapping) or not isinstance(over, Mapping):
        return over
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(base.get(k), Mapping) and isinstance(v, Mapping) else v
    return out


@dataclass(frozen=True)
class TaskCurriculum:
    levels: tuple[Mapping, ...]
    promote_at: float | None = None
    window: int = 64
    schedule: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, task: str, spec: Mapping, prompts) -> TaskCurriculum:
        """The checked curriculum of `task`; errors name the task, the key and what was expected."""
        where = f"task {task!r}: curriculum"
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where} {spec!r} is invalid: expected a dict with 'levels' and 'promote_at' and/or "
                             f"'schedule'")
        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {list(KEYS)}")
        if not isinstance(prompts, Mapping) or "source" not in prompts:
            raise ValueError(f"{where} needs a task source with knobs (a dict spec such as {{'source': "
                             f"'reasoning_gym', 'config': ...}}) to merge its levels into; got prompts={prompts!r}")
        levels = spec.get("levels")
        if (not isinstance(levels, Sequence) or isinstance(levels, (str, bytes)) or len(levels) < 2
                or not all(isinstance(lvl, Mapping) for lvl in levels)):
            raise ValueError(f"{where}: levels={levels!r} is invalid: expected a list of at least 2 dicts (each "
                             f"merged into the task's spec; the first usually {{}})")
        promote_at, schedule, window = spec.get("promote_at"), spec.get("schedule"), spec.get("window", 64)
        if promote_at is None and schedule is None:
            raise ValueError(f"{where}: give promote_at (an accuracy in (0, 1]) and/or schedule (iterations)")
        if promote_at is not None and (isinstance(promote_at, bool) or not isinstance(promote_at, numbers.Real)
                                       or not 0 < promote_at <= 1):
            raise ValueError(f"{where}: promote_at={promote_at!r} is invalid: expected an accuracy in (0, 1]")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"{where}: window={window!r} is invalid: expected a positive number of samples")
        if schedule is not None:
            ok = (isinstance(schedule, Sequence) and len(schedule) == len(levels) - 1
                  and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in schedule)
                  and all(a < b for a, b in zip(schedule, schedule[1:])))
            if not ok:
                raise ValueError(f"{where}: schedule={schedule!r} is invalid: expected {len(levels) - 1} increasing "
                                 f"iterations >= 1 (when each level after the first starts)")
            schedule = tuple(schedule)
        return cls(tuple(levels), None if promote_at is None else float(promote_at), window, schedule)


class Curriculum:
    """The levels of a mixture's tasks with curricula, moved on by accuracy and/or by iteration."""

    def __init__(self, curricula: Mapping[str, TaskCurriculum], correct_at: Mapping[str, float]):
        self.curricula, self.correct_at = dict(curricula), dict(correct_at)
        self.levels = {t: 0 for t in self.curricula}
        self.recent = {t: deque(maxlen=c.window) for t, c in self.curricula.items()}
        self.seen = {t: 0 for t in self.curricula}  # samples scored at the current level

    @classmethod
    def of(cls, tasks) -> Curriculum | None:
        """The curriculum of a mixture's parsed tasks (None when no task has one)."""
        curricula = {t.name: t.schedule for t in tasks if t.curriculum}
        return cls(curricula, {t.name: t.correct_at for t in tasks}) if curricula else None

    def observe(self, task: str, rewards: Sequence[float]) -> None:
        """Samples of `task` scored at its current level (NaN: skipped, not counted)."""
        if task in self.recent:
            hits = [float(r >= self.correct_at[task]) for r in rewards if not math.isnan(r)]
            self.recent[task].extend(hits)
            self.seen[task] += len(hits)

    def accuracy(self, task: str) -> float:
        window = self.recent[task]
        return sum(window) / len(window) if window else math.nan

    def update(self, iteration: int) -> dict[str, int]:
        """Levels after `iteration` iterations; returns the tasks whose level went up."""
        changed = {}
        for task, c in self.curricula.items():
            level = self.levels[task]
            target = level
            if c.schedule is not None:
                target = max(target, sum(iteration >= s for s in c.schedule))
            if (c.promote_at is not None and self.seen[task] >= c.window
                    and self.accuracy(task) >= c.promote_at - 1e-12):
                target = max(target, level + 1)
            target = min(target, len(c.levels) - 1)
            if target != level:
                self.levels[task], changed[task] = target, target
                self.recent[task].clear()
                self.seen[task] = 0
        return changed

    def get_state(self) -> dict:
        return {"levels": dict(self.levels), "recent": {t: list(w) for t, w in self.recent.items()},
                "seen": dict(self.seen)}

    def set_state(self, state: Mapping) -> None:
        unknown = sorted(set(state["levels"]) - set(self.curricula))
        if unknown:
            raise ValueError(f"the checkpoint's curriculum has task(s) {unknown} that this config's mixture does not "
                             f"have a curriculum for (it has {sorted(self.curricula)})")
        self.levels.update({t: int(v) for t, v in state["levels"].items()})
        for t, values in state["recent"].items():
            self.recent[t] = deque(values, maxlen=self.curricula[t].window)
        self.seen.update({t: int(v) for t, v in state["seen"].items()})

    def metrics(self) -> dict:
        return {t: {"level": self.levels[t], "accuracy": self.accuracy(t)} for t in self.curricula}
