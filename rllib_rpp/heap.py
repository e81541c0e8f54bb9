"""The objects a process builds once (imports, Ray, models, modules) out of the cyclic GC's scans.

Python's full collections walk every tracked object: after a build that is ~0.5M objects (torch,
transformers, Ray), about 10 ms an iteration at the tiny shape on a 2-core CPU, all spent on
objects that live until the process ends. `gc.freeze()` moves what is alive now to a permanent
generation the collector skips; objects created later are collected as before. A process that
builds and drops algorithms (a test run, Tune's reused actors) thaws them when it stops one.
"""

from __future__ import annotations

import gc


def freeze_built_objects() -> None:
    """Collect what is garbage now, then leave everything still alive out of later collections."""
    gc.collect()
    gc.freeze()


def thaw() -> None:
    """Hand the frozen objects back to the collector (an algorithm was stopped: its cycles can go)."""
    gc.unfreeze()
