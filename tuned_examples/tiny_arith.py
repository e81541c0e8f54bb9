"""REINFORCE++ on two-number addition with the built-in tiny model, on a 2-core CPU.

The README's main job (`make train`, i.e. `rllib-rpp train tiny-arith`). Exact-match rule
reward, 64 prompts x 4 samples per iteration, responses of at most 5 tokens.
"""

from __future__ import annotations

from rllib_rpp import ReinforcePPConfig


def build_config(*, lr: float = 2e-4, kl_coef: float = 0.01, estimator: str = "reinforce_pp",
                 sampler: str = "transformers", seed: int = 0, num_prompts: int = 64,
                 samples_per_prompt: int = 4, model: str = "tiny-arith", **training) -> ReinforcePPConfig:
    return (
        ReinforcePPConfig()
        .environment(env_config={"prompts": "arithmetic", "reward_funcs": ["exact_match"]})
        .rl_module(model_config={"model": model, "dtype": "float32"})
        .generation(sampler=sampler, max_new_tokens=5, temperature=1.0)
        .training(lr=lr, kl_coef=kl_coef, advantage_estimator=estimator,
                  num_prompts_per_iteration=num_prompts, num_samples_per_prompt=samples_per_prompt,
                  minibatch_size=num_prompts * samples_per_prompt // 2, num_epochs=1, grad_clip=1.0,
                  **training)
        .evaluation(greedy_eval_prompts="arithmetic-eval")
        .debugging(seed=seed)
    )
