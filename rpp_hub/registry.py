"""One shape for every table that names what it holds (estimators, policy losses, samplers, weight-transfer
engines, reward backends, built-in models, reward functions, task sources, ...), and one "module:name"
resolver. No Ray, nothing of envs or rllib_rpp: both stand on it.

A `Registry` maps names to entries. An entry may be stored as a "package.module:name" path and is
then imported on first use: for objects whose module is heavy, optional, or imports the table's own
module. `resolve` also takes a path that was never registered: the way a user's object reaches
other processes (a Ray actor resolves the path in its own interpreter, where an object registered
at run time in the driver does not exist).

    SAMPLERS = Registry("sampler", kind=Sampler, entries={"vllm": "rllib_rpp.samplers.vllm:VLLMSampler"})
    SAMPLERS.resolve("vllm")                     # the class, its module imported now
    SAMPLERS.resolve("my_pkg.samplers:Mine")     # any path to a Sampler
    SAMPLERS.register("mine", Mine)              # this process only
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def is_import_path(text: Any) -> bool:
    """Whether `text` is a "package.module:name" path."""
    return isinstance(text, str) and bool(_PATH.fullmatch(text))


def import_path(target: str) -> Any:
    """The object a "package.module:name" path names, importing its module on first use."""
    if not is_import_path(target):
        raise ValueError(f"{target!r} is not an import path: expected 'package.module:name'")
    module, name = target.split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{target!r} could not be imported: {e}") from e


class Registry(Mapping):
    """name -> entry (or a path to it). A read-only Mapping of the registered names (`in`, `list()`,
    `registry[name]` resolve like `resolve`); `register` adds.

    Args:
        what: What an entry is, as errors name it ("advantage estimator", "sampler").
        kind: The type every entry is an instance of (checked on registration and resolution), or a
            predicate (e.g. "a subclass of Sampler").
        kind_name: How errors name `kind` (default: its module and name).
        paths: Whether `resolve` takes "module:name" paths that were never registered.
    """

    def __init__(self, what: str, kind: type | Callable[[Any], bool] | None = None, *, kind_name: str | None = None,
                 entries: Mapping[str, Any] | None = None, paths: bool = True):
        self.what, self.kind, self.paths = what, kind, paths
        self.kind_name = kind_name or (f"{kind.__module__}.{kind.__qualname__}" if isinstance(kind, type) else "")
        self._entries: dict[str, Any] = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    def register(self, name: str, entry: Any) -> Any:
        """Add (or replace) `name` in this process; `entry` is the object or its "module:name" path.
        Returns the entry."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} needs a non-empty name, got {name!r}")
        if isinstance(entry, str) and not is_import_path(entry) and not self._accepts(entry):
            raise ValueError(f"{self.what} {name!r}: {entry!r} is neither a {self.kind_name or 'valid entry'} nor a "
                             f"'module:name' path")
        if not is_import_path(entry):
            self._check(name, entry)
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove `name` (this process)."""
        self._entries.pop(name, None)

    def resolve(self, key: Any) -> Any:
        """The entry of a registered name, or (with `paths`) the object a "module:name" path names."""
        if isinstance(key, str) and key in self._entries:
            entry = self._entries[key]
        elif self.paths and is_import_path(key):
            entry = key
        else:
            path = " or a 'module:name' path" + (f" to a {self.kind_name}" if self.kind_name else "")
            raise ValueError(f"unknown {self.what} {key!r}; expected one of {tuple(self._entries)}"
                             f"{path if self.paths else ''}")
        if is_import_path(entry):
            entry = import_path(entry)
            self._check(key, entry)
        return entry

    def _accepts(self, entry: Any) -> bool:
        if self.kind is None:
            return True
        return isinstance(entry, self.kind) if isinstance(self.kind, type) else bool(self.kind(entry))

    def _check(self, key: str, entry: Any) -> None:
        if not self._accepts(entry):
            raise ValueError(f"{self.what} {key!r} names {entry!r}, not a {self.kind_name or 'valid entry'}")

    # Mapping: the registered names (`in` never imports an entry).
    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> Any:
        if name not in self._entries:
            raise KeyError(name)
        return self.resolve(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self._entries)})"
