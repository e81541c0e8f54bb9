"""A config's state that keeps every value the user set, -1 included (a mixin of the config).

RLlib's `AlgorithmConfig.get_state` drops every attribute equal to -1, its `DEPRECATED_VALUE`
marker, and `Algorithm.__init__` rebuilds the config through `from_state(get_state())`: a user's
`lr=-1` or `on_reward_error=-1` would silently become the default, never reaching validation (or,
where -1 is legal, never reaching training). Here only RLlib's deprecated attributes (those whose
default is the marker) are dropped.
"""

from __future__ import annotations

import functools
from typing import Any

from ray.rllib.algorithms.algorithm_config import DEPRECATED_VALUE, AlgorithmConfig


@functools.cache
def _deprecated_names() -> frozenset[str]:
    """RLlib's attributes whose default is the deprecation marker (they may stay dropped)."""
    return frozenset(k for k, v in AlgorithmConfig().__dict__.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool) and v == DEPRECATED_VALUE)


class KeepsSetValues:
    def get_state(self) -> dict[str, Any]:
        # RLlib's state, plus the attributes it dropped for being equal to -1 (module docstring).
        state = super().get_state()
        dropped = set(self.__dict__) - set(state) - {"algo_class", "_is_frozen"} - _deprecated_names()
        state.update({k: self.__dict__[k] for k in dropped})
        return state
