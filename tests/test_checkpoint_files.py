"""What a save may replace, and what a restore verifies, on checkpoint directories alone (no Ray:
a stand-in writes RLlib's files)."""

import json
import os
from pathlib import Path

import pytest

from rllib_rpp.checkpoints import MANIFEST, CheckpointError, resolve_for_restore, save_atomically


def rllib_files(tmp: str) -> None:
    """What RLlib's save_to_path writes, in miniature."""
    root = Path(tmp)
    (root / "env_runner").mkdir(parents=True)
    (root / "algorithm_state.pkl").write_bytes(b"algorithm state")
    (root / "class_and_ctor_args.pkl").write_bytes(b"class")
    (root / "env_runner" / "state.pkl").write_bytes(b"runner state")


def test_a_save_replaces_only_checkpoints_and_empty_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=rf"refusing to save a checkpoint to {notes}: it holds files that "
                                              rf"are not a checkpoint's \(notes.txt\)"):
        save_atomically(notes, rllib_files)
    assert (notes / "notes.txt").read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["notes"]

    (tmp_path / "file").write_text("mine")
    with pytest.raises(FileExistsError, match=rf"{tmp_path / 'file'}: it is a file, not a checkpoint directory"):
        save_atomically("file", rllib_files)
    assert (tmp_path / "file").read_text() == "mine" and not (tmp_path / "file.previous").exists()

    for cwd in (".", "", "notes/..", str(tmp_path.parent)):
        with pytest.raises(FileExistsError, match="it is the working directory"):
            save_atomically(cwd, rllib_files)
    assert Path.cwd() == tmp_path and sorted(os.listdir(tmp_path)) == ["file", "notes"]

    (tmp_path / "empty").mkdir()
    assert save_atomically("empty", rllib_files) == str(tmp_path / "empty")
    assert (tmp_path / "empty" / MANIFEST).is_file()
    save_atomically("empty", rllib_files)  # a checkpoint of ours: replaced
    assert not (tmp_path / "empty.previous").exists()

    (tmp_path / "empty" / "notes.txt").write_text("mine")  # a file the manifest does not list
    with pytest.raises(FileExistsError, match=r"holds files that are not a checkpoint's \(notes.txt\)"):
        save_atomically("empty", rllib_files)
    assert (tmp_path / "empty" / "notes.txt").is_file()

    rllib_files(tmp_path / "older")  # no manifest: an RLlib checkpoint of an older version
    save_atomically("older", rllib_files)
    assert (tmp_path / "older" / MANIFEST).is_file()

    (tmp_path / "ckpt.previous").mkdir()  # where the old checkpoint is moved during the swap
    (tmp_path / "ckpt.previous" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"ckpt.previous \(where the save moves the old checkpoint\) holds"):
        save_atomically("ckpt", rllib_files)
    assert (tmp_path / "ckpt.previous" / "notes.txt").is_file() and not (tmp_path / "ckpt").exists()


def test_a_file_changed_after_a_verified_restore_is_caught_and_a_damaged_manifest_is_named(tmp_path):
    path = Path(save_atomically(tmp_path / "ckpt", rllib_files))
    assert resolve_for_restore(path) == str(path)  # verified (and remembered)
    state = path / "algorithm_state.pkl"
    state.write_bytes(b"algorithm_stXte")  # same size
    with pytest.raises(CheckpointError, match="corrupted: algorithm_state.pkl differs"):
        resolve_for_restore(path)
    state.write_bytes(b"algorithm state")
    resolve_for_restore(path)

    (path / MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} is damaged: its manifest {path / MANIFEST} is "
                                              rf"not the JSON a save writes \(JSONDecodeError"):
        resolve_for_restore(path)
    (path / MANIFEST).write_text(json.dumps({"version": 1, "files": ["algorithm_state.pkl"]}))
    with pytest.raises(CheckpointError, match="is damaged"):
        resolve_for_restore(path)

    os.remove(path / MANIFEST)
    with pytest.warns(UserWarning, match=r"no rllib_rpp_manifest.json, so it cannot be verified \(it was written by "
                                         r"a version before manifests, or the manifest was removed\)"):
        assert resolve_for_restore(path) == str(path)


def test_a_save_onto_a_full_disk_fails_with_the_error_and_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """A full disk (ENOSPC, here raised by the manifest's write) half-way through a save: the error
    names it, the previous checkpoint still restores, and no temporary directory is left to fill it."""
    import errno

    from rllib_rpp import checkpoints

    target = tmp_path / "ckpt"
    save_atomically(target, rllib_files)
    before = (target / MANIFEST).read_text()

    def full(root):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root / MANIFEST))

    monkeypatch.setattr(checkpoints, "write_manifest", full)
    with pytest.raises(OSError, match="No space left on device"):
        save_atomically(target, rllib_files)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"] and (target / MANIFEST).read_text() == before
    assert resolve_for_restore(target) == str(target)  # verified: every file as the manifest says
