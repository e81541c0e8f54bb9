"""Reward calls that cannot stall or end a run: a timeout on every call, and what a failing
sample gets instead of a reward. No Ray in here.

- `IsolatedReward` (`envs.reward_process`): a rule function in a child process of its own (a
  fresh interpreter that never imports the user's `__main__`, the function sent with
  cloudpickle). A call past the timeout kills the process (a stuck sympy cannot be interrupted
  in a thread); the next call starts a fresh one. A process that dies says how (exit status or
  signal) and what it last wrote to stderr.
- `RemoteReward`: a reward server at an http(s) URL. Protocol: POST JSON
  `{"prompts": [...], "completions": [...], <each prompt column>: [...]}` -> `{"rewards": [float |
  null, ...]}` (one per completion; null = does not apply). One kept-alive connection, retries
  with backoff on connection errors and 5xx answers, all within the call's timeout. A server
  that cannot be reached, stays unavailable (502/503/504) or does not answer within the timeout
  fails the whole batch at once, in one timeout: no sample is to blame.
- `guarded_call`: one reward function over a batch under `timeout_s`; when the batch call times
  out or raises, the culprits are found by bisecting the batch (each part under the same
  timeout), so only they get the error policy (`on_error`: "raise" | "skip" | a number).
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from envs.reward_process import IsolatedReward, RewardProcessDied, RewardTimeout, RewardUnavailable

__all__ = ["GuardStats", "IsolatedReward", "RemoteReward", "RewardFunctionError", "RewardProcessDied",
           "RewardTimeout", "RewardUnavailable", "check_on_error", "guarded_call", "is_error_policy"]

ERROR_POLICIES = ("raise", "skip")


class RewardFunctionError(RuntimeError):
    """A reward function raised, or returned something that is not one finite float per sample."""


@dataclass
class GuardStats:
    """What the guard did in one reward step (the env runner logs these every iteration)."""

    timeouts: int = 0  # calls (batch or single sample) that ran past the timeout
    errors: int = 0  # calls that raised
    skipped: int = 0  # samples left out of the loss (on_error="skip")
    replaced: int = 0  # samples given on_error's number as their reward
    culprits: list[int] = field(default_factory=list)  # the failing samples' indices

    COUNTS = ("timeouts", "errors", "skipped", "replaced")


def is_error_policy(on_error) -> bool:
    """"raise", "skip", or a finite number (the reward a failing sample gets)."""
    if isinstance(on_error, str):
        return on_error in ERROR_POLICIES
    return not isinstance(on_error, bool) and isinstance(on_error, (int, float)) and math.isfinite(on_error)


def check_on_error(on_error) -> None:
    if not is_error_policy(on_error):
        raise ValueError(f"on_reward_error={on_error!r} is invalid: expected 'raise', 'skip' or a finite number "
                         f"(the reward a failing sample gets)")


class RemoteReward:
    """A reward server (see the module docstring for the protocol)."""

    def __init__(self, url: str, *, retries: int = 3, backoff_s: float = 0.2):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"reward server URL {url!r} is invalid: expected http(s)://host[:port]/path")
        self.url, self.__name__ = url, f"remote({url})"
        self._parts, self.retries, self.backoff_s = parts, retries, backoff_s
        self._conn = None

    def _connection(self, timeout_s: float):
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self._parts.hostname, self._parts.port, timeout=timeout_s)
        self._conn.timeout = timeout_s
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout_s)
        return self._conn

    def __call__(self, prompts, completions, *, timeout_s: float = 60.0, **columns) -> list:
        """The server's rewards, within `timeout_s` all retries included. A server that cannot be
        reached or does not answer in time raises RewardUnavailable (the whole batch's fault)."""
        body = json.dumps({"prompts": list(prompts), "completions": list(completions),
                           **{k: list(v) for k, v in columns.items() if k != "completion_ids" and v is not None}})
        path = self._parts.path or "/"
        t0 = time.monotonic()
        deadline, attempt, last = t0 + timeout_s, 0, None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RewardUnavailable(f"reward server {self.url} did not answer within {timeout_s:g} s ({last})",
                                        timed_out=True)
            try:
                conn = self._connection(left)
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                if response.status >= 500:
                    raise ConnectionError(f"HTTP {response.status}")
                break
            except TimeoutError:
                self.close()
                raise RewardUnavailable(f"reward server {self.url} did not answer within {timeout_s:g} s",
                                        timed_out=True) from None
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                self.close()  # a fresh connection for the retry
                last, attempt = f"{type(e).__name__}: {e}", attempt + 1
                if attempt > self.retries:
                    tried = f"{attempt} attempts over {time.monotonic() - t0:.1f} s"
                    if str(e) in _UNAVAILABLE or not str(e).startswith("HTTP "):
                        raise RewardUnavailable(f"reward server {self.url} is unreachable ({last}; {tried})") from None
                    raise RuntimeError(f"reward server {self.url} answered {e} ({tried})") from None
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), max(0.0, deadline - time.monotonic())))
        if response.status != 200:
            raise RuntimeError(f"reward server {self.url} answered HTTP {response.status}: {data[:200]!r}")
        try:
            rewards = json.loads(data)["rewards"]
        except (ValueError, KeyError, TypeError) as e:
            raise RuntimeError(f"reward server {self.url} answered {data[:200]!r}; expected JSON "
                               f'{{"rewards": [float or null, ...]}}') from e
        return rewards

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_UNAVAILABLE = ("HTTP 502", "HTTP 503", "HTTP 504")  # a gateway or an overloaded server: no sample's doing


def takes_timeout(fn) -> bool:
    """Called with the call's `timeout_s`, which it enforces itself (a child process, a server's deadline)."""
    return isinstance(fn, (IsolatedReward, RemoteReward)) or getattr(fn, "guards_itself", False)


def guarded_call(fn, kwargs: dict, n: int, *, timeout_s: float | None, check: Callable[..., list],
                 stats: GuardStats, stop_at_first: bool = False) -> tuple[list, dict[int, str]]:
    """`fn(**kwargs)` over a batch of `n`, its output checked by `check(out, samples)` (one
    float/None per sample index in `samples`; a malformed output raises at once: a bug, not a
    failing sample). On a timeout or an error the culprits are found by bisection: the failed
    batch is split in halves and each half called again, down to single samples, so one culprit
    among n costs log2(n) + 2 calls (it is always in the right half) to 2·log2(n) + 1 (always in the
    left half: the right half is then called too), the first call included, and a sample that was
    scored in a call that passed is never scored again (a reward with side effects, such as a paid
    scoring service, repeats none).
    Returns the values (None where a sample failed alone) and {failing sample: why}. A batch
    failure that no sample reproduces alone raises, unless it was the process dying (an OOM kill,
    a signal from outside: every sample was then scored in the parts). `stop_at_first`: return at
    the first failing sample (the caller raises on it, so the samples after it need not be scored).

    A `RewardUnavailable` (a reward server unreachable or silent past the timeout) blames no sample:
    every sample not yet scored fails at once, without bisection (which would only repeat the
    timeout about log2(n) times); with `stop_at_first` it raises, naming the batch, not a sample."""
    extra = {"timeout_s": timeout_s} if takes_timeout(fn) and timeout_s else {}
    values: list = [None] * n
    scored: set[int] = set()
    failures: dict[int, str] = {}

    def attempt(samples: list[int]) -> Exception | None:
        """Score `samples` in one call: None when it passed (values stored), else what it raised."""
        part = kwargs if len(samples) == n else {k: ([v[i] for i in samples] if isinstance(v, list) else v)
                                                 for k, v in kwargs.items()}
        try:
            out = fn(**part, **extra)
        except RewardUnavailable as e:
            if e.timed_out:
                stats.timeouts += 1
            else:
                stats.errors += 1
            raise
        except RewardTimeout as e:
            stats.timeouts += 1
            return e
        except Exception as e:  # noqa: BLE001 - the culprits are searched for below
            stats.errors += 1
            return e
        for i, v in zip(samples, check(out, samples)):
            values[i] = v
        scored.update(samples)
        return None

    def bisect(samples: list[int], why: str | None) -> None:
        """`samples` failed together (`why`), or must hold a failure (`why` None: its sibling
        half passed, so the parent's failure is in here, unless it needs the whole batch)."""
        if len(samples) == 1:
            why = why or _why(attempt(samples))
            if why is not None:
                failures[samples[0]] = why
            return
        half = len(samples) // 2
        left, right = samples[:half], samples[half:]
        left_why = _why(attempt(left))
        if left_why is not None:
            bisect(left, left_why)
            if stop_at_first and failures:
                return
            right_why = _why(attempt(right))  # the left half failed: the right one is unknown
            if right_why is not None:
                bisect(right, right_why)
        else:
            bisect(right, None)

    name = getattr(fn, "__name__", fn)
    try:
        batch_error = attempt(list(range(n)))
        if batch_error is None:
            return values, {}
        bisect(list(range(n)), _why(batch_error))
    except RewardUnavailable as e:
        left = [i for i in range(n) if i not in scored and i not in failures]
        if stop_at_first:
            # (a RewardUnavailable names its function or server itself)
            raise RewardFunctionError(f"{e} — {len(left)} of the batch of {n} samples could not be scored") from None
        failures.update((i, str(e)) for i in left)
        return values, dict(sorted(failures.items()))
    if not failures:
        if isinstance(batch_error, RewardProcessDied):  # not the function's doing: the parts scored everything
            return values, {}
        raise RewardFunctionError(f"reward function {name!r} failed on the batch of {n} "
                                  f"({_why(batch_error)}), but no sample fails alone")
    return values, failures


def _why(error: Exception | None) -> str | None:
    if error is None:
        return None
    return str(error) if isinstance(error, RewardTimeout) else f"{type(error).__name__}: {error}"
