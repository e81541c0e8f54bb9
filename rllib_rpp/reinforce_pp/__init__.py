from rllib_rpp.reinforce_pp import library_notices
from rllib_rpp.reinforce_pp.reinforce_pp import ReinforcePP
from rllib_rpp.reinforce_pp.reinforce_pp_config import ReinforcePPConfig

library_notices.install()  # before any algorithm is built: Ray's notices a user cannot act on

__all__ = ["ReinforcePP", "ReinforcePPConfig"]
