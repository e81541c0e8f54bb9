"""REINFORCE++ for aligning language models, as a Ray RLlib algorithm."""

__version__ = "0.1.0"

from rllib_rpp.reinforce_pp import ReinforcePP, ReinforcePPConfig  # noqa: E402


def _register() -> None:
    from ray.tune.registry import register_trainable

    register_trainable("ReinforcePP", ReinforcePP)


_register()

__all__ = ["ReinforcePP", "ReinforcePPConfig"]
