"""The driver's step over the WHOLE batch, before it is sharded over learners (§4, §6).

Truncation policy, reward processing (normalise -> clip -> scale) and the estimator's
per-prompt baseline: one score s per completion, and a loss weight (0 drops it)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from rllib_rpp import functional as F
from rllib_rpp.estimators import sequence_scores


class Scored(NamedTuple):
    scores: torch.Tensor  # [B] s, the value put on each response's last token
    loss_weights: torch.Tensor  # [B] 1 = trained on, 0 = left out (truncated under "mask")
    processed: torch.Tensor  # [B] r̂


def score_batch(rewards: torch.Tensor, truncated: torch.Tensor, group_ids: torch.Tensor, *, estimator: str,
                truncated_response: str = "keep", truncated_reward: float = -1.0, normalize: str | None = None,
                running: F.RunningMoments | None = None, clip_range=(-10.0, 10.0), scale: float = 1.0) -> Scored:
    """rewards [B] (raw r), truncated [B] bool, group_ids [B] (one id per prompt draw)."""
    raw = rewards.double()
    if truncated_response == "penalize":
        raw = torch.where(truncated, torch.full_like(raw, truncated_reward), raw)
    processed = F.process_rewards(raw, normalize=normalize, running=running, clip_range=clip_range, scale=scale)
    scores = sequence_scores(processed, group_ids, estimator)
    weights = torch.ones_like(raw)
    if truncated_response == "mask":
        weights = (~truncated).double()
    return Scored(scores, weights, processed)
