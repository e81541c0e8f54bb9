"""GPU placement shared by the GPU examples."""

from __future__ import annotations


def gpu_placement(config, gpus: int):
    """One GPU: learner and vLLM runner colocated (fractional GPUs, vLLM sleeps between samples
    and takes a third of the memory). Two or more: one learner GPU, the rest vLLM runners."""
    if gpus < 1:
        raise ValueError(f"the GPU examples need at least one GPU, got gpus={gpus}")
    if gpus == 1:
        return (config.learners(num_learners=1, num_gpus_per_learner=0.5)
                .env_runners(num_env_runners=1, num_gpus_per_env_runner=0.5)
                .generation(sampler_kwargs={"gpu_memory_utilization": 0.3, "enable_sleep_mode": True}))
    runners = gpus - 1
    if config.num_prompts_per_iteration % runners:
        raise ValueError(f"num_prompts_per_iteration={config.num_prompts_per_iteration} must split over "
                         f"{runners} vLLM runners")
    return (config.learners(num_learners=1, num_gpus_per_learner=1)
            .env_runners(num_env_runners=runners, num_gpus_per_env_runner=1)
            .generation(sampler_kwargs={"gpu_memory_utilization": 0.85}))
