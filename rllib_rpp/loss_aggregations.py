"""The loss-aggregation table (§3): the name an option gives (`loss_agg_mode="token-mean"`) -> the
reduction the math receives (`functional.aggregate_loss`, every policy loss). A user's reduction
is one `LOSS_AGGREGATIONS.register` call, or a "module:name" path for remote learners; it takes
(values, mask, *, num_tokens, num_seqs, token_budget) and must use the step's counts it is given, so
micro-batches and learners sum to the whole step's loss. Pure torch, no Ray."""

from __future__ import annotations

from rllib_rpp import functional as F
from rpp_hub.registry import Registry

LOSS_AGGREGATIONS: Registry = Registry("loss_agg_mode", callable, kind_name="function (values, mask, *, num_tokens, "
                                       "num_seqs, token_budget) -> scalar", entries={
    "token-mean": F.token_mean,
    "seq-mean-token-mean": F.seq_mean_token_mean,
    "seq-mean-token-sum": F.seq_mean_token_sum,
    "seq-mean-token-sum-norm": F.seq_mean_token_sum_norm,  # Dr.GRPO
})


def get_loss_aggregation(name: str) -> F.Aggregation:
    """The reduction of a registered name, or of a "module:name" path."""
    return LOSS_AGGREGATIONS.resolve(name)
