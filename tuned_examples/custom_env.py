"""Bring your own environment: subclass the single-turn text env, no package change.

    python -m tuned_examples.custom_env
"""

from envs import SingleTurnTextEnv
from rllib_rpp import ReinforcePPConfig


class PalindromeEnv(SingleTurnTextEnv):
    """Prompts are words; the reward is 1 for answering with the word reversed."""

    def __init__(self, config=None, **kwargs):
        words = ["abc", "level", "rllib", "token", "ray"]
        defaults = {"prompts": [{"prompt": f"reverse {w}:", "word": w} for w in words],
                    "reward_funcs": [self.reversed_word]}
        super().__init__({**defaults, **dict(config or {})}, **kwargs)

    @staticmethod
    def reversed_word(prompts, completions, word, **kwargs):
        return [float(c.strip() == w[::-1]) for c, w in zip(completions, word)]


def build_config() -> ReinforcePPConfig:
    return (
        ReinforcePPConfig()
        .environment(PalindromeEnv)
        .generation(max_new_tokens=8)
        .training(lr=2e-4, num_prompts_per_iteration=10, num_samples_per_prompt=4, minibatch_size=40)
    )


if __name__ == "__main__":
    algo = build_config().build_algo()
    for _ in range(3):
        print(algo.train()["env_runners"]["episode_return_mean"])
