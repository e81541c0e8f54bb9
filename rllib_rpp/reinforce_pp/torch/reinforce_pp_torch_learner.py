"""REINFORCE++ TorchLearner: log-prob passes, advantages (globally whitened) and the loss."""

from __future__ import annotations

import torch
import torch.distributed as dist
import tree
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.torch.torch_learner import TorchLearner

from envs.models import load_causal_lm
from rllib_rpp import functional as F
from rllib_rpp.reinforce_pp.connectors import chunked
from rllib_rpp.reinforce_pp.reinforce_pp_learner import ReinforcePPLearner
from rllib_rpp.reinforce_pp.torch.causal_lm_rl_module import response_logprobs, trim_batch

_TOKEN_KEYS = ("prompt_ids", "prompt_mask", "response_ids", "response_mask")


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every learner (gloo/NCCL, set up by RLlib's LearnerGroup); identity for one."""
    if _world_size() > 1:
        x = x.clone()
        dist.all_reduce(x)
    return x


class ReinforcePPTorchLearner(ReinforcePPLearner, TorchLearner):
    # -- the two log-prob passes -----------------------------------------------------------
    def build_reference_model(self) -> None:
        mc = self.config.model_config
        ref = mc.get("ref_model") or mc.get("model", "tiny-arith")
        self.ref_lm = load_causal_lm(ref, dtype=mc.get("dtype", "float32")).to(self._device).eval()
        self.ref_lm.requires_grad_(False)

    def _policy(self):
        module = self.module[DEFAULT_MODULE_ID]
        return module.unwrapped() if hasattr(module, "unwrapped") else module

    def _logprobs(self, lm, batch, with_entropy=False):
        temperature = self.config.temperature
        entropy_out = []

        def fn(*cols):
            lp, ent = response_logprobs(lm, *trim_batch(*cols), temperature=temperature, with_entropy=with_entropy)
            if with_entropy:
                entropy_out.append(torch.nn.functional.pad(ent, (0, batch["response_ids"].shape[1] - ent.shape[1])))
            return lp

        lp = chunked(fn, batch, _TOKEN_KEYS, self.config.logprob_batch_size)
        return lp, (torch.cat(entropy_out) if with_entropy else None)

    @torch.no_grad()
    def policy_logprobs(self, batch):
        module = self._policy()
        was_training = module.training
        module.eval()
        try:
            lp, entropy = self._logprobs(module.lm, batch, with_entropy=True)
        finally:
            module.train(was_training)
        batch["entropy"] = entropy
        return lp

    @torch.no_grad()
    def reference_logprobs(self, batch):
        return self._logprobs(self.ref_lm, batch)[0]

    # -- advantages ------------------------------------------------------------------------
    def _drop_nonfinite(self, b) -> None:
        """NaN/inf log-probs never reach the loss: raise (default) or drop those responses."""
        mask = b["response_mask"] > 0
        bad = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
        for key in ("old_logprobs", "ref_logprobs", "sampler_logprobs"):
            rows = (~torch.isfinite(b[key]) & mask).any(-1)
            if rows.any() and self.config.nonfinite_logprobs == "error":
                raise FloatingPointError(
                    f"{key} contain NaN/inf in {int(rows.sum())} of {len(rows)} responses (first: row "
                    f"{int(rows.nonzero()[0])}); no update was applied. Check the model weights and dtype, or "
                    f"set nonfinite_logprobs='mask' to leave such responses out (they are counted)")
            bad |= rows
        if bad.any():
            b["response_mask"] = b["response_mask"] * (~bad).unsqueeze(-1)
            for key in ("old_logprobs", "ref_logprobs", "sampler_logprobs"):
                b[key] = torch.nan_to_num(b[key], nan=0.0, posinf=0.0, neginf=0.0)
        self.metrics.log_value((DEFAULT_MODULE_ID, "nonfinite_responses"), int(bad.sum()), reduce="sum")

    @torch.no_grad()
    def compute_batch_advantages(self, b) -> None:
        cfg = self.config
        self._drop_nonfinite(b)
        mask = b["response_mask"]
        in_reward = cfg.uses_kl_in_reward
        res = F.token_advantages(
            b["scores"], b["old_logprobs"], b["ref_logprobs"], mask, estimator=cfg.advantage_estimator,
            kl_coef=self.kl_coef if in_reward else 0.0, kl_estimator=cfg.kl_estimator_used,
            gamma=cfg.gamma, std_normalize=cfg.advantage_std_norm, all_reduce=all_reduce_sum,
        )
        b["advantages"] = res.advantages
        self.last_advantages = (res.advantages, mask)  # this shard's, for inspection and tests
        if cfg.tis_cap is not None:
            b["is_weights"] = F.truncated_is_weights(b["old_logprobs"], b["sampler_logprobs"], cfg.tis_cap)
        # Batch statistics, global over learners.
        kl = F.token_kl(b["old_logprobs"], b["ref_logprobs"], cfg.kl_estimator_used) * mask
        k1 = (b["old_logprobs"] - b["ref_logprobs"]) * mask
        gap = (b["sampler_logprobs"] - b["old_logprobs"]).abs() * mask
        adv = res.advantages[mask > 0]
        sums = all_reduce_sum(torch.stack([
            kl.sum(), k1.sum(), mask.sum(), mask.new_tensor(float(mask.shape[0])), gap.sum(),
            (b["entropy"] * mask).sum(), adv.sum(), adv.square().sum(),
        ]).double())
        n_tok, n_seq = sums[2].clamp(min=1), sums[3]
        self._kl_per_seq, self._num_seqs = (sums[0] / n_seq).item(), int(n_seq.item())
        adv_mean = sums[6] / n_tok
        stats = {
            "kl_ref_per_token": sums[0] / n_tok,
            "kl_ref_per_seq": sums[0] / n_seq,
            "kl_ref_k1_per_token": sums[1] / n_tok,
            "kl_ref_k1_per_seq": sums[1] / n_seq,  # same estimator whatever is penalised: comparable
            "entropy": sums[5] / n_tok,
            "logprob_mismatch_mean": sums[4] / n_tok,
            "logprob_mismatch_max": gap.max(),
            "advantage_mean": adv_mean,
            "advantage_std": (sums[7] / n_tok - adv_mean**2).clamp(min=0).sqrt(),
            "advantage_min": adv.min() if adv.numel() else 0.0,
            "advantage_max": adv.max() if adv.numel() else 0.0,
            "response_tokens": sums[2],
        }
        for k, v in stats.items():
            self.metrics.log_value((DEFAULT_MODULE_ID, k), float(v), window=1)

    def log_connector_timings(self, *, old_s: float, ref_s: float, adv_s: float) -> None:
        for k, v in (("old_logprobs_s", old_s), ("ref_logprobs_s", ref_s), ("advantages_s", adv_s)):
            self.metrics.log_value((DEFAULT_MODULE_ID, "timers", k), v, window=1)

    # -- checkpoints -----------------------------------------------------------------------
    def _get_optimizer_state(self):
        # Torch tensors, not numpy (RLlib's default): exact for bf16/fp16 optimizer state.
        def snapshot(x):
            return x.detach().cpu().clone() if isinstance(x, torch.Tensor) else x

        return {
            name: {"module_id": self._optimizer_name_to_module[name],
                   "state": tree.map_structure(snapshot, optim.state_dict())}
            for name, optim in self._named_optimizers.items()
        }

    # -- loss ------------------------------------------------------------------------------
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        w = fwd_out["response_width"]
        mask = batch["response_mask"][:, :w]
        logprobs = fwd_out["logprobs"]
        # Normalise by the optimizer step's global counts (DDP averages gradients over learners).
        world = _world_size()
        counts = all_reduce_sum(torch.stack([mask.sum(), mask.new_tensor(float(mask.shape[0]))]))
        num_tokens, num_seqs = counts[0] / world, counts[1] / world
        agg = dict(num_tokens=num_tokens, num_seqs=num_seqs)
        pl = F.clipped_policy_loss(
            logprobs, batch["old_logprobs"][:, :w], batch["advantages"][:, :w], mask,
            clip_low=config.clip_low, clip_high=config.clip_high, dual_clip=config.dual_clip,
            loss_agg_mode=config.loss_agg_mode,
            is_weights=batch["is_weights"][:, :w] if "is_weights" in batch else None, **agg,
        )
        loss = pl.loss
        if not config.uses_kl_in_reward and self.kl_coef > 0:
            kl = F.token_kl(logprobs, batch["ref_logprobs"][:, :w], config.kl_estimator_used)
            kl_loss = F.aggregate_loss(kl, mask, config.loss_agg_mode, **agg)
            loss = loss + self.kl_coef * kl_loss
            self.metrics.log_value((module_id, "kl_loss"), kl_loss.item(), reduce="mean")
        if config.entropy_coef:
            entropy = F.aggregate_loss(fwd_out["entropy"], mask, config.loss_agg_mode, **agg)
            loss = loss - config.entropy_coef * entropy
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss is {loss.item()} (policy loss {pl.loss.item()}); the optimizer "
                                     f"step was not taken, the weights are unchanged by this mini-batch")
        for k, v in (("policy_loss", pl.loss), ("clip_fraction", pl.clip_fraction),
                     ("dual_clip_fraction", pl.dual_clip_fraction), ("ratio_mean", pl.ratio_mean),
                     ("ratio_max", pl.ratio_max), ("approx_kl_old", pl.approx_kl)):
            self.metrics.log_value((module_id, k), v.item(), reduce="mean")
        return loss
