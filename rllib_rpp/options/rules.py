"""What a valid option value is: a rule is `(check, expected)`, the check a predicate and `expected`
the words an error prints after "expected" (no Ray)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

Rule = tuple[Callable[[Any], bool], str]


def is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def number(lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False,
           integer: bool = False, optional: bool = False) -> Rule:
    """A finite number (an int with integer=True) in [lo, hi] (open ends with *_open)."""

    def check(v):
        if v is None:
            return optional
        if not (is_int(v) if integer else is_real(v)):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    kind = "an integer" if integer else "a finite number"
    bounds = []
    if lo > -math.inf:
        bounds.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi < math.inf:
        bounds.append(f"{'<' if hi_open else '<='} {hi:g}")
    text = f"{kind} {' and '.join(bounds)}".strip()
    return check, (f"None or {text}" if optional else text)


POSITIVE_INT = number(1, integer=True)


def one_of(options) -> Rule:
    options = tuple(options)
    return (lambda v: v in options), f"one of {options}"


def boolean(optional: bool = False) -> Rule:
    return (lambda v: isinstance(v, bool) or (optional and v is None)), ("None, True or False" if optional else
                                                                          "True or False")


def pair(v) -> bool:
    """None or (low, high) with finite low < high."""
    return v is None or (isinstance(v, (tuple, list)) and len(v) == 2 and all(map(is_real, v)) and v[0] < v[1])


def schedule_or_number(v) -> bool:
    """RLlib accepts a learning rate or a schedule [[timestep, value], ...]."""
    if isinstance(v, (list, tuple)):
        return len(v) > 0 and all(isinstance(p, (list, tuple)) and len(p) == 2 and is_int(p[0]) and is_real(p[1])
                                  and p[1] > 0 for p in v)
    return is_real(v) and v > 0


def resolves(lookup: Callable[[Any], Any], what: str) -> Rule:
    """A name `lookup` finds (a registered name or a "module:name" path that imports)."""

    def check(v):
        try:
            lookup(v)
        except (ValueError, TypeError):
            return False
        return True

    return check, what
