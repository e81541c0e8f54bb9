"""Nothing lost: atomic, verified checkpoints; relative paths; weights readable without unpickling."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import small_config

from rllib_rpp import ReinforcePP
from rllib_rpp.checkpoints import MANIFEST, POLICY_FILE, CheckpointError, load_policy_weights

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("ray_local")


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _kill_save(point, path, out):
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "kill_save_child.py"), point, str(path), str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == -9, proc.stderr[-3000:]  # killed by SIGKILL mid-save


def test_a_save_killed_while_rllib_writes_leaves_the_previous_checkpoint(tmp_path):
    path, out = tmp_path / "ckpt", tmp_path / "weights"
    _kill_save("rllib_write", path, out)  # a real training process, killed half-way through a pickle
    restored = ReinforcePP.from_checkpoint(path)
    assert same(restored.get_policy_state_dict(), torch.load(f"{out}.1"))
    assert restored.iteration == 1  # metadata and weights agree
    restored.stop()


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """Checkpoints after iterations 1 and 2 of one run, and their policy weights."""
    root = tmp_path_factory.mktemp("two")
    algo = small_config().build_algo()
    saved = []
    for i in (1, 2):
        algo.train()
        saved.append((algo.save_to_path(root / f"iter{i}"), algo.get_policy_state_dict()))
    algo.stop()
    return saved


@pytest.mark.parametrize("point", ["swap_old", "swap_new"])
def test_a_save_killed_while_swapping_leaves_a_loadable_consistent_checkpoint(tmp_path, point, two_checkpoints):
    (first_dir, first), (second_dir, second) = two_checkpoints
    path = tmp_path / "ckpt"
    shutil.copytree(first_dir, path)
    _kill_save(point, path, second_dir)  # the atomic save of checkpoint 2 over checkpoint 1, killed mid-swap
    with pytest.warns(UserWarning, match="restoring the previous checkpoint") if point == "swap_old" else _nothing():
        restored = ReinforcePP.from_checkpoint(path)
    # Before the swap the old checkpoint is intact; after it, the new one is complete.
    assert same(restored.get_policy_state_dict(), second if point == "swap_new" else first)
    assert restored.iteration == (2 if point == "swap_new" else 1)
    restored.stop()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_relative_paths_and_overwrites_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    algo = small_config().build_algo()
    algo.train()
    assert Path(algo.save_to_path("ckpt")) == tmp_path / "ckpt"
    first = algo.get_policy_state_dict()
    algo.train()
    algo.save_to_path("ckpt")  # overwrite in place: atomically
    assert not (tmp_path / "ckpt.previous").exists() and not list(tmp_path.glob(".ckpt.tmp-*"))
    restored = ReinforcePP.from_checkpoint("ckpt")
    assert same(restored.get_policy_state_dict(), algo.get_policy_state_dict())
    restored.restore_from_path("ckpt")
    assert not same(restored.get_policy_state_dict(), first)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes: it holds files that are not a checkpoint's \(notes.txt\)"):
        algo.save_to_path("notes")  # never deleted, never moved aside
    with pytest.raises(FileExistsError, match="it is the working directory"):
        algo.save_to_path(".")
    assert (tmp_path / "notes" / "notes.txt").is_file() and not list(tmp_path.glob("*.previous"))
    algo.stop()
    restored.stop()


def test_changed_bytes_and_missing_components_are_refused_naming_the_file(tmp_path):
    algo = small_config().build_algo()
    algo.train()
    path = Path(algo.save_to_path(str(tmp_path / "ckpt")))
    assert (path / MANIFEST).is_file()
    # The policy weights as safetensors: readable without unpickling anything.
    assert same(load_policy_weights(path), algo.get_policy_state_dict())
    algo.stop()
    flipped = tmp_path / "flipped"
    shutil.copytree(path, flipped)
    victim = max((p for p in flipped.rglob("*") if p.is_file() and p.name != MANIFEST), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"corrupted: {victim.relative_to(flipped).as_posix()} differs"):
        ReinforcePP.from_checkpoint(flipped)
    missing = tmp_path / "missing"
    shutil.copytree(path, missing)
    shutil.rmtree(missing / "env_runner")
    with pytest.raises(CheckpointError, match="incomplete: env_runner/.* is missing"):
        ReinforcePP.from_checkpoint(missing)
    os.remove(path / MANIFEST)
    with pytest.warns(UserWarning, match="restoring it unverified"):
        ReinforcePP.from_checkpoint(path).stop()  # a checkpoint of an older version still loads
    assert (path / POLICY_FILE).is_file()
