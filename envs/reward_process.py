"""A rule reward function in a killable process of its own (`IsolatedReward`). No Ray in here.

The process is a fresh interpreter running `envs.reward_child`, started with `subprocess`, not
with multiprocessing's spawn, which would import the user's `__main__` again in it (a script
without an `if __name__ == "__main__":` guard would run a second time, side effects and all,
and its child die before serving). A socket pair carries the calls. The child's stdout is the
parent's; its stderr is forwarded to the parent's line by line (a reward function's prints and
warnings stay visible) and its last lines are kept to say why it died.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable

STARTUP_TIMEOUT_S = 120.0


class RewardTimeout(TimeoutError):
    """A reward call did not return within its timeout."""


class RewardUnavailable(RuntimeError):
    """The reward could not be asked at all: its process could not start or load the function, or
    a reward server is unreachable, unavailable (HTTP 502/503/504) or silent past the timeout
    (`timed_out`). No sample is to blame, so the whole batch fails at once (no bisection)."""

    def __init__(self, message: str, *, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


class RewardProcessDied(RuntimeError):
    """An isolated reward function's process exited or was killed (its status and stderr said)."""


_CHILD = "import sys; sys.path.insert(0, {root!r}); from envs.reward_child import main; main()"
_TAIL_LINES = 20  # of a dead process's stderr, quoted in the error


class _StderrTail:
    """Forwards a child's stderr to ours as it comes (a reward function's prints and warnings stay
    visible) and keeps its last lines, to say why the process died."""

    def __init__(self, stream):
        self.lines: deque[str] = deque(maxlen=_TAIL_LINES)
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True, name="reward-stderr")
        self._thread.start()

    def _pump(self, stream) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace")
                self.lines.append(line.rstrip("\n"))
                try:
                    sys.stderr.write(line)
                    sys.stderr.flush()
                except (OSError, ValueError, AttributeError):  # our stderr is closed or None: keep the tail only
                    pass

    def text(self, wait_s: float = 2.0) -> str:
        self._thread.join(wait_s)  # the rest of a dead process's output
        return "\n".join(self.lines)


class IsolatedReward:
    """`fn` in a killable child process (see the module docstring). Call with a `timeout_s`: a
    call past it kills the process and raises RewardTimeout; the next call starts a fresh one."""

    def __init__(self, fn: Callable, name: str):
        import cloudpickle

        self.__name__, self._payload = name, cloudpickle.dumps(fn)
        self._proc = self._conn = self._stderr = None

    def _start(self) -> None:
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with theirs:
            # -u: the function's prints reach the console as they are made, not at the process's exit.
            self._proc = subprocess.Popen(
                [sys.executable, "-u", "-c", _CHILD.format(root=root), str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._conn, self._stderr = Connection(ours.detach()), _StderrTail(self._proc.stderr)
        try:
            self._conn.send((list(sys.path), self._payload))
            # Starting Python and loading the function is not the call: it has its own bound.
            ready = self._conn.poll(STARTUP_TIMEOUT_S)
            status, value = self._conn.recv() if ready else (None, None)
        except (EOFError, OSError):
            raise RewardUnavailable(self._death("while starting")) from None
        if status is None:
            self.close()
            raise RewardUnavailable(f"reward function {self.__name__!r}: its process did not start within "
                                    f"{STARTUP_TIMEOUT_S:g} s")
        if status != "ready":
            self.close()
            raise RewardUnavailable(f"reward function {self.__name__!r}: its process could not load it: {value}")

    def _death(self, when: str) -> str:
        """Why the process is gone: its exit status or signal, and the end of its stderr."""
        proc, name = self._proc, self.__name__
        try:
            code = proc.wait(5)
        except subprocess.TimeoutExpired:  # its socket closed but it lives on: it cannot serve
            proc.kill()
            code = proc.wait()
        tail = self._stderr.text()
        self.close()
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in _SIGNALS
               else f"exited with status {code}")
        said = f"; the end of its stderr:\n{tail}" if tail.strip() else " (it wrote nothing to stderr)"
        return f"reward function {name!r}: its process {how} {when}{said}"

    def __call__(self, *, timeout_s: float, **kwargs) -> list:
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                self.close()
            self._start()
        try:
            self._conn.send(kwargs)
            answered = self._conn.poll(timeout_s)
            if answered:
                status, value = self._conn.recv()
        except (EOFError, OSError):  # the process died (e.g. a segfault in native code, an OOM kill)
            raise RewardProcessDied(self._death("during a call")) from None
        if not answered:
            self.close()  # killed: a stuck call never comes back
            raise RewardTimeout(f"reward function {self.__name__!r} did not return within {timeout_s:g} s")
        if status == "error":
            raise RuntimeError(value)
        return value

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:  # unkillable (D state): the kernel reaps it later
                pass
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown: the child dies with us anyway
            pass


_SIGNALS = {s.value for s in signal.Signals}
