"""Text environments and rewards. Knows nothing of Ray or RLlib."""

import gymnasium as gym

from envs.prompts import PromptRecord, load_prompt_rows
from envs.rewards import BUILTIN_REWARDS, RewardFunctionError, RewardResult, RewardStep
from envs.text_env import SingleTurnTextEnv, TextEnvConfig

ENV_ID = "rllib-rpp/SingleTurnText-v0"

if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="envs.text_env:SingleTurnTextEnv", disable_env_checker=True)

__all__ = [
    "BUILTIN_REWARDS",
    "ENV_ID",
    "PromptRecord",
    "RewardFunctionError",
    "RewardResult",
    "RewardStep",
    "SingleTurnTextEnv",
    "TextEnvConfig",
    "load_prompt_rows",
]
