"""Text generation as a single-turn Gymnasium environment.

`reset()` draws the next prompt; one `step(response)` takes the whole response and returns the
reward from the reward step (rule-based functions and/or a Bradley-Terry reward model); the
episode then ends (`terminated=True`).

Conventions (what samplers and users rely on):
- observation: {"input_ids", "attention_mask"}, both int64 of length `max_prompt_tokens`, the
  prompt LEFT-padded with the tokenizer's pad id (ready for a batched generate call);
  `info` carries the prompt text/chat, its index in the source and its extra columns.
- action: int64 token ids of length `max_new_tokens`, RIGHT-padded with the pad id. The response
  is everything up to and including the first EOS; without an EOS, everything up to the first
  pad; without either, all `max_new_tokens` tokens (a truncated response). Ids outside the
  tokenizer's vocabulary (negative, or >= its size) are refused with a ValueError.
- every prompt must have a value in each column a reward function reads (see `RewardStep`):
  a missing cell is an error naming the prompt row and the column, at construction and in `rewards_for`.
- Env runners reward a whole batch at once with `next_prompts(n)` and `rewards_for(prompts, ids)`; `step`
  is the same reward step on a batch of one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import gymnasium as gym
import numpy as np

from envs.prompts import PromptOrder, PromptRecord, encode_prompts, load_prompt_rows
from envs.rewards import RewardResult
from envs.tasks import mixture
from envs.text_env_config import TextEnvConfig
from rpp_hub.models import load_tokenizer, model_max_length

__all__ = ["ENV_ID", "SingleTurnTextEnv", "TextEnvConfig"]


class SingleTurnTextEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, config: Mapping | None = None, **kwargs):
        cfg = TextEnvConfig.from_dict({**dict(config or {}), **kwargs})
        self.env_config = cfg
        self.tokenizer = load_tokenizer(cfg.model, pad_token=cfg.pad_token)
        # A task mixture: every level of every task is loaded (and tokenised) now; TaskOrder draws from them.
        self.tasks = mixture.tasks_of(cfg.prompts)
        if self.tasks is not None:
            pools = mixture.pools(self.tasks)
            rows = [r for _, _, pool in pools for r in pool]
            if cfg.task_rewards is None:
                cfg.task_rewards = mixture.task_rewards(self.tasks)
        else:
            rows = load_prompt_rows(cfg.prompts, prompt_key=cfg.prompt_key)
        self.prompts: list[PromptRecord] = encode_prompts(
            rows, self.tokenizer, prompt_key=cfg.prompt_key, apply_chat_template=cfg.apply_chat_template,
            max_prompt_tokens=cfg.max_prompt_tokens, truncate=cfg.truncate_prompts,
        )
        self.max_prompt_tokens = cfg.max_prompt_tokens or max(len(p.input_ids) for p in self.prompts)
        self.max_new_tokens = cfg.max_new_tokens
        limit = model_max_length(cfg.model)
        if limit is not None and self.max_prompt_tokens + self.max_new_tokens > limit:
            raise ValueError(
                f"max_prompt_tokens ({self.max_prompt_tokens}) + max_new_tokens ({self.max_new_tokens}) "
                f"= {self.max_prompt_tokens + self.max_new_tokens} exceeds the context of {cfg.model!r} "
                f"({limit} tokens)"
            )
        self.reward_step = cfg.reward_step()
        self.reward_step.check_columns([p.columns for p in self.prompts], [p.index for p in self.prompts])
        shards = dict(seed=cfg.seed, shuffle=cfg.shuffle, shard_index=cfg.shard_index, num_shards=cfg.num_shards)
        if self.tasks is None:
            self.order: PromptOrder | mixture.TaskOrder = PromptOrder(len(self.prompts), **shards)
        else:
            starts = np.cumsum([0] + [len(pool) for _, _, pool in pools])
            ranges = [(t.name, lvl, range(a, b)) for (t, lvl, _), a, b in zip(pools, starts, starts[1:])]
            self.order = mixture.TaskOrder(ranges, {t.name: t.weight for t in self.tasks}, **shards)
        self.pad_token_id = self.tokenizer.pad_token_id
        self.eos_token_id = self.tokenizer.eos_token_id
        self.vocab_size = vocab = len(self.tokenizer)
        P, R = self.max_prompt_tokens, self.max_new_tokens
        self.observation_space = gym.spaces.Dict({
            "input_ids": gym.spaces.Box(0, vocab - 1, (P,), np.int64),
            "attention_mask": gym.spaces.Box(0, 1, (P,), np.int64),
        })
        self.action_space = gym.spaces.MultiDiscrete(np.full(R, vocab), dtype=np.int64)
        self._current: PromptRecord | None = None

    # -- batched API (samplers) -------------------------------------------------------------
    def next_prompts(self, n: int) -> list[PromptRecord]:
        """The next `n` prompts of this env's (shard of the) seeded order."""
        return [self.prompts[i] for i in self.order.take(n)]

    def observation(self, record: PromptRecord) -> dict:
        ids = np.full(self.max_prompt_tokens, self.pad_token_id, np.int64)
        mask = np.zeros(self.max_prompt_tokens, np.int64)
        n = len(record.input_ids)
        ids[self.max_prompt_tokens - n :] = record.input_ids
        mask[self.max_prompt_tokens - n :] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def response_length(self, action: Sequence[int]) -> int:
        """Length of the response in a padded action (see the module's conventions)."""
        action = np.asarray(action)
        eos = np.flatnonzero(action == self.eos_token_id)
        if eos.size:
            return int(eos[0]) + 1
        pad = np.flatnonzero(action == self.pad_token_id)
        return int(pad[0]) if pad.size else len(action)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def rewards_for(self, prompts: Sequence[PromptRecord], completion_ids: Sequence[Sequence[int]]) -> RewardResult:
        """Reward of each (prompt, response) pair, in one call of the reward step."""
        return self.reward_step(**self.reward_inputs(prompts, completion_ids))

    def reward_inputs(self, prompts: Sequence[PromptRecord], completion_ids: Sequence[Sequence[int]]) -> dict:
        """The reward step's arguments for these pairs (plain data: they can go to a reward worker)."""
        self.reward_step.check_columns([p.columns for p in prompts], [p.index for p in prompts])
        texts = self.tokenizer.batch_decode([list(ids) for ids in completion_ids], skip_special_tokens=True)
        completions = [
            [{"role": "assistant", "content": t}] if isinstance(p.prompt, list) else t
            for p, t in zip(prompts, texts)
        ]
        keys = sorted({k for p in prompts for k in p.columns})
        columns = {k: [p.columns.get(k) for p in prompts] for k in keys}
        return dict(prompts=[p.prompt for p in prompts], completions=completions,
                    completion_ids=[list(ids) for ids in completion_ids], **columns)

    def close(self) -> None:
        """Stop the reward step's processes and connections (isolated rule functions, servers)."""
        self.reward_step.close()

    # -- Gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.order.reseed(seed)
        if options and "prompt_index" in options:
            self._current = self.prompts[int(options["prompt_index"])]
        else:
            self._current = self.next_prompts(1)[0]
        return self.observation(self._current), self._info(self._current)

    def step(self, action):
        if self._current is None:
            raise RuntimeError("step() called before reset(): the episode has no prompt")
        action = np.asarray(action, dtype=np.int64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must be token ids of shape {self.action_space.shape} "
                             f"(right-padded with {self.pad_token_id}), got shape {action.shape}")
        bad = np.flatnonzero((action < 0) | (action >= self.vocab_size))
        if bad.size:
            raise ValueError(
                f"action has token id {int(action[bad[0]])} at position {int(bad[0])}, outside the vocabulary "
                f"of size {self.vocab_size}: token ids must be in 0..{self.vocab_size - 1}"
            )
        n = self.response_length(action)
        record, self._current = self._current, None
        result = self.rewards_for([record], [action[:n].tolist()])
        info = {
            **self._info(record),
            "completion": self.decode(action[:n]),
            "response_length": n,
            "truncated_response": self.eos_token_id not in action[:n],
            "reward_components": {k: float(v[0]) for k, v in result.components.items()},
        }
        return self.observation(record), float(result.rewards[0]), True, False, info

    @staticmethod
    def _info(record: PromptRecord) -> dict:
        return {"prompt": record.prompt, "prompt_index": record.index, "columns": dict(record.columns)}

    def set_levels(self, levels: Mapping[str, int]) -> None:
        """Curriculum levels of a mixture's tasks: later draws of a task come from its prompts at that level."""
        if self.tasks is None:
            raise ValueError("curriculum levels need a task mixture as the prompt source")
        self.order.set_levels(levels)

    # -- checkpointing ----------------------------------------------------------------------
    def get_state(self) -> dict:
        return {"order": self.order.get_state()}

    def set_state(self, state: Mapping) -> None:
        self.order.set_state(state["order"])


ENV_ID = "rllib-rpp/SingleTurnText-v0"
if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="envs.text_env:SingleTurnTextEnv", disable_env_checker=True)
