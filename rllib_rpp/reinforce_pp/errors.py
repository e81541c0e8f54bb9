"""Errors the algorithm raises across its modules, and how errors raised in env runners reach it."""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from ray.exceptions import RayTaskError

from envs.reward_guard import RewardFunctionError

# Errors in the user's input or code (a reward function, prompts, options): restarting the runner
# cannot fix them, so they go to the driver as themselves. Anything else (a dead process, a CUDA
# error) still counts as a runner failure, which RLlib may restart.
USER_ERRORS = (RewardFunctionError, ValueError, TypeError, LookupError)


class LearnersTimedOut(TimeoutError):
    """Some learner did not answer a bounded call: it is stuck, and anything sent to it queues."""


@dataclass
class RaisedInRunner:
    """An error in the user's input or code, returned by an env runner instead of raised."""

    error: BaseException
    runner: int
    traceback: str

    @classmethod
    def of(cls, error: BaseException, runner: int) -> RaisedInRunner:
        text = "".join(traceback.format_exception(error))
        while isinstance(error, RayTaskError) and isinstance(error.cause, BaseException):  # from a reward worker
            error = error.cause
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:  # noqa: BLE001 - an exception that cannot travel goes as its text
            error = RuntimeError(f"{type(error).__name__}: {error}")
        return cls(error, runner, text)

    def reraise(self):
        if self.error.__traceback__ is None:  # it travelled: the runner's traceback goes with it
            self.error.add_note(f"(raised in env runner {self.runner}; its traceback follows)\n{self.traceback}")
        raise self.error


def returning_user_errors(fn: Callable) -> Callable:
    """`fn(runner)` that returns a user error as a RaisedInRunner: RLlib would take a raising
    runner for a dead one (with restart_failed_env_runners, the default, it restarts it and the
    error is only in the worker's log; the driver learns at best that no runner is sampling)."""

    def call(runner):
        try:
            return fn(runner)
        except USER_ERRORS as e:
            return RaisedInRunner.of(e, getattr(runner, "worker_index", 0))

    return call


def raise_user_errors(results: list) -> list:
    """The runners' results, after raising the first user error among them on the driver."""
    for r in results:
        if isinstance(r, RaisedInRunner):
            r.reraise()
    return results
