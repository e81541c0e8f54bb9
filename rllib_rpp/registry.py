"""Lazy "module:name" paths: how a table names what it holds without importing it (no Ray here).

Registries (samplers, estimators, the config's algorithm class) store a path instead of the
object when the object's module is heavy, optional, or imports the registry's own module. A
path also reaches other processes: a Ray actor (an env runner, a learner) resolves it in its own
interpreter, where an object registered at run time in the driver would not exist.
"""

from __future__ import annotations

import importlib
import re
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
