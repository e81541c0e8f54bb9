"""Reward workers: Ray actors that score batches for every env runner (`config.rewards(
num_reward_workers=N)`). Each builds the env's reward step once (a reward model is loaded by its
first batch, in the worker only); an env runner splits its batch over all workers and waits for
them, so with several runners one runner's batch is scored while another's is generated."""

from __future__ import annotations

import numpy as np
import ray

from envs.reward_guard import GuardStats
from envs.reward_model import RewardModelReward
from envs.rewards import RewardResult
from envs.tasks import mixture
from envs.text_env import TextEnvConfig

RETRIES = 2  # of a scoring call whose reward worker died
REWARD_KEYS = ("reward_funcs", "reward_weights", "reward_device", "reward_batch_size", "reward_dtype",
               "reward_timeout_s", "on_reward_error", "reward_backend", "task_rewards")


def reward_env_config(config) -> dict:
    """The env options a reward step reads, with the config's `.rewards()` settings applied
    (env_config entries, when set, win)."""
    env = dict(config.env_config or {})
    out = {k: env[k] for k in REWARD_KEYS if k in env}
    out.setdefault("reward_timeout_s", config.reward_timeout_s)
    out.setdefault("on_reward_error", config.on_reward_error)
    out.setdefault("reward_dtype", config.reward_dtype)
    out.setdefault("reward_backend", config.reward_backend)
    tasks = mixture.tasks_of(env.get("prompts"))
    if tasks is not None and out.get("task_rewards") is None:  # a mixture's tasks scored by their own functions
        out["task_rewards"] = mixture.task_rewards(tasks)
    if config.num_gpus_per_reward_worker and config.num_reward_workers:
        out.setdefault("reward_device", "cuda")
    return out


class RewardWorker:
    def __init__(self, env_config: dict):
        self.step = TextEnvConfig.from_dict({k: v for k, v in env_config.items() if k in REWARD_KEYS}).reward_step()

    def reward(self, inputs: dict) -> RewardResult:
        return self.step(**inputs)

    def reward_model_loads(self) -> int:
        """Reward models this worker's process has loaded (one per model, at its first batch)."""
        return RewardModelReward.loads

    def process_ids(self) -> list[int]:
        """This worker's process and its running reward processes."""
        import os

        return [os.getpid(), *self.step.process_ids()]

    def stop(self) -> None:
        self.step.close()


def start_reward_workers(config) -> list:
    """`config.num_reward_workers` actors with the configured CPUs and GPUs."""
    env_config = reward_env_config(config)
    # A worker that dies (an OOM kill, a crash in native code) is restarted and the calls it had
    # are retried on it, twice at most: a batch that kills its worker every time fails the sample.
    actor = ray.remote(RewardWorker).options(num_cpus=config.num_cpus_per_reward_worker,
                                             num_gpus=config.num_gpus_per_reward_worker, max_restarts=-1,
                                             max_task_retries=RETRIES)
    workers = [actor.remote(env_config) for _ in range(config.num_reward_workers)]
    ray.get([w.__ray_ready__.remote() for w in workers])
    return workers


def stop_reward_workers(workers: list) -> None:
    """Stop every worker's reward processes, then the workers (nothing is left running)."""
    try:
        ray.get([w.stop.remote() for w in workers], timeout=30)
    except Exception:  # noqa: BLE001, S110 - a dead worker has nothing left to stop
        pass
    for w in workers:
        ray.kill(w)


def submit_scoring(workers: list, inputs: dict, n: int, offset: int = 0) -> list[tuple]:
    """Send the batch's `n` samples, split over the workers, without waiting: (ref, first sample's
    index + `offset`) per part; `collect_scores` joins them."""
    parts = [p for p in np.array_split(np.arange(n), len(workers)) if len(p)]
    return [(w.reward.remote({k: (v[p[0]: p[-1] + 1] if isinstance(v, list) else v) for k, v in inputs.items()}),
             offset + int(p[0])) for w, p in zip(workers, parts)]


def collect_scores(pending: list[tuple]) -> RewardResult:
    """Wait for the parts of `submit_scoring` calls and join them in order."""
    try:
        results = ray.get([ref for ref, _ in pending])
    except ray.exceptions.RayActorError as e:
        raise RuntimeError(f"a reward worker died scoring this batch {RETRIES + 1} times (it was restarted and the "
                           f"batch retried each time): {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    stats = GuardStats()
    for r, (_, start) in zip(results, pending):
        for key in GuardStats.COUNTS:
            setattr(stats, key, getattr(stats, key) + getattr(r.stats, key))
        stats.culprits += [start + i for i in r.stats.culprits]
    return RewardResult(np.concatenate([r.rewards for r in results]),
                        {k: np.concatenate([r.components[k] for r in results]) for k in results[0].components},
                        np.concatenate([r.skipped for r in results]), stats)


def reward_remotely(workers: list, inputs: dict, n: int) -> RewardResult:
    """Score the batch's `n` samples on the workers at once (split over them) and join the parts."""
    return collect_scores(submit_scoring(workers, inputs, n))
