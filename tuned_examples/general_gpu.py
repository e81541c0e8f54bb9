"""REINFORCE++ for general alignment on GPUs: an SFT model scored by a Bradley-Terry reward
model, β = 0.01 (the paper's general setting), running reward normalisation, vLLM runners.

    rllib-rpp train general --model my-sft-model --reward-model my-rm --prompts prompts.jsonl --gpus 2
"""

from __future__ import annotations

from rllib_rpp import ReinforcePPConfig
from tuned_examples.placement import gpu_placement


def build_config(*, model: str = "Qwen/Qwen2.5-0.5B-Instruct",
                 reward_model: str = "OpenRLHF/Llama-3-8b-rm-700k", prompts="prompts.jsonl",
                 eval_prompts=None, gpus: int = 2, lr: float = 5e-7, kl_coef: float = 0.01,
                 num_prompts: int = 64, samples_per_prompt: int = 4, max_new_tokens: int = 512,
                 seed: int = 0) -> ReinforcePPConfig:
    config = (
        ReinforcePPConfig()
        .environment(env_config={
            "prompts": prompts,
            "apply_chat_template": True,
            "reward_funcs": [reward_model],
            "reward_device": "cuda",
            "reward_batch_size": 16,
            "max_prompt_tokens": 1024,
            "truncate_prompts": True,
        })
        .rl_module(model_config={"model": model, "dtype": "bfloat16"})
        .generation(sampler="vllm", max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0)
        .training(lr=lr, kl_coef=kl_coef, gamma=1.0, reward_normalization="running", reward_clip=(-10.0, 10.0),
                  num_prompts_per_iteration=num_prompts, num_samples_per_prompt=samples_per_prompt,
                  minibatch_size=num_prompts * samples_per_prompt // 2, num_epochs=1, grad_clip=1.0,
                  logprob_batch_size=16, truncated_response="penalize", truncated_reward=-1.0)
        .evaluation(greedy_eval_prompts=eval_prompts, greedy_eval_interval=10 if eval_prompts else 0)
        .debugging(seed=seed)
    )
    return gpu_placement(config, gpus)
