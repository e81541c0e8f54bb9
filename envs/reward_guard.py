"""Reward calls that cannot stall or end a run: a timeout on every call, and what a failing
sample gets instead of a reward. No Ray in here.

- `IsolatedReward`: a rule function run in a child process of its own (spawned, the function sent
  with cloudpickle). A call past the timeout kills the process (a stuck sympy cannot be
  interrupted in a thread); the next call starts a fresh one.
- `RemoteReward`: a reward server at an http(s) URL. Protocol: POST JSON
  `{"prompts": [...], "completions": [...], <each prompt column>: [...]}` -> `{"rewards": [float |
  null, ...]}` (one per completion; null = does not apply). One kept-alive connection, retries
  with backoff on connection errors and 5xx answers, all within the call's timeout.
- `guarded_call`: one reward function over a batch under `timeout_s`; when the batch call times
  out or raises, the culprits are found by bisecting the batch (each part under the same
  timeout), so only they get the error policy (`on_error`: "raise" | "skip" | a number).
"""

from __future__ import annotations

import http.client
import json
import math
import multiprocessing
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

ERROR_POLICIES = ("raise", "skip")
STARTUP_TIMEOUT_S = 120.0


class RewardFunctionError(RuntimeError):
    """A reward function raised, or returned something that is not one finite float per sample."""


class RewardTimeout(TimeoutError):
    """A reward call did not return within its timeout."""


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


def _serve(conn, payload: bytes) -> None:
    """The child process: load the function, then answer calls until the pipe closes. On Linux it
    dies with its parent (a killed Ray worker leaves no stuck reward call behind)."""
    import cloudpickle

    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    try:
        fn = cloudpickle.loads(payload)
    except Exception as e:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            kwargs = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", fn(**kwargs)))
        except Exception as e:  # noqa: BLE001 - sent back and raised in the parent
            conn.send(("error", f"{type(e).__name__}: {e}"))


class IsolatedReward:
    """`fn` in a killable child process (see the module docstring). Call with a `timeout_s`."""

    def __init__(self, fn: Callable, name: str):
        import cloudpickle

        self.__name__, self._payload = name, cloudpickle.dumps(fn)
        self._proc = self._conn = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self._payload), daemon=True,
                                 name=f"reward:{self.__name__}")
        self._proc.start()
        child.close()
        # Starting a Python process and loading the function is not the call: it has its own bound.
        if not self._conn.poll(STARTUP_TIMEOUT_S):
            self.close()
            raise RuntimeError(f"reward function {self.__name__!r}: its process did not start within "
                               f"{STARTUP_TIMEOUT_S:g} s")
        status, value = self._conn.recv()
        if status != "ready":
            raise RuntimeError(f"reward function {self.__name__!r}: its process could not load it: {value}")

    def __call__(self, *, timeout_s: float, **kwargs) -> list:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send(kwargs)
        if not self._conn.poll(timeout_s):
            self.close()  # killed: a stuck call never comes back
            raise RewardTimeout(f"reward function {self.__name__!r} did not return within {timeout_s:g} s")
        try:
            status, value = self._conn.recv()
        except EOFError as e:  # the process died (e.g. a segfault in native code)
            self.close()
            raise RuntimeError(f"reward function {self.__name__!r}: its process died") from e
        if status == "error":
            raise RuntimeError(value)
        return value

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(5)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown: the child dies with us anyway
            pass


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
        body = json.dumps({"prompts": list(prompts), "completions": list(completions),
                           **{k: list(v) for k, v in columns.items() if k != "completion_ids" and v is not None}})
        path = self._parts.path or "/"
        deadline, attempt, last = time.monotonic() + timeout_s, 0, None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RewardTimeout(f"reward server {self.url} did not answer within {timeout_s:g} s ({last})")
            try:
                conn = self._connection(left)
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                if response.status >= 500:
                    raise ConnectionError(f"HTTP {response.status}")
                break
            except TimeoutError as e:
                self.close()
                raise RewardTimeout(f"reward server {self.url} did not answer within {timeout_s:g} s") from e
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                self.close()  # a fresh connection for the retry
                last, attempt = f"{type(e).__name__}: {e}", attempt + 1
                if attempt > self.retries:
                    raise RuntimeError(f"reward server {self.url} failed {attempt} times: {last}") from e
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


def takes_timeout(fn) -> bool:
    return isinstance(fn, (IsolatedReward, RemoteReward))


def guarded_call(fn, kwargs: dict, n: int, *, timeout_s: float | None, check: Callable[..., list],
                 stats: GuardStats, stop_at_first: bool = False) -> tuple[list, dict[int, str]]:
    """`fn(**kwargs)` over a batch of `n`, its output checked by `check(out, samples)` (one
    float/None per sample index in `samples`; a malformed output raises at once: a bug, not a
    failing sample). On a timeout or an error the culprits are found by bisection: the failed
    batch is split in halves and each half called again, down to single samples, so one culprit
    among n costs about log2(n) + 2 calls, and a sample that was scored in a call that passed is
    never scored again (a reward with side effects, such as a paid scoring service, repeats none).
    Returns the values (None where a sample failed alone) and {failing sample: why}. A batch
    failure that no sample reproduces alone raises. `stop_at_first`: return at the first failing
    sample (the caller raises on it, so the samples after it need not be scored)."""
    extra = {"timeout_s": timeout_s} if takes_timeout(fn) and timeout_s else {}
    values: list = [None] * n
    failures: dict[int, str] = {}

    def attempt(samples: list[int]) -> str | None:
        """Score `samples` in one call: None when it passed (values stored), else why it failed."""
        part = kwargs if len(samples) == n else {k: ([v[i] for i in samples] if isinstance(v, list) else v)
                                                 for k, v in kwargs.items()}
        try:
            out = fn(**part, **extra)
        except RewardTimeout as e:
            stats.timeouts += 1
            return str(e)
        except Exception as e:  # noqa: BLE001 - the culprits are searched for below
            stats.errors += 1
            return f"{type(e).__name__}: {e}"
        for i, v in zip(samples, check(out, samples)):
            values[i] = v
        return None

    def bisect(samples: list[int], why: str | None) -> None:
        """`samples` failed together (`why`), or must hold a failure (`why` None: its sibling
        half passed, so the parent's failure is in here, unless it needs the whole batch)."""
        if len(samples) == 1:
            why = why or attempt(samples)
            if why is not None:
                failures[samples[0]] = why
            return
        half = len(samples) // 2
        left, right = samples[:half], samples[half:]
        left_why = attempt(left)
        if left_why is not None:
            bisect(left, left_why)
            if stop_at_first and failures:
                return
            right_why = attempt(right)  # the left half failed: the right one is unknown
            if right_why is not None:
                bisect(right, right_why)
        else:
            bisect(right, None)

    batch_error = attempt(list(range(n)))
    if batch_error is None:
        return values, {}
    bisect(list(range(n)), batch_error)
    if not failures:
        raise RewardFunctionError(f"reward function {getattr(fn, '__name__', fn)!r} failed on the batch of {n} "
                                  f"({batch_error}), but no sample fails alone")
    return values, failures
