"""The options the learner's compute core reads, as one plain dataclass (no Ray)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class UpdateOptions:
    # §1 KL against π_ref: where it goes ("reward" | "loss" | "none") and how it is estimated.
    kl_placement: str = "reward"
    kl_estimator: str = "k1"
    # §2 advantages.
    advantage_estimator: str = "reinforce_pp"
    advantage_std_norm: bool = True
    gamma: float = 1.0
    # §3 loss.
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    loss_agg_mode: str = "token-mean"
    entropy_coef: float = 0.0
    tis_cap: float | None = None
    # Log-prob passes.
    temperature: float = 1.0
    logprob_batch_size: int = 256
    nonfinite_logprobs: str = "error"

    @classmethod
    def from_config(cls, config) -> UpdateOptions:
        """From a ReinforcePPConfig (or any object with these attributes); the KL placement and
        estimator are the config's resolved ones."""
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)
                  if f.name not in ("kl_placement", "kl_estimator")}
        return cls(kl_placement=config.kl_placement_used, kl_estimator=config.kl_estimator_used, **values)
