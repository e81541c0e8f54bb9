"""The driver's step over the WHOLE batch, before it is sharded over learners (§4, §6).

Overlong shaping, truncation policy, reward processing (normalise -> clip -> scale) and the
estimator's per-prompt baseline: one score s per completion, and a loss weight (0 drops it)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from rllib_rpp import functional as F
from rllib_rpp.estimators import get_estimator, sequence_scores


class Scored(NamedTuple):
    scores: torch.Tensor  # [B] s, the value put on each response's last token
    loss_weights: torch.Tensor  # [B] 1 = trained on, 0 = left out (truncated under "mask")
    processed: torch.Tensor  # [B] r̂


def score_batch(rewards: torch.Tensor, truncated: torch.Tensor, group_ids: torch.Tensor, *, estimator: str,
                truncated_response: str = "keep", truncated_reward: float = -1.0, normalize: str | None = None,
                running: F.RunningMoments | None = None, clip_range=(-10.0, 10.0), scale: float = 1.0,
                skipped: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                overlong: tuple[int, int, float] | None = None) -> Scored:
    """rewards [B] (raw r), truncated [B] bool, group_ids [B] (one id per prompt draw), skipped [B]
    bool (the reward call failed, on_reward_error="skip": loss weight 0, and its reward is taken as
    the mean of the others' so it moves no normalisation statistic or baseline much).
    `overlong` = (max_new_tokens, buffer_len, penalty) adds DAPO's length penalty of `lengths` [B]
    first; the truncation policy comes after it ("penalize" replaces a truncated response's
    shaped reward, "mask" drops it), then normalisation."""
    raw = rewards.double()
    if skipped is not None and skipped.any():
        kept = raw[~skipped]
        raw = torch.where(skipped, kept.mean() if kept.numel() else torch.zeros(()), raw)
    if overlong is not None:
        raw = raw + F.overlong_penalty(lengths, *overlong)
    if truncated_response == "penalize":
        raw = torch.where(truncated, torch.full_like(raw, truncated_reward), raw)
    processed = F.process_rewards(raw, normalize=normalize, running=running, clip_range=clip_range, scale=scale)
    scores = sequence_scores(processed, group_ids, get_estimator(estimator))
    weights = torch.ones_like(raw)
    if truncated_response == "mask":
        weights = (~truncated).double()
    if skipped is not None:
        weights = weights * (~skipped).double()
    return Scored(scores, weights, processed)
