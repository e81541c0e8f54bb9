"""What the compute core reads: the options, as one plain dataclass, and how a learner agrees with
the others (`Collectives`). No Ray."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from rllib_rpp.functional import AllReduce, no_reduce
from rllib_rpp.options import default


@dataclass(frozen=True)
class Collectives:
    """How one learner agrees with the others. The defaults are a learner alone (no-ops)."""

    world_size: int = 1
    all_reduce: AllReduce = no_reduce  # sums a tensor over every learner
    agree_count: Callable[[int], int] = int  # the largest count of any learner (all run that many passes)
    no_sync: Callable[[], AbstractContextManager] = nullcontext  # defers DDP's gradient all-reduce


ALONE = Collectives()


@dataclass(frozen=True)
class UpdateOptions:
    """The options a learner's update reads: the option table's defaults, and the config's decisions
    for the resolved ones (`from_config`)."""

    # §1 KL against π_ref: where it goes ("reward" | "loss" | "none") and how it is estimated.
    kl_placement: str = "reward"
    kl_estimator: str = "k1"
    # §2 advantages.
    advantage_estimator: str = default("advantage_estimator")
    advantage_std_norm: bool = default("advantage_std_norm")
    gamma: float = default("gamma")
    # §3 loss.
    policy_loss: str = default("policy_loss")  # an entry of rllib_rpp.policy_losses
    clip_low: float = default("clip_low")
    clip_high: float = default("clip_high")
    dual_clip: float | None = default("dual_clip")
    loss_agg_mode: str = default("loss_agg_mode")
    max_new_tokens: int = default("max_new_tokens")  # seq-mean-token-sum-norm's constant normaliser
    entropy_coef: float = default("entropy_coef")
    tis_cap: float | None = default("tis_cap")
    is_mask_range: tuple[float, float] | None = default("is_mask_range")
    # Log-prob passes and memory.
    temperature: float = default("temperature")
    nonfinite_logprobs: str = default("nonfinite_logprobs")
    old_logprobs: str = "recompute"  # or "sampler": π_old taken from the sampler's log-probs (resolved: never "auto")
    max_tokens_per_microbatch: int = default("max_tokens_per_microbatch")
    logprob_chunk_tokens: int = default("logprob_chunk_tokens")
    # Precision: master weights / optimizer state, and the compute dtype (autocast when lower).
    param_dtype: str = "float32"
    compute_dtype: str = "float32"

    _RESOLVED = ("kl_placement", "kl_estimator", "old_logprobs", "param_dtype", "compute_dtype")

    @classmethod
    def from_config(cls, config) -> UpdateOptions:
        """From a ReinforcePPConfig (or any object with these attributes); the KL placement, the
        KL estimator, the π_old source and the dtypes are the config's resolved ones."""
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if f.name not in cls._RESOLVED}
        dtypes = config.dtypes
        return cls(kl_placement=config.kl_placement_used, kl_estimator=config.kl_estimator_used,
                   old_logprobs=config.old_logprobs_used, param_dtype=dtypes["param"],
                   compute_dtype=dtypes["compute"], **values)

    def autocast(self, device_type: str):
        """Forward passes compute in `compute_dtype` when it is lower than the master weights'
        precision (bf16 autocast over fp32 weights); otherwise a no-op context."""
        if self.compute_dtype == self.param_dtype or self.compute_dtype == "float32":
            return nullcontext()
        return torch.autocast(device_type=device_type, dtype=getattr(torch, self.compute_dtype))
