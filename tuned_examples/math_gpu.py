"""REINFORCE++ for math reasoning on GPUs: a Qwen2.5 instruct model, answers graded by
math-verify, β = 0.001 (the paper's math setting), vLLM env runners.

    rllib-rpp train math --model Qwen/Qwen2.5-1.5B-Instruct --prompts train.jsonl --gpus 2

`--prompts`: any prompt source with `prompt` (text or chat) and `answer` columns (.jsonl,
a datasets.Dataset saved to disk is not read directly: export it to .jsonl first).
"""

from __future__ import annotations

from rllib_rpp import ReinforcePPConfig
from tuned_examples.placement import gpu_placement

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def build_config(*, model: str = "Qwen/Qwen2.5-1.5B-Instruct", prompts="train.jsonl", eval_prompts=None,
                 gpus: int = 2, lr: float = 1e-6, kl_coef: float = 0.001, estimator: str = "reinforce_pp",
                 num_prompts: int = 64, samples_per_prompt: int = 4, max_new_tokens: int = 1024,
                 seed: int = 0) -> ReinforcePPConfig:
    config = (
        ReinforcePPConfig()
        .environment(env_config={
            "prompts": prompts,
            "apply_chat_template": True,
            "reward_funcs": ["math_verify", "boxed_format"],
            "reward_weights": [1.0, 0.1],
            "max_prompt_tokens": 512,
            "truncate_prompts": True,
        })
        .rl_module(model_config={"model": model, "dtype": "bfloat16"})
        .generation(sampler="vllm", max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0)
        .training(lr=lr, kl_coef=kl_coef, advantage_estimator=estimator, gamma=1.0,
                  num_prompts_per_iteration=num_prompts, num_samples_per_prompt=samples_per_prompt,
                  minibatch_size=num_prompts * samples_per_prompt // 2, num_epochs=1, grad_clip=1.0,
                  clip_low=0.2, clip_high=0.2, reward_clip=(-10.0, 10.0), logprob_batch_size=16,
                  truncated_response="keep")
        .evaluation(greedy_eval_prompts=eval_prompts, greedy_eval_interval=10 if eval_prompts else 0)
        .debugging(seed=seed)
    )
    return gpu_placement(config, gpus)
