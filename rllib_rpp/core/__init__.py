"""The Ray-free compute core: the learners' log-prob passes, advantages, micro-batched update
and loss (`batch`, `logprobs`, `microbatch`, `update`, `loss`), plus the driver's scoring
(`scoring`) and learner-shard balancing (`balance`).

The RLlib Learner (`rllib_rpp.reinforce_pp.torch`) and algorithm are glue around these; scripts
without Ray (e.g. a GPU check) call them directly with an `UpdateOptions`.
"""

from rllib_rpp.core.batch import prepare_batch
from rllib_rpp.core.logprobs import response_logprobs, trim_batch
from rllib_rpp.core.loss import microbatch_loss
from rllib_rpp.core.options import UpdateOptions

__all__ = ["UpdateOptions", "microbatch_loss", "prepare_batch", "response_logprobs", "trim_batch"]
