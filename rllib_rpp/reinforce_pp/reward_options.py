"""`ReinforcePPConfig.rewards(...)`: where and how the reward step runs (a mixin of the config,
which would otherwise pass the 400-line module limit)."""

from __future__ import annotations

from ray.rllib.algorithms.algorithm_config import NotProvided


class RewardOptions:
    def _init_reward_options(self) -> None:
        self.num_reward_workers = 0
        self.num_cpus_per_reward_worker = 1
        self.num_gpus_per_reward_worker = 0
        self.reward_timeout_s = 60.0
        self.on_reward_error = "raise"
        self.reward_dtype = None
        self.overlap_scoring = False
        self.reward_backend = "transformers"

    def rewards(
        self,
        *,
        num_reward_workers: int = NotProvided,
        num_cpus_per_reward_worker: float = NotProvided,
        num_gpus_per_reward_worker: float = NotProvided,
        reward_timeout_s: float = NotProvided,
        on_reward_error: str | float = NotProvided,
        reward_dtype: str | None = NotProvided,
        overlap_scoring: bool = NotProvided,
        reward_backend: str = NotProvided,
    ):
        """Sets the reward step's options.

        Args:
            num_reward_workers: Ray actors that score for every env runner (each runner splits its
                batch over all of them); a reward model is loaded once per worker and never on the
                driver. 0 (default): each env runner scores its own batch.
            num_cpus_per_reward_worker: CPUs of each reward worker (fractions allowed).
            num_gpus_per_reward_worker: GPUs of each reward worker (fractions allowed; a reward
                model then runs on its GPU).
            reward_timeout_s: Seconds a reward call may take (default 60). Rule functions other than
                the trivially safe built-ins run in a child process that is killed past it; a
                reward server gets the same timeout. A batch call that times out or raises is retried
                sample by sample under the same timeout, so only the culprits get `on_reward_error`.
                None: every reward function runs in the env's own process, with no timeout (a
                function's side effects then land there).
            on_reward_error: What a sample whose reward call timed out or raised gets: "raise"
                (default: the run stops, naming the sample), "skip" (it leaves the loss and is
                counted), or a number (its reward).
            reward_dtype: A reward model's dtype (default: bfloat16 on CUDA, float32 on CPU).
            overlap_scoring: With reward workers, each env runner generates its batch in two halves
                and the first half is scored while the second is generated (not with a sleeping
                vLLM engine, which would sleep between the halves). Default False.
            reward_backend: How a reward model is served: "transformers" (default) or "vllm"
                (vLLM's pooling runner: the same scores, checked on CPU; not yet timed on a GPU).
        """
        for name, value in list(locals().items()):
            if name != "self" and value is not NotProvided:
                setattr(self, name, value)
        return self
