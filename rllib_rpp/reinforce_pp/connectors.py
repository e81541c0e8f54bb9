"""Learner connector pieces: episodes -> one token batch -> π_old, π_ref log-probs and Â.

Both run ONCE per update over the learner's whole shard, before it is split into mini-batches
(so π_old is the policy that sampled, and whitening sees the whole batch; with several
learners the whitening sums are all-reduced).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID

# Keys an episode carries (set by the text env runner and the algorithm's driver step).
SAMPLER_LOGPROBS = "sampler_logprobs"
RESPONSE_MASK = "response_mask"
SCORE = "score"  # processed sequence score s (custom_data, set on the driver)
LOSS_WEIGHT = "loss_weight"  # 0 drops the response from the loss (truncated-response "mask")


class EpisodesToTokenBatch(ConnectorV2):
    """Stack single-step text episodes into [B, P] prompt and [B, R] response tensors."""

    def __init__(self, input_observation_space=None, input_action_space=None, *, device="cpu", **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.device = device

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, metrics=None, **kwargs):
        obs = [e.get_observations(0) for e in episodes]
        prompt_ids = np.stack([o["input_ids"] for o in obs])
        prompt_mask = np.stack([o["attention_mask"] for o in obs])
        response_ids = np.stack([e.get_actions(0) for e in episodes])
        response_mask = np.stack([e.get_extra_model_outputs(RESPONSE_MASK, 0) for e in episodes])
        sampler_lp = np.stack([e.get_extra_model_outputs(SAMPLER_LOGPROBS, 0) for e in episodes])
        weight = np.array([e.custom_data.get(LOSS_WEIGHT, 1.0) for e in episodes], np.float32)
        # Trim all-padding columns: the observation/action spaces are sized for the worst case.
        p = max(int(prompt_mask.sum(-1).max()), 1)
        r = max(int(response_mask.sum(-1).max()), 1)
        t = lambda x, dt: torch.as_tensor(np.ascontiguousarray(x), dtype=dt, device=self.device)  # noqa: E731
        batch[DEFAULT_MODULE_ID] = {
            "prompt_ids": t(prompt_ids[:, -p:], torch.long),
            "prompt_mask": t(prompt_mask[:, -p:], torch.long),
            "response_ids": t(response_ids[:, :r], torch.long),
            "response_mask": t(response_mask[:, :r] * weight[:, None], torch.float32),
            "sampler_logprobs": t(sampler_lp[:, :r], torch.float32),
            "scores": t([e.custom_data[SCORE] for e in episodes], torch.float32),
        }
        return batch


class ReinforcePPAdvantages(ConnectorV2):
    """Add old_logprobs (π_old), ref_logprobs (π_ref) and advantages Â to the token batch.

    `learner` supplies the policy/reference log-prob passes, β, the all-reduce and metrics."""

    def __init__(self, input_observation_space=None, input_action_space=None, *, learner=None, **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.learner = learner

    @torch.no_grad()
    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, metrics=None, **kwargs):
        b: dict[str, Any] = batch[DEFAULT_MODULE_ID]
        learner = self.learner
        t0 = time.perf_counter()
        b["old_logprobs"] = learner.policy_logprobs(b)
        t1 = time.perf_counter()
        b["ref_logprobs"] = learner.reference_logprobs(b)
        t2 = time.perf_counter()
        learner.compute_batch_advantages(b)
        learner.log_connector_timings(old_s=t1 - t0, ref_s=t2 - t1, adv_s=time.perf_counter() - t2)
        return batch


def chunked(fn: Callable[..., torch.Tensor], batch: dict, keys: tuple[str, ...], chunk: int) -> torch.Tensor:
    """fn(*[batch[k][i:i+chunk] for k in keys]) over row chunks, concatenated (bounded memory).
    Chunks are right-trimmed by fn itself; results are padded back to the batch width."""
    n, width = batch[keys[0]].shape[0], batch["response_ids"].shape[1]
    parts = []
    for i in range(0, n, chunk):
        out = fn(*(batch[k][i : i + chunk] for k in keys))
        parts.append(torch.nn.functional.pad(out, (0, width - out.shape[1])))
    return torch.cat(parts)
