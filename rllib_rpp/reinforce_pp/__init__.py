from rllib_rpp.reinforce_pp.reinforce_pp import ReinforcePP, ReinforcePPConfig

__all__ = ["ReinforcePP", "ReinforcePPConfig"]
