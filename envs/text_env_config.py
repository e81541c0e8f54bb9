"""The text env's options (`env_config` keys), apart from the env so that what reads only the options
(the option table, the reward workers) needs no gymnasium."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envs.rewards import RewardStep
from envs.task_rewards import TaskRewardStep


@dataclass
class TextEnvConfig:
    model: str = "tiny-arith"  # tokenizer (and context length) source: id, path or built-in name
    prompts: Any = "arithmetic"  # list of str/dict, .jsonl path, datasets.Dataset, built-in name
    prompt_key: str = "prompt"
    reward_funcs: Any = ("exact_match",)  # callables, built-in names, "module:fn", reward model ids
    reward_weights: Sequence[float] | None = None
    max_new_tokens: int = 16  # the config's generation(max_new_tokens) default
    max_prompt_tokens: int | None = None  # None: the longest prompt of the source
    truncate_prompts: bool = False  # over-long prompts: error (False) or keep their last tokens
    apply_chat_template: bool | None = None  # None: only for chat prompts
    pad_token: str | None = None  # set when the tokenizer has none
    shuffle: bool = True
    seed: int = 0
    shard_index: int = 0  # parallel samplers each draw from their own shard of every epoch
    num_shards: int = 1
    reward_device: str = "cpu"
    reward_batch_size: int = 64
    reward_dtype: str | None = None  # a reward model's dtype (None: bf16 on CUDA, fp32 on CPU)
    reward_timeout_s: float | None = 60.0  # per reward call; rule functions run in a killable process
    on_reward_error: Any = "raise"  # a sample whose call timed out or raised: "raise" | "skip" | a reward
    reward_backend: str = "transformers"  # a reward model served by transformers or vLLM's pooling runner
    # {task: {"reward_funcs", "reward_weights"}}: a task's samples scored by its own functions only (a
    # mixture's prompts set it from its tasks); other samples by `reward_funcs`
    task_rewards: Mapping[str, Mapping] | None = None

    def reward_step(self) -> RewardStep | TaskRewardStep:
        """The reward step these options describe (the env's own, or a reward worker's)."""
        options = dict(device=self.reward_device, batch_size=self.reward_batch_size, dtype=self.reward_dtype,
                       timeout_s=self.reward_timeout_s, on_error=self.on_reward_error, backend=self.reward_backend)
        if not self.task_rewards:
            return RewardStep(self.reward_funcs, self.reward_weights, **options)
        steps = {t: RewardStep(o["reward_funcs"], o.get("reward_weights"), **options)
                 for t, o in self.task_rewards.items()}
        return TaskRewardStep(steps, lambda: RewardStep(self.reward_funcs, self.reward_weights, **options))

    @classmethod
    def from_dict(cls, d: Mapping) -> TextEnvConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown text-env option(s) {unknown}; valid options: {sorted(names)}")
        cfg = cls(**d)
        if not isinstance(cfg.max_new_tokens, int) or cfg.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {cfg.max_new_tokens!r}")
        if cfg.max_prompt_tokens is not None and cfg.max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be a positive integer or None, got {cfg.max_prompt_tokens!r}")
        return cfg
