"""The reward step: reward a whole batch of completions with weighted reward functions.

A reward function has TRL's signature, `fn(prompts, completions, **columns) -> list[float | None]`:
it also receives `completion_ids` and every extra column of the prompt source (`answer`, ...)
as keyword arguments, so TRL reward functions work unchanged. `None` means "does not apply to
this sample" and is left out of the weighted sum (as in TRL). A reward model is one more
function: give its id or path instead of a callable.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from envs.reward_guard import (
    GuardStats,
    IsolatedReward,
    RemoteReward,
    RewardFunctionError,
    check_on_error,
    guarded_call,
)
from envs.tasks import reasoning_gym
from envs.tasks.openenv_adapter import OpenEnvReward
from rpp_hub.registry import Registry, is_import_path


@dataclass
class RewardResult:
    rewards: np.ndarray  # [N] weighted sum, float64 (NaN where skipped)
    components: dict[str, np.ndarray]  # per function, NaN where it returned None (or failed)
    skipped: np.ndarray | None = None  # [N] bool: failed and left out of the loss (on_error="skip")
    stats: GuardStats | None = None  # timeouts, errors, skipped and replaced samples


def _text(completion) -> str:
    """Completion text, for plain and conversational ([{"role", "content"}]) completions."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion)
    return completion


def exact_match(completions, answer, **kwargs) -> list[float | None]:
    """1.0 when the completion, stripped, equals the reference answer; None (does not apply)
    where there is no answer, so a missing answer can never be matched."""
    return [None if a is None else float(_text(c).strip() == str(a).strip()) for c, a in zip(completions, answer)]


def math_verify_reward(completions, answer, **kwargs) -> list[float | None]:
    """1.0 when math-verify finds the completion's final answer equal to the reference; None
    (does not apply) where there is no answer."""
    from math_verify import parse, verify

    # math-verify's timeouts use signals, which only work in the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    out = []
    for c, a in zip(completions, answer):
        if a is None:
            out.append(None)
            continue
        a = str(a)
        gold = parse(a if ("$" in a or "\\boxed" in a) else f"${a}$", parsing_timeout=timeout)
        pred = parse(_text(c), parsing_timeout=timeout)
        out.append(float(bool(gold) and bool(pred) and verify(gold, pred, timeout_seconds=timeout)))
    return out


def format_reward(pattern: str, name: str | None = None) -> Callable:
    """Reward function: 1.0 when the whole stripped completion matches the regex `pattern`."""
    regex = re.compile(pattern, re.DOTALL)

    def fn(completions, **kwargs):
        return [float(regex.fullmatch(_text(c).strip()) is not None) for c in completions]

    fn.__name__ = name or f"format({pattern})"
    return fn


def length_reward(max_chars: int, name: str | None = None) -> Callable:
    """Reward function: 0 up to `max_chars` characters, then -(excess / max_chars), floored at -1."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")

    def fn(completions, **kwargs):
        return [-min(1.0, max(0, len(_text(c)) - max_chars) / max_chars) for c in completions]

    fn.__name__ = name or f"length(<={max_chars})"
    return fn


# Rule functions that cannot hang (string compares, simple regexes): run in-process even with a
# timeout. Every other rule function (math_verify's sympy included) runs in a killable process.
SAFE_IN_PROCESS = {"exact_match", "digits_format", "boxed_format"}

BUILTIN_REWARDS = Registry("reward function", callable, kind_name="callable", entries={
    "exact_match": exact_match,
    "math_verify": math_verify_reward,
    "digits_format": format_reward(r"-?\d+", "digits_format"),
    "boxed_format": format_reward(r".*\\boxed\{.+\}.*", "boxed_format"),
    # reasoning-gym's own verifiers on rows of its task source (they read the `task_entry` column)
    "reasoning_gym": reasoning_gym.reasoning_gym_reward,
    "reasoning_gym_partial": reasoning_gym.reasoning_gym_partial_reward,
    # an OpenEnv environment's own reward for the step (rows of its task source; a class: one per reward step)
    "openenv": OpenEnvReward,
})
# How a reward model is served (`reward_backend`).
REWARD_BACKENDS = Registry("reward backend", callable, kind_name="reward-model class", paths=False, entries={
    "transformers": "envs.reward_model:RewardModelReward",
    "vllm": "envs.reward_model:VLLMRewardModelReward",  # vLLM's pooling runner
})


def resolve_reward_func(spec, *, device: str = "cpu", batch_size: int = 64, dtype: str | None = None,
                        backend: str = "transformers") -> tuple[str, Callable]:
    """(name, callable) for a callable, a built-in name, "module:function", a reward server URL,
    or a reward model (loaded on its first call, in `dtype`: default bf16 on CUDA, fp32 else)."""
    if callable(spec):
        return getattr(spec, "__name__", type(spec).__name__), spec
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"a reward function must be a callable or a name, got {spec!r}")
    if spec in BUILTIN_REWARDS:
        fn = BUILTIN_REWARDS.resolve(spec)
        return spec, fn() if isinstance(fn, type) else fn
    if spec.startswith(("http://", "https://")):
        return spec, RemoteReward(spec)
    if is_import_path(spec):
        return spec.split(":")[1], BUILTIN_REWARDS.resolve(spec)
    if not os.path.isdir(spec):
        close = difflib.get_close_matches(spec.lower().replace("-", "_"), BUILTIN_REWARDS, n=1)
        from rpp_hub.models import in_local_hub_cache

        if close and not in_local_hub_cache(spec):
            raise ValueError(
                f"unknown reward function {spec!r}: did you mean the built-in {close[0]!r}? "
                f"(built-ins: {', '.join(BUILTIN_REWARDS)}; otherwise give a callable, \"module:function\", "
                f"or a reward model's directory or id)"
            )
    try:
        cls = REWARD_BACKENDS.resolve(backend)
    except ValueError:
        raise ValueError(f"reward_backend={backend!r} is invalid: expected one of {tuple(REWARD_BACKENDS)}") from None
    rm_reward = cls(spec, device=device, batch_size=batch_size, dtype=dtype)
    return rm_reward.__name__, rm_reward


def columns_read(fn) -> tuple[str, ...]:
    """Prompt columns a reward function names as required parameters (e.g. `answer` for
    `exact_match`); those read through `**kwargs` cannot be known and are not included."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(q.name for q in params if q.kind in kinds and q.default is inspect.Parameter.empty
                 and q.name not in _NOT_COLUMNS)


_NOT_COLUMNS = ("prompts", "completions", "completion_ids")


class RewardStep:
    """Weighted sum of reward functions over a batch, with every output checked.

    Missing cells are errors, never None: a reward function that names a column as a parameter
    without a default (`exact_match(completions, answer, ...)` reads `answer`) must get a value for
    every sample. A column that is absent, or a None in it (a prompt row without that cell: HF
    datasets fill those with None), raises ValueError naming the sample and the column, before any
    reward function runs; `check_columns` does the same for prompt rows up front (the text env calls
    it on every prompt source, naming the row). Columns read only through `**kwargs` cannot be
    checked and are passed as they are (None where a row lacks them). Independently of that,
    `exact_match` and `math_verify` return None (does not apply) for a None answer, never a match.
    """

    def __init__(self, reward_funcs, reward_weights: Sequence[float] | None = None, *,
                 device: str = "cpu", batch_size: int = 64, dtype: str | None = None,
                 timeout_s: float | None = None, on_error="raise", backend: str = "transformers"):
        specs = reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        if not specs:
            raise ValueError("at least one reward function (or reward model) is needed")
        if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ValueError(f"reward_timeout_s={timeout_s!r} is invalid: expected a number of seconds > 0 (or None)")
        check_on_error(on_error)
        self.timeout_s, self.on_error = timeout_s, on_error
        self.funcs = [resolve_reward_func(s, device=device, batch_size=batch_size, dtype=dtype, backend=backend)
                      for s in specs]
        self.columns_read_by = [columns_read(fn) for _, fn in self.funcs]  # before any wrapping
        if timeout_s is not None:  # rule functions where a stuck call can be killed
            self.funcs = [(n, IsolatedReward(f, n) if _isolatable(n, f) else f) for n, f in self.funcs]
        names = [n for n, _ in self.funcs]
        self.names = [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]
        weights = [1.0] * len(specs) if reward_weights is None else list(reward_weights)
        if len(weights) != len(specs):
            raise ValueError(f"reward_weights has {len(weights)} entries for {len(specs)} reward functions")
        if not all(isinstance(w, numbers.Real) and math.isfinite(w) for w in weights):
            raise ValueError(f"reward_weights must be finite numbers, got {weights}")
        self.weights = np.asarray(weights, dtype=np.float64)
        self.columns_read = dict(zip(self.names, self.columns_read_by))

    def check_columns(self, rows: Sequence[Mapping], row_ids: Sequence[int] | None = None) -> None:
        """Refuse the first prompt row without a value (missing or None) in a column that a reward
        function reads, naming the row (its id in `row_ids`, else its position) and the column."""
        for name, cols in self.columns_read.items():
            for j, row in enumerate(rows):
                for col in cols:
                    if row.get(col) is None:
                        state = "None in" if col in row else "no"
                        raise ValueError(
                            f"prompt row {j if row_ids is None else row_ids[j]} has {state} {col!r} column, "
                            f"which reward function {name!r} reads (the row's columns: {sorted(row)}); "
                            f"every prompt needs a value in {col!r}"
                        )

    def __call__(self, prompts: Sequence, completions: Sequence, completion_ids=None, **columns) -> RewardResult:
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} completions")
        for key, col in columns.items():
            if len(col) != n:
                raise ValueError(f"column {key!r} has {len(col)} values for {n} completions")
        for name, cols in self.columns_read.items():
            for col in cols:
                if col not in columns:
                    raise ValueError(f"reward function {name!r} reads the column {col!r}, which the prompts "
                                     f"do not have (their columns: {sorted(columns)})")
                missing = [i for i, v in enumerate(columns[col]) if v is None]
                if missing:
                    raise ValueError(f"sample {missing[0]} has no value (None) in the column {col!r}, which "
                                     f"reward function {name!r} reads ({len(missing)} of {n} samples lack it)")
        kwargs = dict(prompts=list(prompts), completions=list(completions), completion_ids=completion_ids, **columns)
        stats = GuardStats()
        table, failed = np.full((len(self.funcs), n), np.nan), {}
        for k, ((_, fn), name) in enumerate(zip(self.funcs, self.names)):
            values, failures = guarded_call(fn, kwargs, n, timeout_s=self.timeout_s, stats=stats,
                                            check=partial(_checked, name, completions),
                                            stop_at_first=self.on_error == "raise")
            for i, why in failures.items():
                if self.on_error == "raise":
                    raise RewardFunctionError(f"reward function {name!r} raised {why} — on sample {i} (prompt "
                                              f"{_short(prompts[i])}, completion {_short(completions[i])})")
                failed.setdefault(i, why)
            table[k] = [np.nan if v is None else v for v in values]
        none_scored = np.isnan(table).all(axis=0)
        none_scored[list(failed)] = False  # failed samples get the error policy instead
        unscored = np.flatnonzero(none_scored)
        if unscored.size:
            i = int(unscored[0])
            raise RewardFunctionError(
                f"no reward function scored sample {i} (all returned None); completion: {_short(completions[i])}"
            )
        rewards = np.nansum(table * self.weights[:, None], axis=0)
        skipped = np.zeros(n, dtype=bool)
        if failed:
            idx = list(failed)
            if self.on_error == "skip":
                rewards[idx], skipped[idx] = np.nan, True
                stats.skipped = len(idx)
            else:  # a number: the reward a failing sample gets
                rewards[idx] = float(self.on_error)
                stats.replaced = len(idx)
            stats.culprits = sorted(idx)
        return RewardResult(rewards, dict(zip(self.names, table)), skipped, stats)

    def process_ids(self) -> list[int]:
        """The running processes of isolated rule functions."""
        return [fn.pid for _, fn in self.funcs if getattr(fn, "pid", None)]

    def close(self) -> None:
        """Stop the processes of isolated rule functions and close reward-server connections."""
        for _, fn in self.funcs:
            if hasattr(fn, "close"):
                fn.close()


def _isolatable(name: str, fn) -> bool:
    """A rule function that may hang: not a built-in known to be safe, not a reward model or server, not
    one that enforces the timeout itself (`guards_itself`, e.g. OpenEnv's reward)."""
    from envs.reward_model import RewardModelReward

    return not (name in SAFE_IN_PROCESS or isinstance(fn, (RewardModelReward, RemoteReward))
                or getattr(fn, "guards_itself", False))


def _checked(name: str, completions: Sequence, out, samples: list[int]) -> list:
    """A reward function's output for `samples`: one finite float or None per sample, else a
    RewardFunctionError naming the function and the sample (a malformed output is a bug)."""
    n = len(samples)
    if isinstance(out, np.ndarray):
        out = out.tolist()
    if not isinstance(out, Sequence) or isinstance(out, (str, bytes)):
        raise RewardFunctionError(f"reward function {name!r} returned a {type(out).__name__}; "
                                  f"expected a list of {n} floats (or None)")
    if len(out) != n:
        raise RewardFunctionError(f"reward function {name!r} returned {len(out)} values for {n} completions")
    values = []
    for i, v in zip(samples, out):
        if v is None:
            values.append(None)
        elif isinstance(v, (numbers.Real, np.bool_)):
            if not math.isfinite(float(v)):
                raise RewardFunctionError(f"reward function {name!r} returned {v} for sample {i} "
                                          f"(completion {_short(completions[i])}); rewards must be finite")
            values.append(float(v))
        else:
            raise RewardFunctionError(f"reward function {name!r} returned {v!r} ({type(v).__name__}) for sample "
                                      f"{i}; expected a float or None")
    return values


def _short(x, n: int = 60) -> str:
    s = repr(_text(x) if isinstance(x, list) and x and isinstance(x[0], dict) else x)
    return s if len(s) <= n else s[: n - 3] + "..."
