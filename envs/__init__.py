"""Text environments and rewards. Knows nothing of Ray or RLlib.

Names are imported on first use, so a submodule (`envs.tiny_arith`, which the model hub
`rpp_hub.models` builds by path) imports without gymnasium (e.g. on a bare CUDA image). Touching
`envs.ENV_ID` or `SingleTurnTextEnv` registers the environment with gymnasium as "rllib-rpp/SingleTurnText-v0".
"""

_EXPORTS = {
    "BUILTIN_REWARDS": "envs.rewards",
    "RewardFunctionError": "envs.rewards",
    "RewardResult": "envs.rewards",
    "RewardStep": "envs.rewards",
    "PromptRecord": "envs.prompts",
    "load_prompt_rows": "envs.prompts",
    "ENV_ID": "envs.text_env",
    "SingleTurnTextEnv": "envs.text_env",
    "TextEnvConfig": "envs.text_env",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
