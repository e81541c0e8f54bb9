"""The process an isolated reward function runs in (`envs.reward_guard.IsolatedReward`).

Started as `python -c "... envs.reward_child.main()" FD PARENT_PID`, never through
multiprocessing: a spawned child would import the user's `__main__` again (running a script
without an `if __name__ == "__main__":` guard a second time, side effects and all). This module
imports only the standard library and cloudpickle; the function arrives pickled (functions of
`__main__` by value), with the parent's `sys.path` so that functions pickled by reference import
here as they do there.

Protocol over the socket FD (a `multiprocessing.connection.Connection`): the parent sends
`(sys.path, payload)`; the child answers `("ready", None)` or `("error", why)`, then for each
kwargs dict it receives answers `("ok", values)` or `("error", why)`, until the socket closes.
"""

from __future__ import annotations

import os
import sys


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL when the parent goes (a killed Ray worker leaves no stuck reward call behind).
    If the parent is already gone (it died before the prctl), exit now."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os._exit(1)


def main() -> None:
    from multiprocessing.connection import Connection

    fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    _die_with_parent(parent_pid)
    conn = Connection(fd)
    try:
        path, payload = conn.recv()
    except EOFError:  # the parent closed before sending the function: nothing to do
        return
    sys.path[:] = path
    try:
        import cloudpickle

        fn = cloudpickle.loads(payload)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
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
