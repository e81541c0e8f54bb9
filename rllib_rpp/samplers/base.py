"""The sampler interface an env runner drives.

A sampler turns a batch of prompts (token ids) into `n` completions each, in ONE call, and
reports each sampled token's log-probability under the distribution it sampled from (after
temperature and top-p: the same quantity the learner computes from logits / temperature).
It also takes new weights (a Hugging Face state dict) after every learner update.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False
    ignore_eos: bool = False  # always generate max_new_tokens (cost benchmarks)


@dataclass
class Generation:
    """Completions in prompt-major order: prompt 0's n samples, then prompt 1's, ..."""

    token_ids: list[list[int]]  # each ends with EOS when `finished`, no padding
    logprobs: list[list[float]]  # sampler log-prob of each token (empty lists when greedy)
    finished: list[bool]  # True: stopped at EOS; False: hit max_new_tokens (truncated)


class Sampler:
    """Base class: `generate`, `load_weights`, `stop`."""

    weights_version: int = 0

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Generation:
        raise NotImplementedError

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        pass


# The sampler registry: name -> "module:Class", imported on first use (vLLM is heavy and optional).
SAMPLERS: dict[str, str] = {
    "transformers": "rllib_rpp.samplers.hf:TransformersSampler",
    "vllm": "rllib_rpp.samplers.vllm:VLLMSampler",
}


def register_sampler(name: str, target: str) -> None:
    """Make `.generation(sampler=name)` build `target` ("module:Class", a Sampler subclass)."""
    SAMPLERS[name] = target


def make_sampler(kind: str, model: str, *, eos_token_id: int, pad_token_id: int, **kwargs) -> Sampler:
    """A sampler of `kind` (a key of SAMPLERS) serving `model` (id, path or built-in)."""
    if kind not in SAMPLERS:
        raise ValueError(f"unknown sampler {kind!r}; expected one of {tuple(SAMPLERS)}")
    module, cls = SAMPLERS[kind].split(":")
    sampler_cls = getattr(importlib.import_module(module), cls)
    return sampler_cls(model, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
