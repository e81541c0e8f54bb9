"""On-disk cache for models this project builds itself (no downloads anywhere).

`$RLLIB_RPP_CACHE` (default `~/.cache/rllib_rpp`). Concurrent first use is safe: one process
builds under a file lock into a temporary directory and renames it into place; the others wait
for the lock and then find it built. A directory counts as built once its `build_info.json`
exists, so a killed build is simply redone (and the half it left in `.<name>-*` is removed).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 4 MiB blocks (model files are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    return Path(os.environ.get("RLLIB_RPP_CACHE") or Path.home() / ".cache" / "rllib_rpp")


def cached_dir(name: str, recipe: dict) -> Path:
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    return cache_root() / f"{name}-{digest}"


def ensure_built(final: Path, build: Callable[[Path], dict], *, rebuild: bool = False) -> Path:
    """`final`, after building it with `build(tmp_dir) -> report` if it is missing."""
    if not rebuild and (final / "build_info.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if rebuild and final.exists():
            shutil.rmtree(final)
        if not (final / "build_info.json").exists():
            for stale in final.parent.glob(f".{final.name}-*"):  # killed builds' halves (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
            try:
                os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
                report = build(tmp)
                (tmp / "build_info.json").write_text(json.dumps(report, indent=2))
                if final.exists():  # leftovers of a killed build
                    shutil.rmtree(final)
                os.replace(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def build_info(final: Path) -> dict:
    return json.loads((final / "build_info.json").read_text())
