"""Bring your own rule-based reward: a plain function with TRL's signature, no package change.

    python -m tuned_examples.custom_reward
"""

from rllib_rpp import ReinforcePPConfig


def close_enough(prompts, completions, answer, **kwargs):
    """1 for the exact sum, partial credit when off by a little, 0 for non-numbers."""
    out = []
    for c, a in zip(completions, answer):
        try:
            out.append(max(0.0, 1.0 - abs(int(c) - int(a)) / 10))
        except ValueError:
            out.append(0.0)
    return out


def build_config() -> ReinforcePPConfig:
    return (
        ReinforcePPConfig()
        .environment(env_config={"prompts": "arithmetic", "reward_funcs": [close_enough]})
        .generation(max_new_tokens=5)
        .training(lr=2e-4, num_prompts_per_iteration=32, minibatch_size=64)
    )


if __name__ == "__main__":
    algo = build_config().build_algo()
    for _ in range(5):
        print(algo.train()["env_runners"]["reward"])
