"""The learner's compute core, callable without Ray: log-prob passes, advantages, the loss.

The RLlib Learner (`rllib_rpp.reinforce_pp.torch`) is glue around these; scripts without Ray
(e.g. a GPU check) call them directly with an `UpdateOptions`.
"""

from rllib_rpp.core.batch import prepare_batch
from rllib_rpp.core.logprobs import response_logprobs, trim_batch
from rllib_rpp.core.loss import minibatch_loss
from rllib_rpp.core.options import UpdateOptions

__all__ = ["UpdateOptions", "minibatch_loss", "prepare_batch", "response_logprobs", "trim_batch"]
