"""The CLI's checkpoint directory holds one run: a new run never overwrites or prunes another run's
checkpoints, `latest` always names a checkpoint that exists, bad numbers are refused. No Ray."""

import os
from pathlib import Path

import pytest

from rllib_rpp.app.cli import main
from rllib_rpp.app.run_control import Checkpointer
from rllib_rpp.checkpoints import LATEST


class FakeAlgo:
    """What Checkpointer uses of an algorithm: its iteration and save_to_path."""

    def __init__(self, iteration=0):
        self.iteration = iteration

    def save_to_path(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "state").write_text(str(self.iteration))
        return path


def _run(root, iterations, keep, start=0, resumed_from=None):
    ckpt = Checkpointer(str(root), every=1, keep=keep)
    ckpt.claim(resumed_from)
    algo = FakeAlgo(start)
    for _ in range(iterations):
        algo.iteration += 1
        ckpt.save(algo)
    return ckpt


def _held(root):
    return sorted(p.name for p in Path(root).glob("iter_*"))


def test_a_new_run_into_a_directory_holding_another_run_is_refused_and_loses_nothing(tmp_path):
    _run(tmp_path, 2, keep=1)
    assert _held(tmp_path) == ["iter_000002"] and (tmp_path / LATEST).read_text() == "iter_000002"
    with pytest.raises(ValueError, match=r"already holds another run's checkpoints \(latest: iter_000002\): "
                                         r"continue that run with --resume"):
        _run(tmp_path, 1, keep=1)
    assert _held(tmp_path) == ["iter_000002"] and (tmp_path / "iter_000002" / "state").read_text() == "2"


def test_resuming_into_the_same_directory_continues_and_latest_is_never_pruned(tmp_path):
    _run(tmp_path, 3, keep=2)
    assert _held(tmp_path) == ["iter_000002", "iter_000003"]
    _run(tmp_path, 2, keep=2, start=3, resumed_from=str(tmp_path))  # --resume D --checkpoint-dir D
    assert _held(tmp_path) == ["iter_000004", "iter_000005"] and (tmp_path / LATEST).read_text() == "iter_000005"
    # Resumed from an earlier checkpoint: the later ones wait until the run reaches them; the new
    # saves are the ones `latest` names, never pruned.
    _run(tmp_path, 1, keep=1, start=3, resumed_from=str(tmp_path / "iter_000004"))
    assert (tmp_path / LATEST).read_text() == "iter_000004" and "iter_000004" in _held(tmp_path)
    assert "iter_000005" in _held(tmp_path)


@pytest.mark.parametrize("keep", [-1, -3])
def test_a_negative_keep_is_refused_and_zero_keeps_all(tmp_path, keep):
    with pytest.raises(ValueError, match=f"--keep-checkpoints {keep} is invalid"):
        Checkpointer(str(tmp_path), keep=keep)
    _run(tmp_path / "all", 4, keep=0)
    assert len(_held(tmp_path / "all")) == 4


def test_bad_cli_numbers_name_their_flag_before_training(tmp_path):
    c = str(tmp_path / "c")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "metrics.jsonl").write_text("{}\n")
    for argv, message in (
        (["--run-dir", str(tmp_path / "used")], "already holds a run"),
        (["--iterations", "-1"], "--iterations -1 is invalid: expected a positive number"),
        (["--time-budget", "-5"], "--time-budget -5.0 is invalid"),
        (["--checkpoint-every", "abcs", "--checkpoint-dir", c], "--checkpoint-every 'abcs' is invalid"),
        (["--checkpoint-every", "0s", "--checkpoint-dir", c], "--checkpoint-every '0s' is invalid"),
        (["--keep-checkpoints", "-1", "--checkpoint-dir", c], "--keep-checkpoints -1 is invalid"),
    ):
        with pytest.raises(SystemExit, match=message):
            main(["train", "tiny-arith", *argv])


def test_two_runs_at_once_never_share_a_checkpoint_or_run_directory(tmp_path):
    """A directory another live run writes in is refused (two runs would interleave checkpoints or
    records); a default run directory taken by a run started in the same second gets a suffix; the
    mark of a run that is gone (killed) is taken over, and a run's own is removed at its end."""
    import subprocess
    import sys

    from rllib_rpp.app.run_record import OWNER, RunRecord

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for d in ("ckpt", "run"):
            (tmp_path / d).mkdir()
            (tmp_path / d / OWNER).write_text(str(other.pid))
        with pytest.raises(ValueError, match=rf"--checkpoint-dir {tmp_path / 'ckpt'} is in use by another run "
                                             rf"\(pid {other.pid}\)"):
            Checkpointer(str(tmp_path / "ckpt")).claim(None)
        with pytest.raises(ValueError, match=rf"run directory {tmp_path / 'run'} is in use by another run"):
            RunRecord(tmp_path / "run")
        second = RunRecord(tmp_path / "run", unique=True)  # a default name: the next one free
        assert second.dir == tmp_path / "run-2" and (second.dir / OWNER).read_text() == str(os.getpid())
        second.release()
        assert not (second.dir / OWNER).exists() and (tmp_path / "run" / OWNER).read_text() == str(other.pid)
    finally:
        other.kill()
        other.wait()
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    ckpt.claim(None)  # its owner is gone: taken over
    assert (tmp_path / "ckpt" / OWNER).read_text() == str(os.getpid())
    ckpt.release()
    assert not (tmp_path / "ckpt" / OWNER).exists()
