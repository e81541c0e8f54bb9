"""REINFORCE++ for aligning language models, as a Ray RLlib algorithm.

`ReinforcePP` and `ReinforcePPConfig` are imported on first use, so the Ray-free parts
(`rllib_rpp.functional`, `rllib_rpp.core`, `rllib_rpp.samplers`, ...) import without Ray.
"""

__version__ = "0.1.0"

__all__ = ["ReinforcePP", "ReinforcePPConfig"]


def __getattr__(name: str):
    if name in __all__:
        from rllib_rpp import reinforce_pp

        return getattr(reinforce_pp, name)
    raise AttributeError(f"module 'rllib_rpp' has no attribute {name!r}")
