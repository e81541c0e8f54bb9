"""The loss of one (micro-)batch (§3), normalised by the optimizer step's global counts."""

from __future__ import annotations

import torch

from rllib_rpp import functional as F
from rllib_rpp import schema as S
from rllib_rpp.core.options import UpdateOptions
from rllib_rpp.kl_estimators import get_kl_estimator
from rllib_rpp.loss_aggregations import get_loss_aggregation
from rllib_rpp.policy_losses import get_policy_loss


def microbatch_loss(logprobs: torch.Tensor, entropy: torch.Tensor | None, batch: dict, opts: UpdateOptions, *,
                    kl_coef: float, num_tokens, num_seqs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = L_policy (§3; `opts.policy_loss`, default PPO-clip) [+ β·KL(π_θ‖π_ref) if the KL placement
    is "loss"] [- c_H·H].

    `logprobs`/`entropy` are [B, R] from the training forward pass over `batch`'s rows;
    `num_tokens`/`num_seqs` are the counts of the whole optimizer step (every micro-batch and
    learner), so the sum of the pieces' losses is the loss of the whole step. Returns the loss
    and detached metrics."""
    mask = batch[S.LOSS_MASK]
    agg = dict(num_tokens=num_tokens, num_seqs=num_seqs, token_budget=opts.max_new_tokens)
    reduce = get_loss_aggregation(opts.loss_agg_mode)
    pl = get_policy_loss(opts.policy_loss).fn(
        logprobs, batch[S.OLD_LOGPROBS], batch[S.ADVANTAGES], mask, clip_low=opts.clip_low,
        clip_high=opts.clip_high, dual_clip=opts.dual_clip, loss_agg_mode=reduce,
        is_weights=batch.get(S.IS_WEIGHTS), **agg,
    )
    loss = pl.loss
    metrics = {"policy_loss": pl.loss.detach(), "clip_fraction": pl.clip_fraction,
               "dual_clip_fraction": pl.dual_clip_fraction, "ratio_mean": pl.ratio_mean,
               "ratio_max": pl.ratio_max, "approx_kl_old": pl.approx_kl}
    if opts.kl_placement == "loss":
        kl = F.token_kl(logprobs, batch[S.REF_LOGPROBS], get_kl_estimator(opts.kl_estimator))
        kl_loss = F.aggregate_loss(kl, mask, reduce, **agg)
        loss = loss + kl_coef * kl_loss
        metrics["kl_loss"] = kl_loss.detach()
    if opts.entropy_coef:
        loss = loss - opts.entropy_coef * F.aggregate_loss(entropy, mask, reduce, **agg)
    return loss, metrics
