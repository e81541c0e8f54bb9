"""The CLI loses nothing: output directories checked before training, periodic checkpoints,
SIGTERM finishes the iteration, saves and exits non-zero, --resume continues the run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rllib_rpp import ReinforcePP
from rllib_rpp.checkpoints import LATEST

ROOT = Path(__file__).resolve().parents[1]
RESUME = [sys.executable, "-m", "rllib_rpp", "train", "tiny-arith", "--eval-every", "1e9", "--log-every", "0"]
TRAIN = [*RESUME, "--num-prompts", "8"]


def test_unwritable_output_directory_fails_before_training(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    t = time.time()
    proc = subprocess.run([*TRAIN, "--iterations", "1", "--checkpoint-dir", str(blocked / "ckpt")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and f"cannot write to {blocked / 'ckpt'}" in proc.stderr
    assert "iter" not in proc.stdout and time.time() - t < 60


def test_sigterm_saves_and_exits_nonzero_and_resume_continues(tmp_path):
    ckpt = tmp_path / "run"
    proc = subprocess.Popen([*TRAIN, "--time-budget", "600", "--checkpoint-dir", str(ckpt), "--checkpoint-every", "2",
                             "--keep-checkpoints", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    lines = []
    for line in proc.stdout:  # wait for the 5th iteration (periodic checkpoints at 2 and 4)
        lines.append(line)
        if line.startswith("iter    5"):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "stopped by SIGTERM after" in err and "checkpoint:" in err
    assert " before; no evaluation after training" in out and "after (" not in out  # not "before" as "after"
    kept = sorted(p.name for p in ckpt.glob("iter_*"))
    assert len(kept) == 2 and kept[-1] == (ckpt / LATEST).read_text()  # the last 2 kept; latest = the final save
    done = int(kept[-1].split("_")[1])
    assert done >= 5
    proc = subprocess.run([*RESUME, "--iterations", "1", "--resume", str(ckpt), "--checkpoint-dir", str(ckpt)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stdout and (ckpt / LATEST).read_text() == f"iter_{done + 1:06d}"


def _start_and_signal(tmp_path, times: int):
    """Train in a process group of its own with a Ray cluster of its own, then SIGTERM the whole
    group (as `timeout` and batch schedulers do: the Ray head dies too) `times` times once the 3rd
    iteration is done."""
    argv = [*TRAIN, "--time-budget", "600", "--checkpoint-dir", str(tmp_path / "ckpt"), "--checkpoint-every", "1",
            "--run-dir", str(tmp_path / "run")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True, env={**os.environ, "RAY_ADDRESS": "local"})
    for line in proc.stdout:
        if line.startswith("iter    3"):
            break
    t = time.time()
    for _ in range(times):
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, time.time() - t, out, err


def test_sigterm_to_the_process_group_exits_143_promptly_and_a_second_one_without_a_traceback(tmp_path):
    rc, seconds, out, err = _start_and_signal(tmp_path / "once", 1)
    assert rc == 128 + signal.SIGTERM and seconds < 30, (rc, seconds, err[-3000:])  # not Ray's 60 s wait, rc 1
    assert "stopped by SIGTERM" in err and (tmp_path / "once" / "run" / "curves.png").exists()
    rc, seconds, out, err = _start_and_signal(tmp_path / "twice", 2)
    assert rc == 128 + signal.SIGTERM and seconds < 30, (rc, seconds, err[-3000:])
    assert "Traceback" not in err and ("SIGTERM again: stopping now" in err or "failed with it" in err)
    # The iteration in progress may fail with Ray gone: then the last periodic checkpoint stands
    # (iteration 2's at least: "iter 3" is printed after it was saved).
    algo = ReinforcePP.from_checkpoint(str(tmp_path / "once" / "ckpt"))
    assert algo.iteration >= 2
    algo.stop()


def test_a_full_disk_mid_run_stops_the_run_with_the_error_and_its_last_checkpoint_loads(tmp_path, monkeypatch,
                                                                                       ray_local):
    """metrics.jsonl cannot be appended (ENOSPC) at iteration 2: the run stops with that error (the
    CLI prints it as `rllib-rpp: error: [Errno 28] No space left on device: ...`), and the checkpoint
    of iteration 1 restores."""
    import errno

    import pytest

    from rllib_rpp.app import driver
    from rllib_rpp.app.console import Console
    from rllib_rpp.app.presets import tiny_arith
    from rllib_rpp.app.run_record import RunRecord

    real_add, calls = RunRecord.add, []

    def add(self, kind, **fields):  # the evaluation before training, iteration 1, then a full disk
        calls.append(kind)
        if len(calls) >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        real_add(self, kind, **fields)

    monkeypatch.setattr(RunRecord, "add", add)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # the run installs its own
    try:
        with pytest.raises(OSError, match=r"No space left on device: '.*metrics.jsonl'"):
            driver.run(tiny_arith(num_prompts=8), iterations=5, eval_every_s=1e9, checkpoint_dir=str(tmp_path / "ckpt"),
                       checkpoint_every=1, run_dir=str(tmp_path / "run"), name="tiny-arith",
                       console=Console(mode="quiet"))
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    algo = ReinforcePP.from_checkpoint(str(tmp_path / "ckpt"))
    assert algo.iteration == 1
    algo.stop()


def test_after_a_signal_the_run_leaves_without_the_interpreters_exit_hooks_even_when_ray_shut_down(monkeypatch):
    """A quick ray.shutdown() used to be followed by a plain SystemExit, whose exit hooks could
    wait 60 s for a Ray head the signal had ended ("Failed to connect to GCS", issue 30): the run
    now always leaves with os._exit(128 + signal), everything it keeps being written before."""
    import pytest

    from rllib_rpp.app import run_control

    class Left(Exception):
        pass

    def leave(code):
        raise Left(code)

    monkeypatch.setattr(run_control.ray, "shutdown", lambda: None)
    monkeypatch.setattr(run_control.logging, "shutdown", lambda: None)  # (pytest's handlers stay open)
    monkeypatch.setattr(run_control.os, "_exit", leave)
    with pytest.raises(Left) as left:
        run_control.exit_after_signal(143)
    assert left.value.args == (143,)
