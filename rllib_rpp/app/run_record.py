"""A run directory: what a `rllib-rpp train` run leaves to look at and compare. No Ray.

    RUN_DIR/metrics.jsonl   one record per iteration ({"kind": "train", ...}) and per held-out
                            evaluation ({"kind": "eval", ...}), appended as the run goes
    RUN_DIR/summary.json    the closing summary (also printed as `SUMMARY {...}`)
    RUN_DIR/config.yaml     the resolved config (valid input for `--config`)
    RUN_DIR/curves.png      reward, held-out evaluation, KL, response length and completions/s
                            against training time; written at the end and on an interrupt
    RUN_DIR/tasks.png       a run whose prompts have tasks (a task mixture): accuracy (training
                            and held-out), response length and curriculum level per task

Records of such a run carry `tasks`: {task: {"reward", "accuracy", "response_length", "level"}}.

`rllib-rpp plot RUN_DIR [RUN_DIR ...]` overlays several runs (seeds, options) in one picture.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CURVES = "curves.png"
TASKS = "tasks.png"
CONFIG = "config.yaml"

# (panel title, record kind, field) for each panel of curves.png.
PANELS = (
    ("training reward (mean)", "train", "reward"),
    ("held-out greedy reward", "eval", "reward"),
    ("KL to the reference, per token", "train", "kl_per_token"),
    ("response length (tokens)", "train", "response_length"),
    ("completions / s", "train", "completions_per_s"),
)


def make_writable_dir(path: str | Path) -> Path:
    """Create the directory `path` and prove that a file can be written in it (raises OSError): output
    directories are checked before training, not after it."""
    path = Path(path).expanduser().absolute()
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write-test-{os.getpid()}"
    probe.write_text("")
    probe.unlink()
    return path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


OWNER = ".owner"  # the pid of the run writing in a directory (run or checkpoint directory)


def claim(directory: Path, what: str) -> None:
    """Mark `directory` as this process's (its OWNER file, created atomically), or refuse it if a
    live process holds it: two runs at once would interleave their records or checkpoints. A file
    left by a run that is gone (killed) is taken over. (Pids are this machine's: a directory shared
    by several machines is not guarded.)"""
    from rllib_rpp.checkpoints import _alive

    path = directory / OWNER
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise ValueError(f"{what} {directory} is in use by another run (pid {pid}): give another one, or "
                                 f"let that run end first") from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return
    raise ValueError(f"{what} {directory}: could not claim it ({path} keeps coming back)")


def release(directory: Path) -> None:
    """Remove this process's OWNER file from `directory` (another run's stays)."""
    path = directory / OWNER
    try:
        if int(path.read_text().strip() or 0) == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


class RunRecord:
    """Appends a run's records to RUN_DIR/metrics.jsonl. `resume_at`: on `--resume`, records past
    the restored iteration (written after that checkpoint) are dropped, so the file tells one story.
    The directory is claimed (`claim`) while the run writes in it. `unique`: a default name,
    suffixed -2, -3, ... when another run (started in the same second) holds it."""

    def __init__(self, run_dir, resume_at: int | None = None, unique: bool = False):
        base = Path(run_dir).absolute()
        for n in range(1, 100 if unique else 2):
            self.dir = base if n == 1 else base.with_name(f"{base.name}-{n}")
            self.created = not self.dir.exists()  # made by this run: `discard_if_empty` may remove it
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ValueError(f"cannot write to {self.dir}: {e.strerror or e}") from None
            self.path = self.dir / METRICS
            try:
                if resume_at is None and self.path.exists():
                    raise ValueError(f"run directory {self.dir} already holds a run ({METRICS}): give another "
                                     f"--run-dir, or --resume its checkpoint to continue it")
                claim(self.dir, "run directory")
                break
            except ValueError:
                if not unique or n == 99:
                    raise
        if resume_at is not None and self.path.exists():
            kept = [r for r in read_records(self.dir) if r.get("iteration", 0) <= resume_at]
            _write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def release(self) -> None:
        release(self.dir)

    def discard_if_empty(self) -> None:
        """Release the directory, and remove it if this run made it and nothing was written in it
        (a run that failed before it started leaves no empty run directory behind)."""
        self.release()
        if self.created:
            try:
                self.dir.rmdir()  # only an empty directory
            except OSError:
                pass

    def add(self, kind: str, **fields) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"kind": kind, **fields}) + "\n")

    def write_summary(self, summary: dict) -> Path:
        path = self.dir / SUMMARY
        _write_atomic(path, json.dumps(summary, indent=1) + "\n")
        return path

    def write_config(self, sections: dict) -> Path:
        import yaml

        path = self.dir / CONFIG
        _write_atomic(path, yaml.safe_dump(sections, sort_keys=False))
        return path

    def plot(self) -> Path:
        """curves.png (and tasks.png for a run with tasks); returns curves.png's path."""
        path = plot_runs([self.dir], self.dir / CURVES)
        plot_tasks(self.dir, self.dir / TASKS)
        return path


def read_records(run_dir, warn=None) -> list[dict]:
    """A run directory's records. A line that is not a record is skipped and reported through
    `warn` (default: a line on stderr) with the file and line number: a torn last line is a run
    killed (or still writing) mid-line, anything else a damaged file."""
    warn = warn or _warn
    path = Path(run_dir) / METRICS
    if not path.exists():
        if (Path(run_dir) / CONFIG).exists():
            raise FileNotFoundError(f"{run_dir} has no records yet: no {METRICS} (its run has not finished an "
                                    f"iteration)")
        raise FileNotFoundError(f"{run_dir} is not a run directory: no {METRICS} in it")
    records, lines = [], path.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("kind"), str):
            records.append(record)
        elif n == len(lines) and record is None:
            warn(f"{path}:{n}: the last line is cut short (the run was killed, or is writing it): skipped")
        elif line.strip():
            warn(f"{path}:{n}: not a record ({line[:80]!r}): skipped")
    return records


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def running_mean(values, window: int) -> list[float]:
    """Mean of the last `window` values at each point (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_runs(run_dirs, out, labels=None) -> Path:
    """Overlay the runs' curves (one colour per run) in a 2x3 grid, saved to `out` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    labels = labels or [Path(d).absolute().name for d in run_dirs]
    for i, (run_dir, label) in enumerate(zip(run_dirs, labels)):
        records = read_records(run_dir)
        color = f"C{i % 10}"
        for ax, (_, kind, field) in zip(axes.flat, PANELS):
            points = [(r["train_s"], r[field]) for r in records  # (a record without the numbers is left out)
                      if r["kind"] == kind and _number(r.get(field)) and _number(r.get("train_s"))]
            if not points:
                continue
            xs, ys = zip(*points)
            if kind == "eval":
                ax.plot(xs, ys, color=color, label=label, marker="o", markersize=4, linewidth=1.5)
            else:  # per-iteration values are noisy: faint raw values under a running mean
                ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
                ax.plot(xs, running_mean(ys, max(1, len(ys) // 40)), color=color, label=label, linewidth=1.5)
    for ax, (title, _, _) in zip(axes.flat, PANELS):
        ax.set_title(title)
        ax.set_xlabel("training time (s)")
        ax.grid(alpha=0.3)
    legend = axes.flat[-1]
    legend.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    if not handles:
        handles, names = axes.flat[1].get_legend_handles_labels()
    legend.legend(handles, names, loc="center", title="runs", frameon=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return out


# (panel title, record kind, field) for each panel of tasks.png: one line per task.
TASK_PANELS = (
    ("training accuracy per task", "train", "accuracy"),
    ("held-out greedy accuracy per task", "eval", "accuracy"),
    ("response length per task (tokens)", "train", "response_length"),
    ("curriculum level per task", "train", "level"),
)


def plot_tasks(run_dir, out) -> Path | None:
    """tasks.png of one run: a line per task in each of TASK_PANELS; None (nothing written) for a
    run whose records have no tasks."""
    records = [r for r in read_records(run_dir) if isinstance(r.get("tasks"), dict) and _number(r.get("train_s"))]
    names = list(dict.fromkeys(t for r in records for t in r["tasks"]))
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    for ax, (title, kind, field) in zip(axes.flat, TASK_PANELS):
        for i, name in enumerate(names):
            points = [(r["train_s"], r["tasks"][name][field]) for r in records
                      if r["kind"] == kind and _number(r["tasks"].get(name, {}).get(field))]
            if points:
                xs, ys = zip(*points)
                smooth = kind == "train" and field != "level"
                ax.plot(xs, running_mean(ys, max(1, len(ys) // 40)) if smooth else ys, color=f"C{i % 10}",
                        label=name, marker="o" if kind == "eval" else None, markersize=4, linewidth=1.5)
        ax.set_title(title)
        ax.set_xlabel("training time (s)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(title="tasks", frameon=False)
    out = Path(out)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return out
