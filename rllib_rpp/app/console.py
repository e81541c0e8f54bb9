"""A calm console for training: one live status line on a terminal, periodic plain lines otherwise.

- terminal (`stream.isatty()`): the status line is redrawn in place (`\\r` + erase line);
  events (evaluations, checkpoints, set-up messages) are printed above it and kept;
- not a terminal (CI logs, files, pipes): a plain status line every `every_s` seconds (and the
  first iteration), so a 5-minute run writes ~10 lines, not 1,000; every event line;
- quiet: nothing but what the caller prints itself (errors, the closing summary).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Mapping


def status_line(it: int, train_s: float, reward: float, kl: float, completions_per_s: float,
                left: str | None = None) -> str:
    """`iter 12 | 34.5 s | reward 0.812 | kl/token 0.0123 | 1234 completions/s | 4:25 left`."""
    parts = [f"iter {it:4d}", f"{train_s:6.1f} s", f"reward {reward:.3f}", f"kl/token {kl:.4f}",
             f"{completions_per_s:.0f} completions/s"]
    if left:
        parts.append(left)
    return " | ".join(parts)


def task_fields(tasks: Mapping | None, curriculum: Mapping | None = None) -> dict[str, dict]:
    """Per-task numbers for the run record and the console: {task: {reward, accuracy, response_length,
    level}} from the results' `tasks` (and the curriculum's levels)."""
    keys = {"reward_mean": "reward", "accuracy": "accuracy", "response_length_mean": "response_length"}
    out = {t: {short: v[k] for k, short in keys.items() if k in v} for t, v in (tasks or {}).items()}
    for t, c in (curriculum or {}).items():
        out.setdefault(t, {})["level"] = int(c["level"])
    return out


def task_note(fields: Mapping[str, Mapping], minimum: int = 1) -> str:
    """` | sums 0.81 (level 1), env 0.30`: accuracy per task (none for fewer than `minimum` tasks)."""
    parts = [f"{t} {f['accuracy']:.2f}" + (f" (level {f['level']})" if "level" in f else "")
             for t, f in fields.items() if "accuracy" in f]
    return " | " + ", ".join(parts) if len(parts) >= minimum else ""


def time_left(train_s: float, budget_s: float | None, it: int, iterations: int | None) -> str | None:
    """What is left of the budget: `38 iterations left` or `4:25 left` (seconds of training)."""
    if iterations is not None:
        return f"{max(0, iterations - it)} iterations left"
    if budget_s is not None:
        m, s = divmod(max(0, int(budget_s - train_s)), 60)
        return f"{m}:{s:02d} left"
    return None


class Console:
    """Progress for `rllib-rpp train`. `mode`: "auto" (terminal if the stream is one, else plain),
    "terminal", "plain" or "quiet". `every_s`: plain mode's interval (0: every status)."""

    def __init__(self, stream=None, *, mode: str = "auto", every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stdout
        if mode not in ("auto", "terminal", "plain", "quiet"):
            raise ValueError(f"console mode {mode!r} is invalid: expected auto, terminal, plain or quiet")
        if mode == "auto":
            mode = "terminal" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        if every_s < 0:
            raise ValueError(f"--log-every {every_s!r} is invalid: expected seconds >= 0 (0: every iteration)")
        self.mode, self.every_s, self.clock = mode, every_s, clock
        self._live = ""  # the status line on screen (terminal mode)
        self._last_t: float | None = None  # when plain mode last printed a status
        self._unprinted = ""  # plain mode: the latest status, if it was not printed (printed at close)

    def status(self, line: str) -> None:
        """The latest progress: redrawn in place, or printed if `every_s` has passed."""
        if self.mode == "terminal":
            width = shutil.get_terminal_size((120, 24)).columns
            self._live = line[: width - 1]
            self._write("\r\x1b[K" + self._live)
        elif self.mode == "plain":
            now = self.clock()
            if self._last_t is None or now - self._last_t >= self.every_s:
                self._last_t, self._unprinted = now, ""
                self._write(line + "\n")
            else:
                self._unprinted = line

    def event(self, line: str) -> None:
        """A line to keep (evaluation, checkpoint, set-up): above the live status line."""
        if self.mode == "terminal":
            self._write("\r\x1b[K" + line + "\n" + self._live)
        elif self.mode == "plain":
            self._write(line + "\n")

    def close(self) -> None:
        """Leave the last status on screen (terminal) or in the log (plain), then move below it."""
        if self.mode == "terminal" and self._live:
            self._write("\n")
            self._live = ""
        elif self.mode == "plain" and self._unprinted:
            self._write(self._unprinted + "\n")
            self._unprinted = ""

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
