from rllib_rpp.reinforce_pp.reinforce_pp import ReinforcePP
from rllib_rpp.reinforce_pp.reinforce_pp_config import ReinforcePPConfig

__all__ = ["ReinforcePP", "ReinforcePPConfig"]
