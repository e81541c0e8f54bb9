"""Task mixtures: several task sources in one run, drawn by weight, each prompt carrying its task.

A prompt source spec (wherever a prompt source is accepted):

    {"source": "mixture", "split": "train" | "eval", "levels": {task: level} | None, "tasks": [
        {"name": "sums", "prompts": {"source": "reasoning_gym", "dataset": "chain_sum", ...}, "weight": 2.0},
        {"name": "env", "prompts": {"source": "openenv", "env": "my_pkg:MyEnv"}, "weight": 1.0},
        {"name": "file", "prompts": "train.jsonl", "eval_prompts": "eval.jsonl", "weight": 1.0,
         "reward_funcs": ["exact_match"], "reward_weights": None, "correct_at": 1.0,
         "curriculum": None},
    ]}

Per task: `prompts`, any prompt source; `eval_prompts`, its held-out split (default: a task
source's own `split="eval"`; a task without either has no held-out evaluation); `weight` >= 0,
its share of the prompts drawn (exact over time, `TaskOrder`); `reward_funcs` / `reward_weights`,
the reward step of its prompts only (default: the task source's own reward, `reasoning_gym` or
`openenv`, else the env's `reward_funcs`); `correct_at`, the reward from which a sample counts
as correct in the accuracy metrics and the curriculum (default 1.0); `curriculum`, a difficulty
schedule over the task's knobs (`envs.curriculum`). Every row's `task` column is its task's name.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from envs.curriculum import TaskCurriculum, merge

SOURCE = "mixture"
DEFAULT_REWARDS = {"reasoning_gym": ["reasoning_gym"], "openenv": ["openenv"]}  # a task source's own verifier
_NAME = re.compile(r"[A-Za-z0-9_.:-]+")


@dataclass(frozen=True)
class Task:
    name: str
    prompts: Any
    eval_prompts: Any = None
    weight: float = 1.0
    reward_funcs: Any = None
    reward_weights: Sequence[float] | None = None
    correct_at: float = 1.0
    curriculum: Mapping | None = None

    def level_source(self, level: int, split: str = "train"):
        """The task's prompt source at curriculum `level` (0 without a curriculum); None: no held-out split."""
        source = self.prompts if split == "train" else self.eval_prompts
        if source is None and split == "eval":
            if not (isinstance(self.prompts, Mapping) and "source" in self.prompts):
                return None
            source = {**self.prompts, "split": "eval"}
        return merge(source, self.schedule.levels[level]) if self.schedule and level else source

    @property
    def schedule(self) -> TaskCurriculum | None:
        return TaskCurriculum.parse(self.name, self.curriculum, self.prompts) if self.curriculum else None

    @property
    def num_levels(self) -> int:
        return len(self.schedule.levels) if self.schedule else 1


def is_mixture(source) -> bool:
    return isinstance(source, Mapping) and source.get("source") == SOURCE


def parse_tasks(tasks) -> list[Task]:
    """The mixture's tasks, checked: names, weights, curricula; errors name the bad entry and value."""
    if not isinstance(tasks, Sequence) or isinstance(tasks, (str, bytes)) or not tasks:
        raise ValueError(f"a task mixture needs a non-empty list of tasks, got {tasks!r}")
    valid = [f.name for f in fields(Task)]
    out = []
    for i, entry in enumerate(tasks):
        if not isinstance(entry, Mapping):
            raise ValueError(f"task {i} of the mixture is {entry!r}: expected a dict with 'name' and 'prompts'")
        unknown = sorted(set(entry) - set(valid))
        if unknown:
            raise ValueError(f"task {i} of the mixture: unknown key(s) {unknown}; valid keys: {valid}")
        if "prompts" not in entry:
            raise ValueError(f"task {i} of the mixture has no 'prompts' (its keys: {sorted(entry)})")
        name = entry.get("name") or _default_name(entry["prompts"])
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"task {i} of the mixture: name={name!r} is invalid: expected letters, digits and "
                             f"_.:- (it names the task's metrics)")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"task {name!r}: weight={weight!r} is invalid: expected a finite number >= 0")
        correct = entry.get("correct_at", 1.0)
        if isinstance(correct, bool) or not isinstance(correct, numbers.Real) or not math.isfinite(correct):
            raise ValueError(f"task {name!r}: correct_at={correct!r} is invalid: expected a finite number")
        task = Task(**{**entry, "name": name, "weight": float(weight), "correct_at": float(correct)})
        task.schedule  # noqa: B018 - checks the curriculum now, naming the task
        out.append(task)
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be distinct, got {names}")
    if not sum(t.weight for t in out) > 0:
        raise ValueError(f"the mixture's weights {[t.weight for t in out]} are all 0: at least one must be > 0")
    return out


def _default_name(prompts) -> str | None:
    if isinstance(prompts, Mapping):
        return prompts.get("name") or prompts.get("dataset")
    if isinstance(prompts, str):
        return prompts.rsplit("/", 1)[-1].removesuffix(".jsonl")
    return None


def tasks_of(source) -> list[Task] | None:
    """The tasks of a mixture spec (None for any other prompt source)."""
    return parse_tasks(source.get("tasks")) if is_mixture(source) else None


def rows(*, tasks, split: str = "train", levels: Mapping[str, int] | None = None) -> list[dict]:
    """The rows of every task at its level (default 0), `task` set to its name (the task source entry point)."""
    from envs.prompts import load_prompt_rows

    if split not in ("train", "eval"):
        raise ValueError(f"task mixture: split={split!r} is invalid: expected 'train' or 'eval'")
    parsed, levels = parse_tasks(tasks), dict(levels or {})
    unknown = sorted(set(levels) - {t.name for t in parsed})
    if unknown:
        raise ValueError(f"task mixture: levels for unknown task(s) {unknown}; its tasks: {[t.name for t in parsed]}")
    out = []
    for task in parsed:
        level = levels.get(task.name, 0)
        if not isinstance(level, int) or not 0 <= level < task.num_levels:
            raise ValueError(f"task {task.name!r}: level {level!r} is invalid: expected 0..{task.num_levels - 1}")
        source = task.level_source(level, split)
        if source is not None:
            out += [{**row, "task": task.name} for row in load_prompt_rows(source)]
    if not out:
        raise ValueError(f"task mixture: no task has a {split} split (give tasks 'eval_prompts')")
    return out


def pools(tasks: Sequence[Task]) -> list[tuple[Task, int, list[dict]]]:
    """(task, level, rows) for every level of every task (all levels are loaded, and tokenised, once)."""
    from envs.prompts import load_prompt_rows

    return [(t, lvl, [{**r, "task": t.name} for r in load_prompt_rows(t.level_source(lvl))])
            for t in tasks for lvl in range(t.num_levels)]


def task_rewards(tasks: Sequence[Task]) -> dict[str, dict]:
    """{task: its reward step's options} for the tasks with their own rewards (or a source's own verifier)."""
    out = {}
    for t in tasks:
        source = t.prompts.get("source") if isinstance(t.prompts, Mapping) else None
        funcs = t.reward_funcs if t.reward_funcs is not None else DEFAULT_REWARDS.get(source)
        if funcs is not None:
            out[t.name] = {"reward_funcs": list(funcs) if isinstance(funcs, (list, tuple)) else [funcs],
                           "reward_weights": t.reward_weights}
    return out


def spec(tasks: Sequence[Mapping], split: str = "train") -> dict:
    """The mixture's prompt-source spec; `spec(tasks, "eval")` is its held-out twin."""
    return {"source": SOURCE, "split": split, "tasks": list(tasks)}


class TaskOrder:
    """Weighted draws over tasks: smooth weighted round-robin picks each prompt's task (deterministic,
    every task's share of the draws within one prompt of its weight at any point), and each task draws
    from its current level's prompts in their own seeded, sharded epoch order (`PromptOrder`). State:
    the levels, the round-robin credits and every order's (epoch, cursor): checkpoints restore it."""

    def __init__(self, pools: Sequence[tuple[str, int, range]], weights: Mapping[str, float], *, seed: int = 0,
                 shuffle: bool = True, shard_index: int = 0, num_shards: int = 1):
        from envs.prompts import PromptOrder

        self.names = list(weights)
        self.weights = np.array([weights[t] for t in self.names], np.float64)
        self.ranges = {(t, lvl): r for t, lvl, r in pools}
        self.orders = {key: PromptOrder(len(r), seed=seed + 7919 * k, shuffle=shuffle, shard_index=shard_index,
                                        num_shards=num_shards) for k, (key, r) in enumerate(self.ranges.items())}
        self.levels = {t: 0 for t in self.names}
        self.credit = np.zeros(len(self.names))

    def take(self, k: int) -> list[int]:
        picks = []
        for _ in range(k):
            self.credit += self.weights
            j = int(np.argmax(self.credit))
            self.credit[j] -= self.weights.sum()
            picks.append(j)
        out = []
        for j, name in enumerate(self.names):
            key = (name, self.levels[name])
            out += [self.ranges[key][i] for i in self.orders[key].take(picks.count(j))]
        return out

    def set_levels(self, levels: Mapping[str, int]) -> None:
        for name, level in levels.items():
            if (name, level) not in self.ranges:
                raise ValueError(f"task {name!r} has no level {level!r}")
            self.levels[name] = int(level)

    def reseed(self, seed: int) -> None:
        for k, order in enumerate(self.orders.values()):
            order.reseed(seed + 7919 * k)

    def get_state(self) -> dict:
        return {"levels": dict(self.levels), "credit": self.credit.tolist(),
                "orders": {f"{t}/{lvl}": o.get_state() for (t, lvl), o in self.orders.items()}}

    def set_state(self, state: Mapping) -> None:
        self.levels = {t: int(v) for t, v in state["levels"].items()}
        self.credit = np.array(state["credit"], np.float64)
        for (t, lvl), order in self.orders.items():
            order.set_state(state["orders"][f"{t}/{lvl}"])
