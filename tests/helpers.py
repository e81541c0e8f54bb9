"""Shared test configuration: the tiny arithmetic task at a small batch size."""

from rllib_rpp import ReinforcePPConfig


def small_config(**training) -> ReinforcePPConfig:
    """16 prompts x 4 samples, 2 mini-batches of 32, exact-match reward, seeded."""
    opts = dict(lr=1e-4, num_prompts_per_iteration=16, num_samples_per_prompt=4, minibatch_size=32)
    opts.update(training)
    return (
        ReinforcePPConfig()
        .environment(env_config={"prompts": "arithmetic", "reward_funcs": ["exact_match"]})
        .generation(max_new_tokens=5)
        .training(**opts)
        .evaluation(greedy_eval_prompts="arithmetic-eval")
        .debugging(seed=0)
    )
