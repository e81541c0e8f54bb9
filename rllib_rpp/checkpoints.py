"""Checkpoints that survive any interruption and are verified before they are restored. No Ray.

Saving writes everything into a temporary directory beside the target, adds the policy weights as
safetensors (readable without unpickling), writes a manifest with every file's size and SHA-256
last, fsyncs, and only then swaps it into place with renames: the target is moved to
`<name>.previous`, the new one renamed to `<name>`, the previous one deleted. Whenever the process
dies, a complete checkpoint remains: `<name>`, or `<name>.previous` (restored from automatically).

A save replaces only an absent target, an empty directory or a checkpoint; a directory with other
files, a regular file or the working directory is refused, naming the path.

Restoring checks the manifest: a missing or changed file is refused with an error naming it.
A directory holding a `latest` file (the CLI's checkpoint directory) resolves to the checkpoint
it names. RLlib checkpoints are pickles that run code when loaded: restore only your own.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

from rpp_hub.cache import file_sha256

MANIFEST = "rllib_rpp_manifest.json"
POLICY_FILE = "policy.safetensors"
LATEST = "latest"


class CheckpointError(ValueError):
    """A checkpoint that is incomplete or was changed after it was written."""


def absolute(path) -> str:
    """A local path made absolute (RLlib's pyarrow file system needs one); URIs stay as they are."""
    path = os.fspath(path)
    return path if "://" in path else str(Path(path).expanduser().absolute())


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(root: Path) -> None:
    """Sizes and SHA-256 of every file under `root`, written last, then everything fsynced."""
    entries = {p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
               for p in _files(root)}
    (root / MANIFEST).write_text(json.dumps({"version": 1, "files": entries}, indent=1))
    for p in [*_files(root), root / MANIFEST]:
        _fsync(p)
    for d in sorted({p.parent for p in _files(root)} | {root}, key=lambda d: -len(d.parts)):
        _fsync(d)


# Checkpoints verified in this process, keyed by every file's path, size and mtime: from_checkpoint
# then restore_from_path hashes once, and a file changed (or added) since is checked again.
_VERIFIED: set[tuple] = set()


def _stat_key(root: Path) -> tuple:
    return (str(root), *((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                         for p in sorted(root.rglob("*")) if p.is_file()))


def read_manifest(root: Path) -> dict:
    """The manifest's {file: {"size", "sha256"}}; a damaged manifest is a CheckpointError naming it."""
    path = root / MANIFEST
    try:
        files = json.loads(path.read_text())["files"]
        if not (isinstance(files, dict) and all(isinstance(m, dict) and {"size", "sha256"} <= set(m)
                                                for m in files.values())):
            raise ValueError("its 'files' is not a table of sizes and SHA-256s")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {root} is damaged: its manifest {path} is not the JSON a save writes "
                              f"({type(e).__name__}: {e}); the checkpoint cannot be verified") from e
    return files


def verify(root: Path) -> None:
    """Refuse a checkpoint whose files are missing or differ from its manifest."""
    key = _stat_key(root)
    if key in _VERIFIED:
        return
    for name, meta in read_manifest(root).items():
        path = root / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {root} is incomplete: {name} is missing")
        if path.stat().st_size != meta["size"] or file_sha256(path) != meta["sha256"]:
            raise CheckpointError(f"checkpoint {root} is corrupted: {name} differs from what was saved "
                                  f"(size or SHA-256 mismatch)")
    _VERIFIED.add(key)


def _clean_leftovers(target: Path) -> None:
    """Temporary directories of saves to `target` whose process is gone."""
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        pid = tmp.name.split("-")[-2] if tmp.name.count("-") >= 2 else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replaceable(path: Path, role: str) -> None:
    """Refuse to replace `path` unless it is absent, an empty directory, or a checkpoint: one with
    our manifest and no file the manifest does not list, or (no manifest: an older version's) an
    RLlib algorithm checkpoint. A save must never take the user's other files."""
    if not path.exists() and not path.is_symlink():
        return
    cwd, real = Path.cwd().resolve(), path.resolve()
    if real == cwd or real in cwd.parents:
        raise FileExistsError(f"refusing to save a checkpoint to {path}: it is the working directory (or holds it), "
                              f"which the save would replace; give a new or checkpoint directory")
    if path.is_symlink() or not path.is_dir():
        raise FileExistsError(f"refusing to save a checkpoint to {path}: {role} is a "
                              f"{'link' if path.is_symlink() else 'file'}, not a checkpoint directory; move it away")
    files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    if not files:
        return
    if MANIFEST in files:
        try:
            extra = sorted(files - set(read_manifest(path)) - {MANIFEST})
        except CheckpointError:
            extra = sorted(files)
        if not extra:
            return
    elif {"algorithm_state.pkl", "class_and_ctor_args.pkl"} <= files:
        return
    else:
        extra = sorted(files)
    shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
    raise FileExistsError(f"refusing to save a checkpoint to {path}: {role} holds files that are not a checkpoint's "
                          f"({shown}), which the save would delete; choose a new directory or move them away")


def save_atomically(target, write: Callable[[str], object], policy_state: dict | None = None) -> str:
    """`write(tmp_dir)` (RLlib's save_to_path), the policy as safetensors, the manifest, then the
    swap into `target`. Returns the absolute target path. Only an absent target, an empty
    directory or a checkpoint is replaced (`_replaceable`); anything else is refused first."""
    target = Path(os.path.normpath(absolute(target)))  # "x/.." is the directory it names
    _replaceable(target, "it")
    previous = target.with_name(target.name + ".previous")
    _replaceable(previous, f"{previous.name} (where the save moves the old checkpoint)")
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write(str(tmp))
        if policy_state:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in policy_state.items()}, str(tmp / POLICY_FILE))
        write_manifest(tmp)
        if target.exists():
            if previous.exists():
                shutil.rmtree(previous)
            os.replace(target, previous)
        os.replace(tmp, target)
        _fsync(target.parent)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(target)


def resolve_for_restore(path) -> str:
    """The verified checkpoint directory to restore from `path` (see the module docstring)."""
    root = Path(absolute(path))
    if "://" in os.fspath(path):
        return os.fspath(path)
    if (root / LATEST).is_file():
        root = root / (root / LATEST).read_text().strip()
    if not (root / MANIFEST).is_file():
        previous = root.with_name(root.name + ".previous")
        if (previous / MANIFEST).is_file():
            warnings.warn(f"{root} is missing or incomplete (a save was interrupted); restoring the previous "
                          f"checkpoint {previous}", stacklevel=3)
            root = previous
        elif root.is_dir() and (root / "algorithm_state.pkl").is_file():
            warnings.warn(f"{root} has no {MANIFEST}, so it cannot be verified (it was written by a version before "
                          f"manifests, or the manifest was removed): restoring it unverified", stacklevel=3)
            return str(root)
        elif root.exists():
            raise CheckpointError(f"{root} is not a complete checkpoint: it has no {MANIFEST}")
        else:
            raise FileNotFoundError(f"no checkpoint at {root}")
    verify(root)
    return str(root)


def load_policy_weights(path) -> dict:
    """The policy's weights (Hugging Face names) from a checkpoint, read from safetensors: safe
    to use on a checkpoint you did not write (nothing is unpickled)."""
    from safetensors.torch import load_file

    return load_file(str(Path(resolve_for_restore(path)) / POLICY_FILE))
