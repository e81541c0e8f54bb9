"""The advantage-estimator table (§6): one entry per estimator, read by everything else.

Each entry says how the sequence score s is formed from the processed rewards r̂ (its baseline),
whether it needs several samples per prompt, whether the token advantages are whitened globally
(§2), and where the KL penalty goes by default (§1). The config, the learner, the CLI and the
benchmarks all read this table; adding an estimator is one `register_estimator` call (or, for
remote learners, an `Estimator` at module level named by its path: `tuned_examples/custom_estimator.py`):

    register_estimator(Estimator(
        "median_baseline", needs_groups=True, whitened=True, default_kl_placement="reward",
        baseline=lambda r, g: r - g.broadcast(torch.stack([r[g.index == i].median()
                                                            for i in range(len(g.counts))])),
        description="s = r̂ - median_g(r̂)"))

Pure torch, no Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rpp_hub.registry import Registry

KL_PLACEMENTS = ("reward", "loss", "none")


@dataclass(frozen=True)
class Groups:
    """Samples grouped by prompt draw: `index` [B] maps each sample to its group, `counts` [G]."""

    index: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def of(cls, group_ids: torch.Tensor) -> Groups:
        _, index, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
        return cls(index, counts)

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_g x per group, [G]."""
        return torch.zeros(len(self.counts), dtype=x.dtype, device=x.device).index_add_(0, self.index, x)

    def broadcast(self, per_group: torch.Tensor) -> torch.Tensor:
        """A [G] value back onto every sample of its group, [B]."""
        return per_group[self.index]

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """mean_g(x) for each sample's group, [B]."""
        return self.broadcast(self.sum(x) / self.counts.to(x.dtype))


# Baselines: (r̂ [B] float64, groups or None) -> s [B].
def no_baseline(r: torch.Tensor, g: Groups | None) -> torch.Tensor:
    """s = r̂."""
    return r


def group_mean_baseline(r: torch.Tensor, g: Groups) -> torch.Tensor:
    """s = r̂ - mean_g(r̂)."""
    return r - g.mean(r)


def group_zscore(r: torch.Tensor, g: Groups, eps: float = 1e-6) -> torch.Tensor:
    """s = (r̂ - mean_g(r̂)) / (std_g(r̂) + eps), std with ddof = 1."""
    centred = r - g.mean(r)
    n = g.counts.to(r.dtype)
    std = (g.sum(centred**2) / (n - 1)).sqrt()
    return centred / (g.broadcast(std) + eps)


def leave_one_out_baseline(r: torch.Tensor, g: Groups) -> torch.Tensor:
    """s = r̂ - (Σ_g r̂ - r̂) / (n_g - 1)."""
    n = g.broadcast(g.counts.to(r.dtype))
    return r - (g.broadcast(g.sum(r)) - r) / (n - 1)


@dataclass(frozen=True)
class Estimator:
    name: str
    baseline: Callable[[torch.Tensor, Groups | None], torch.Tensor]
    needs_groups: bool  # subtracts a per-prompt baseline: needs >= 2 samples per prompt
    whitened: bool  # token advantages whitened over the whole batch (§2)
    default_kl_placement: str  # "reward" (k1 shaping, §1) or "loss" (k2 loss term)
    description: str = ""

    def __post_init__(self):
        if self.default_kl_placement not in KL_PLACEMENTS:
            raise ValueError(f"estimator {self.name!r}: default_kl_placement={self.default_kl_placement!r}, "
                             f"expected one of {KL_PLACEMENTS}")


ESTIMATORS: Registry = Registry("advantage estimator", Estimator, kind_name="Estimator")


def register_estimator(estimator: Estimator) -> Estimator:
    """Add (or replace) an entry of the table in this process; returns it. Remote learners (Ray
    actors) do not see it: there, name the estimator by its path (`get_estimator`)."""
    return ESTIMATORS.register(estimator.name, estimator)


def get_estimator(name: str) -> Estimator:
    """The entry of a registered name, or of a "module:name" path to an `Estimator` (imported in
    whichever process asks, so `advantage_estimator="my_pkg.estimators:MEDIAN"` reaches every learner)."""
    return ESTIMATORS.resolve(name)


REINFORCE_PP = Estimator("reinforce_pp", no_baseline, needs_groups=False, whitened=True, default_kl_placement="reward",
                         description="s = r̂; Â globally whitened (the paper)")
for _e in (
    REINFORCE_PP,
    Estimator("reinforce_pp_baseline", group_mean_baseline, needs_groups=True, whitened=True,
              default_kl_placement="loss", description="s = r̂ - mean_g(r̂); Â globally whitened"),
    Estimator("grpo", group_zscore, needs_groups=True, whitened=False, default_kl_placement="loss",
              description="s = (r̂ - mean_g) / (std_g + eps); no global whitening"),
    Estimator("rloo", leave_one_out_baseline, needs_groups=True, whitened=False, default_kl_placement="reward",
              description="s = r̂ - leave-one-out mean; no global whitening"),
):
    register_estimator(_e)


def sequence_scores(rewards: torch.Tensor, group_ids: torch.Tensor | None = None,
                    est: Estimator = REINFORCE_PP) -> torch.Tensor:
    """The scalar s an estimator (a table entry, `get_estimator(name)`) puts on the last token (§6).
    Groups are prompt-draw ids."""
    estimator = est.name
    groups = None
    if est.needs_groups:
        if group_ids is None:
            raise ValueError(f"estimator {estimator!r} subtracts a per-prompt baseline and needs group_ids")
        groups = Groups.of(group_ids)
        if (groups.counts < 2).any():
            bad = group_ids[groups.broadcast(groups.counts) < 2][0].item()
            raise ValueError(f"estimator {estimator!r} needs >= 2 samples per prompt; group {bad} has 1")
    return est.baseline(rewards.double(), groups).to(rewards.dtype)
