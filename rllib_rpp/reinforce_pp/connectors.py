"""The learner connector's piece: episodes -> one token batch. It runs once per update over the
learner's whole shard; the learner then adds π_old, π_ref log-probs and Â to it (`prepare_batch`)
before RLlib splits it into mini-batches. Column names and shapes: `rllib_rpp.schema`.
"""

from __future__ import annotations

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.utils.annotations import override

from rllib_rpp import schema as S


class EpisodesToTokenBatch(ConnectorV2):
    """Stack single-step text episodes into [B, P] prompt and [B, R] response tensors, trimmed
    once to the longest prompt and response of the shard."""

    def __init__(self, input_observation_space=None, input_action_space=None, *, device="cpu", **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.device = device

    @override(ConnectorV2)
    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, metrics=None, **kwargs):
        obs = [e.get_observations(0) for e in episodes]
        prompt_ids = np.stack([o["input_ids"] for o in obs])
        prompt_mask = np.stack([o["attention_mask"] for o in obs])
        response_ids = np.stack([e.get_actions(0) for e in episodes])
        response_mask = np.stack([e.get_extra_model_outputs(S.RESPONSE_MASK, 0) for e in episodes])
        loss_mask = np.stack([e.get_extra_model_outputs(S.LOSS_MASK, 0) for e in episodes])
        sampler_lp = np.stack([e.get_extra_model_outputs(S.SAMPLER_LOGPROBS, 0) for e in episodes])
        weight = np.array([e.custom_data.get(S.LOSS_WEIGHT, 1.0) for e in episodes], np.float32)
        # The observation/action spaces are sized for the worst case: drop all-padding columns
        # (the response mask is a prefix of each row; the loss mask may have holes inside it).
        p = max(int(prompt_mask.sum(-1).max()), 1)
        r = max(int(response_mask.sum(-1).max()), 1)
        t = lambda x, dt: torch.as_tensor(np.ascontiguousarray(x), dtype=dt, device=self.device)  # noqa: E731
        batch[DEFAULT_MODULE_ID] = {
            S.PROMPT_IDS: t(prompt_ids[:, -p:], torch.long),
            S.PROMPT_MASK: t(prompt_mask[:, -p:], torch.long),
            S.RESPONSE_IDS: t(response_ids[:, :r], torch.long),
            S.RESPONSE_MASK: t(response_mask[:, :r], torch.float32),
            S.LOSS_MASK: t(loss_mask[:, :r] * weight[:, None], torch.float32),
            S.SAMPLER_LOGPROBS: t(sampler_lp[:, :r], torch.float32),
            S.SCORES: t([e.custom_data[S.SCORE] for e in episodes], torch.float32),
        }
        return batch
