"""What keeps a `rllib-rpp train` run safe: the Ray connection, output directories checked before
training, the checkpoint directory's rules, and signals that stop cleanly."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import ray

from rllib_rpp.app.run_record import claim, make_writable_dir, release
from rllib_rpp.checkpoints import LATEST


def init_ray(log=print) -> None:
    """Attach to a running Ray cluster (RAY_ADDRESS, or one started with `ray start` on this node,
    e.g. under `ray job submit`) or start a local one with every core of this machine."""
    if ray.is_initialized():
        return
    quiet = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", **quiet)
        log(f"attached to the Ray cluster at {ray.get_runtime_context().gcs_address} "
            f"({ray.cluster_resources().get('CPU', 0):.0f} CPUs, {ray.cluster_resources().get('GPU', 0):.0f} GPUs)")
    except ConnectionError:
        if os.environ.get("RAY_ADDRESS"):
            raise
        # The local cluster's processes (children of this one: they inherit the signal mask) ignore a
        # SIGTERM sent to the whole process group, as `timeout` and batch schedulers send it: else the
        # raylet dies with it and Ray ends this process with status 1 before the iteration can finish
        # and save. This process still takes the signal (StopRequest) and shuts Ray down itself.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            ray.init(num_cpus=os.cpu_count(), **quiet)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


_ITER = re.compile(r"iter_(\d+)$")


class Checkpointer:
    """Checkpoints of a run in `root`: `iter_000042/` directories (each written atomically), the
    newest named in `root/latest` (what `--resume root` and `from_checkpoint(root)` restore), the
    last `keep` kept (0: all). `every`: iterations (int) or seconds ("300s"); None: only at the end.

    A directory that holds another run's checkpoints is refused unless this run resumes from it:
    a new run would overwrite that run's checkpoints of the same numbers and prune its own."""

    def __init__(self, root: str | None, every: int | str | None = None, keep: int = 3):
        self.root = Path(root).absolute() if root else None
        every_s = every[:-1] if isinstance(every, str) and every.endswith("s") else None
        try:
            self.every_s = float(every_s) if every_s is not None else None
            self.every_it = int(every) if every is not None and every_s is None else None
        except ValueError:
            self.every_s = self.every_it = -1
        if self.every_it is not None and self.every_it < 1 or self.every_s is not None and not self.every_s > 0:
            raise ValueError(f"--checkpoint-every {every!r} is invalid: expected a number of iterations >= 1 "
                             f"(e.g. 50) or seconds (e.g. '600s')")
        if not isinstance(keep, int) or keep < 0:
            raise ValueError(f"--keep-checkpoints {keep!r} is invalid: expected the number of checkpoints to keep "
                             f"(>= 1), or 0 to keep them all")
        self.keep, self.last_t = keep, time.time()

    def claim(self, resumed_from: str | None) -> None:
        """Refuse a directory holding another run's checkpoints (see the class docstring), or one
        that another live run is writing in (two runs at once, `run_record.claim`); else claim it."""
        if self.root is None:
            return
        self._refuse_other_runs(resumed_from)
        self.root.mkdir(parents=True, exist_ok=True)
        claim(self.root, "--checkpoint-dir")

    def release(self) -> None:
        if self.root is not None:
            release(self.root)

    def _refuse_other_runs(self, resumed_from: str | None) -> None:
        if not self.root.is_dir():
            return
        held = sorted(p.name for p in self.root.iterdir() if _ITER.match(p.name))
        if not held and not (self.root / LATEST).exists():
            return
        if resumed_from is not None:
            source = Path(resumed_from).absolute()
            if source == self.root or source.parent == self.root:
                return
        latest = (self.root / LATEST).read_text().strip() if (self.root / LATEST).is_file() else held[-1]
        raise ValueError(f"--checkpoint-dir {self.root} already holds another run's checkpoints (latest: {latest}): "
                         f"continue that run with --resume {self.root}, or give a new or empty directory")

    def due(self, iteration: int) -> bool:
        if self.root is None:
            return False
        if self.every_it is not None:
            return iteration % self.every_it == 0
        return self.every_s is not None and time.time() - self.last_t >= self.every_s

    def save(self, algo) -> str:
        path = algo.save_to_path(str(self.root / f"iter_{algo.iteration:06d}"))
        tmp = self.root / f".{LATEST}.tmp"
        tmp.write_text(Path(path).name)
        os.replace(tmp, self.root / LATEST)  # atomic: `latest` always names a complete checkpoint
        self.prune(algo.iteration)
        self.last_t = time.time()
        return path

    def prune(self, iteration: int) -> None:
        """Delete all but the newest `keep` checkpoints up to `iteration` (later ones belong to a
        future this run, resumed from earlier, has not reached yet); never the one `latest` names."""
        if not self.keep:
            return
        latest = (self.root / LATEST).read_text().strip()
        mine = sorted((int(m.group(1)), p) for p in self.root.iterdir()
                      if (m := _ITER.match(p.name)) and int(m.group(1)) <= iteration)
        for _, old in mine[: -self.keep]:
            if old.name != latest:
                shutil.rmtree(old, ignore_errors=True)


def check_writable(*dirs: str | None) -> None:
    """Fail before training, not after it, when an output directory cannot be written."""
    for d in filter(None, dirs):
        try:
            make_writable_dir(d)
        except OSError as e:
            raise SystemExit(f"cannot write to {Path(d).absolute()}: {e.strerror or e}") from e


def within(fn, wait_s: float) -> bool:
    """fn() on a daemon thread, waited for at most `wait_s` seconds; False if it is still running
    (a Ray call whose head is gone blocks for 60 s, then ends the process with status 1)."""
    done = threading.Thread(target=fn, daemon=True)
    done.start()
    done.join(wait_s)
    return not done.is_alive()


def exit_after_signal(code: int, wait_s: float = 5.0):
    """Exit with `code` (128 + the signal) once Ray is shut down or `wait_s` has passed, without
    the interpreter's own exit: a SIGTERM to the process group (`timeout`, schedulers) also ends
    the local Ray head, and Ray's exit hooks would wait 60 s for it and then exit with status 1.
    Everything the run keeps (checkpoint, summary, trackers) is written before this is called."""
    within(ray.shutdown, wait_s)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class StopRequest:
    """SIGINT/SIGTERM: finish the current iteration, save, export, then stop. A second signal stops
    at once, with the exit status of that signal (128 + its number), without a traceback; a save
    it interrupts leaves the previous checkpoint in place (`rllib_rpp.checkpoints`)."""

    def __init__(self):
        self.signum = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signum is not None:
            print(f"\n{signal.Signals(signum).name} again: stopping now", file=sys.stderr, flush=True)
            raise SystemExit(128 + signum)
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: finishing this iteration, then saving and stopping "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)
