"""The policy-loss table (§3), beside the estimator table: one entry per loss, read by the learner
(`core.loss`), the config's validation and the docs. Adding a loss is one `register_policy_loss`
call, or, for remote learners, a `PolicyLossEntry` at module level named by its path
(`.training(policy_loss="my_pkg.losses:MY_LOSS")`).

A loss function takes [B, T] tensors (logprobs with gradient, old_logprobs, advantages, loss
mask) and the keywords clip_low, clip_high, dual_clip, loss_agg_mode, num_tokens, num_seqs,
is_weights, token_budget, and returns a `functional.PolicyLoss`. It must aggregate with
`functional.aggregate_loss` and the counts it is given, so micro-batches and learners sum to the
whole step's loss.

Pure torch, no Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rllib_rpp import functional as F
from rpp_hub.registry import Registry


@dataclass(frozen=True)
class PolicyLossEntry:
    name: str
    fn: Callable[..., F.PolicyLoss]
    sequence_level_clip: bool = False  # ε bounds a sequence ratio (~1e-3), not a token ratio (~0.2)
    supports_dual_clip: bool = False
    description: str = ""


POLICY_LOSSES: Registry = Registry("policy_loss", PolicyLossEntry, kind_name="rllib_rpp.policy_losses.PolicyLossEntry")


def register_policy_loss(entry: PolicyLossEntry) -> PolicyLossEntry:
    """Add (or replace) an entry in this process; returns it. Remote learners (Ray actors) do not
    see it: there, name the loss by its "module:name" path (`get_policy_loss`)."""
    return POLICY_LOSSES.register(entry.name, entry)


def get_policy_loss(name: str) -> PolicyLossEntry:
    """The entry of a registered name, or of a "module:name" path to a `PolicyLossEntry`."""
    return POLICY_LOSSES.resolve(name)


for _entry in (
    PolicyLossEntry("ppo_clip", F.clipped_policy_loss, supports_dual_clip=True,
                    description="-min(ρ_t Â_t, clip(ρ_t) Â_t) per token (the paper, §3)"),
    PolicyLossEntry("gspo", F.gspo_policy_loss, sequence_level_clip=True,
                    description="one ratio per sequence, exp(mean_t log ρ_t), clipped per sequence (GSPO-token)"),
    PolicyLossEntry("cispo", F.cispo_policy_loss,
                    description="-sg(clip(ρ_t)) Â_t log π_θ: the IS weight is clipped, never the gradient (CISPO)"),
):
    register_policy_loss(_entry)
