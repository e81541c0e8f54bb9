"""REINFORCE++ TorchLearner: glue between RLlib and the compute core (`rllib_rpp.core`)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import tree
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.learner import Learner
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from envs.models import load_causal_lm
from rllib_rpp import schema as S
from rllib_rpp.core.batch import prepare_batch
from rllib_rpp.core.loss import minibatch_loss
from rllib_rpp.reinforce_pp.reinforce_pp_learner import ReinforcePPLearner


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every learner (gloo/NCCL, set up by RLlib's LearnerGroup); identity for one."""
    if _world_size() > 1:
        x = x.clone()
        dist.all_reduce(x)
    return x


class ReinforcePPTorchLearner(ReinforcePPLearner, TorchLearner):
    def build_reference_model(self) -> None:
        mc = self.config.model_config
        ref = mc.get("ref_model") or mc.get("model", "tiny-arith")
        self.ref_lm = load_causal_lm(ref, dtype=mc.get("dtype", "float32")).to(self._device).eval()
        self.ref_lm.requires_grad_(False)

    def policy_lm(self):
        module = self.module[DEFAULT_MODULE_ID]
        return (module.unwrapped() if hasattr(module, "unwrapped") else module).lm

    @override(ReinforcePPLearner)
    def prepare_batch(self, batch: dict) -> None:
        stats = prepare_batch(self.policy_lm(), self.ref_lm, batch, self.options, kl_coef=self.kl_coef,
                              all_reduce=all_reduce_sum)
        self._kl_per_seq = stats["kl_ref_per_seq"]
        self._num_seqs = int(stats["num_seqs"])
        self.last_advantages = (batch[S.ADVANTAGES], batch[S.RESPONSE_MASK])  # this shard's, for tests
        for k in ("old_logprobs_s", "ref_logprobs_s", "advantages_s"):
            self.metrics.log_value((DEFAULT_MODULE_ID, "timers", k), stats.pop(k), window=1)
        self.metrics.log_value((DEFAULT_MODULE_ID, "nonfinite_responses"), stats.pop("nonfinite_responses"),
                               reduce="sum")
        for k, v in stats.items():
            self.metrics.log_value((DEFAULT_MODULE_ID, k), v, window=1)

    @override(TorchLearner)
    def _get_optimizer_state(self):
        # Torch tensors, not numpy (RLlib's default): exact for bf16/fp16 optimizer state.
        def snapshot(x):
            return x.detach().cpu().clone() if isinstance(x, torch.Tensor) else x

        return {
            name: {"module_id": self._optimizer_name_to_module[name],
                   "state": tree.map_structure(snapshot, optim.state_dict())}
            for name, optim in self._named_optimizers.items()
        }

    @override(Learner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        mask = batch[S.RESPONSE_MASK]
        # Normalise by the optimizer step's global counts (DDP averages gradients over learners).
        world = _world_size()
        counts = all_reduce_sum(torch.stack([mask.sum(), mask.new_tensor(float(mask.shape[0]))]))
        loss, metrics = minibatch_loss(fwd_out["logprobs"], fwd_out["entropy"], batch, self.options,
                                       kl_coef=self.kl_coef, num_tokens=counts[0] / world, num_seqs=counts[1] / world)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss is {loss.item()} (policy loss {metrics['policy_loss'].item()}); the "
                                     f"optimizer step was not taken, the weights are unchanged by this mini-batch")
        for k, v in metrics.items():
            self.metrics.log_value((module_id, k), v.item(), reduce="mean")
        return loss
