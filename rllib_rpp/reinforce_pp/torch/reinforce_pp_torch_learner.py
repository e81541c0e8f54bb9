"""REINFORCE++ TorchLearner: glue between RLlib and the compute core (`rllib_rpp.core`).

Where it departs from RLlib's TorchLearner (each override says why): the optimizer holds only
trainable parameters (LoRA); one mini-batch update runs as several micro-batches by a token
budget with accumulated gradients, one fused finite check and one optimizer step; and with
`learner_strategy="fsdp"` the policy and the reference are sharded (FSDP2) instead of wrapped
in DDP, with collective state (see `fsdp.py`).
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import torch
import torch.distributed as dist
import tree
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.learner import Learner
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from rllib_rpp import schema as S
from rllib_rpp.core import fsdp
from rllib_rpp.core.batch import prepare_batch
from rllib_rpp.core.logprobs import LogprobModule
from rllib_rpp.core.lora import disabled_adapters
from rllib_rpp.core.loss import microbatch_loss
from rllib_rpp.core.options import Collectives
from rllib_rpp.core.update import accumulate_gradients, check_finite_weights, clip_and_check, step_counts
from rllib_rpp.reinforce_pp.reinforce_pp_learner import ReinforcePPLearner
from rllib_rpp.weight_sync.engines import SENDERS, metadata
from rpp_hub.models import load_causal_lm, meta_causal_lm

_GRAD_NORM = "gradients_default_optimizer_global_norm"


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every learner (gloo/NCCL, set up by RLlib's LearnerGroup); identity for one."""
    if _world_size() > 1:
        x = x.clone()
        dist.all_reduce(x)
    return x


def all_reduce_max_int(n: int, device: torch.device) -> int:
    """The largest `n` of any learner. The tensor lives on the learner's `device`: NCCL reduces
    CUDA tensors only (a CPU tensor fails: "No backend type associated with device type cpu")."""
    if _world_size() == 1:
        return n
    x = torch.tensor([n], dtype=torch.float64, device=device)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return int(x.item())


class ReinforcePPTorchLearner(ReinforcePPLearner, TorchLearner):
    @property
    def sharded(self) -> bool:
        return self.config.sharded

    @override(TorchLearner)
    def _make_module(self):
        # FSDP: shard the policy before the optimizer is built over its (now DTensor) weights;
        # ranks > 0 built it on the meta device and receive their shards from rank 0.
        if not self.sharded:
            return super()._make_module()
        module = Learner._make_module(self)
        self._shard(module[DEFAULT_MODULE_ID], module[DEFAULT_MODULE_ID].lm)
        return module

    def _shard(self, root: torch.nn.Module, lm) -> None:
        full = None
        if _rank() == 0:
            root.to(self._device)
            full = dict(root.state_dict())
        d = self.config.dtypes
        fsdp.shard(root, lm, device_type=self._device.type, param_dtype=d["param"], compute_dtype=d["compute"])
        fsdp.materialize_from_rank0(root, full, self._device)

    @override(TorchLearner)
    def _make_modules_ddp_if_necessary(self) -> None:
        if not self.sharded:  # FSDP-sharded modules are not wrapped in DDP
            super()._make_modules_ddp_if_necessary()

    def build_reference_model(self) -> None:
        # π_ref as a log-prob module (the core's one model interface), built once, at the options' temperature.
        mc, opts = self.config.model_config, self.options
        wrap = partial(LogprobModule, temperature=opts.temperature, chunk_tokens=opts.logprob_chunk_tokens)
        self._ref_context = nullcontext
        if mc.get("lora"):  # the policy with its adapters disabled is the reference: no second model
            lm = self.policy_lm()
            self.ref_lm, self._ref_context = wrap(lm), partial(disabled_adapters, lm)
            return
        ref, dtype = mc.get("ref_model") or mc.get("model", "tiny-arith"), self.config.dtypes["ref"]
        if self.sharded:
            lm = load_causal_lm(ref, dtype=dtype) if _rank() == 0 else meta_causal_lm(ref, dtype=dtype)
            self.ref_lm = wrap(lm.requires_grad_(False)).eval()
            self._shard(self.ref_lm, lm)
            return
        self.ref_lm = wrap(load_causal_lm(ref, dtype=dtype).to(self._device).eval().requires_grad_(False)).eval()

    def policy_module(self):
        module = self.module[DEFAULT_MODULE_ID]
        return module.unwrapped() if hasattr(module, "unwrapped") else module

    def policy_lm(self):
        return self.policy_module().lm

    def policy_state_dict(self, dtype: str | None = None) -> dict[str, torch.Tensor]:
        """The policy under Hugging Face names (LoRA merged) on CPU, in `dtype` (default: the
        master weights' dtype). Collective when sharded: every learner calls it; rank 0 gets it."""
        if self.sharded:
            self.stage_full_state(optimizer=False)
            if _rank() != 0:
                return {}
        return self.policy_module().hf_state_dict(dtype or self.options.param_dtype)

    def stage_full_state(self, optimizer: bool = True) -> None:
        """Gather sharded state (every learner takes part) so that rank 0's next get_state calls,
        which RLlib makes on learner 0 alone, return the full state."""
        if not self.sharded:
            return
        module = self.policy_module()
        full = fsdp.full_model_state(module)
        module.set_full_state(full if _rank() == 0 else None)
        self._full_optimizer_state = None
        if optimizer:
            released = self.config.release_memory_between_updates
            if released:  # NCCL gathers device tensors only
                self._move_optimizer_state(self._device)
            states = {name: fsdp.full_optimizer_state(module, optim) for name, optim in self._named_optimizers.items()}
            self._full_optimizer_state = states if _rank() == 0 else None
            if released:
                self._move_optimizer_state("cpu")

    # -- weight-transfer engine: rank 0 broadcasts to every vLLM runner ----------------------
    def weight_transfer_endpoint(self) -> tuple[str, int] | None:
        """Rank 0's address and a free port for the transfer group's rendezvous."""
        if _rank() != 0:
            return None
        import socket

        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def connect_weight_transfer(self, address: str, port: int, world_size: int, engine: str,
                                timeout_s: float) -> None:
        """Rank 0 joins the group of transfer `engine` ("gloo" | "nccl") as its source (blocks until
        every runner has joined)."""
        self.close_weight_transfer()
        self._transfer_engine = engine
        if _rank() == 0:
            self._sender = SENDERS.resolve(engine)(address, port, world_size, timeout_s=timeout_s)
            self._sender.connect()

    def weight_metadata(self) -> dict | None:
        """Names, dtypes and shapes of what `send_weights` sends (collective when sharded)."""
        state = self.policy_state_dict(self.options.compute_dtype)
        self._transfer_count = len(state) if _rank() == 0 else None
        return metadata(state) if _rank() == 0 else None

    def send_weights(self, version: int) -> None:
        """Broadcast the policy in the rollout dtype (collective when sharded: every learner calls).
        NCCL: each tensor gathered and cast on this learner's GPU and sent as it comes; gloo: the
        CPU state dict."""
        dtype = self.options.compute_dtype
        if self._transfer_engine == "nccl":
            tensors = (t for _, t in self.policy_module().hf_tensors(dtype, self._device, gather=self.sharded))
        else:
            tensors = iter(self.policy_state_dict(dtype).values())
        if _rank() == 0:
            self._sender.send(tensors, self._transfer_count, version)
        else:
            for _ in tensors:  # the other learners take part in each tensor's gather
                pass

    def close_weight_transfer(self) -> None:
        sender = getattr(self, "_sender", None)
        if sender is not None:
            sender.close()
        self._sender = None

    def save_adapter(self, path) -> None:
        """peft's `save_pretrained` of the LoRA adapter (learner 0 writes)."""
        if _rank() == 0:
            self.policy_lm().save_pretrained(str(path))

    @override(ReinforcePPLearner)
    def after_gradient_based_update(self, *, timesteps) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        if self.config.release_memory_between_updates:  # the GPU goes to a colocated vLLM runner
            self.last_batch = None
            for p in self._params.values():  # 4 B per parameter; the next update starts from zero anyway
                p.grad = None
            self._move_optimizer_state("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _move_optimizer_state(self, device) -> None:
        """Adam's moments to `device` and back (colocated layouts hand the GPU to vLLM between
        updates). Sharded state stays a DTensor whose local shard moves: it must be back on the
        learner's device before any collective reads it (`stage_full_state`)."""
        for optim in self._named_optimizers.values():
            for state in optim.state.values():
                for k, v in state.items():
                    if isinstance(v, torch.Tensor) and k != "step":
                        state[k] = v.to(device, non_blocking=True)

    def _collectives(self, no_sync=nullcontext) -> Collectives:
        """This learner's collectives over every learner of the group (torch.distributed)."""
        return Collectives(world_size=_world_size(), all_reduce=all_reduce_sum,
                           agree_count=partial(all_reduce_max_int, device=self._device), no_sync=no_sync)

    @override(ReinforcePPLearner)
    def prepare_batch(self, batch: dict) -> None:
        if self.config.release_memory_between_updates:
            self._move_optimizer_state(self._device)
        module = self.policy_module()
        module.set_full_state(None)  # the weights are about to change: drop any gathered copy
        # Sharded weights are gathered inside each log-prob module's root call.
        stats = prepare_batch(module, self.ref_lm, batch, self.options, kl_coef=self.kl_coef,
                              collectives=self._collectives(), ref_context=self._ref_context)
        self._kl_per_seq = stats["kl_ref_per_seq"]
        self._num_seqs = int(stats["num_seqs"])
        self.last_batch = batch  # this shard's token batch with Â and π_old (inspection and tests)
        self._measure_sampler_gap = self.options.old_logprobs == "sampler"
        if self._measure_sampler_gap:  # π_old = the sampler's: its gap and the entropy come from the update steps
            stats = {k: v for k, v in stats.items() if not k.startswith("logprob_mismatch") and k != "entropy"}
        for k in ("old_logprobs_s", "ref_logprobs_s", "advantages_s"):
            self.metrics.log_value((DEFAULT_MODULE_ID, "timers", k), stats.pop(k), window=1)
        self.metrics.log_value((DEFAULT_MODULE_ID, "nonfinite_responses"), stats.pop("nonfinite_responses"),
                               reduce="sum")
        for k, v in stats.items():
            self.metrics.log_value((DEFAULT_MODULE_ID, k), v, window=1)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        # Only trainable parameters (LoRA: the adapters), so frozen weights get no Adam state.
        params = [p for p in self.get_parameters(self._module[module_id]) if p.requires_grad]
        self.register_optimizer(module_id=module_id, optimizer=torch.optim.Adam(params), params=params,
                                lr_or_lr_schedule=config.lr)

    @override(TorchLearner)
    def _uncompiled_update(self, batch: dict, **kwargs):
        # RLlib runs one forward/backward per mini-batch; here the mini-batch is split into
        # micro-batches by a token budget whose gradients accumulate before the one step. The
        # module is entered through its call (DDP and FSDP hook in there); DDP defers its
        # all-reduce to the last micro-batch (FSDP reduce-scatters each one: bounded memory).
        mid = DEFAULT_MODULE_ID
        module = self.module[mid]
        for optim in self._optimizer_parameters:
            optim.zero_grad(set_to_none=True)
        loss, metrics = accumulate_gradients(
            module, batch[mid], self.options, kl_coef=self.kl_coef,
            max_tokens=self.options.max_tokens_per_microbatch,
            collectives=self._collectives(no_sync=getattr(module, "no_sync", nullcontext)),
            autocast=lambda: self.options.autocast(self._device.type),
            sampler_gap=getattr(self, "_measure_sampler_gap", False), entropy=self.options.old_logprobs == "sampler")
        self._measure_sampler_gap = False
        params = list(self._params.values())
        norm = clip_and_check(params, self.config.grad_clip)
        for optim in self._optimizer_parameters:
            optim.step()
        check_finite_weights(params, all_reduce_sum if self.sharded else None)
        metrics[_GRAD_NORM] = float(norm)
        for k, v in metrics.items():
            self.metrics.log_value((mid, k), v, reduce="mean")
        return {}, {mid: loss}, {}

    @override(TorchLearner)
    def _get_optimizer_state(self):
        # Torch tensors, not numpy (RLlib's default): exact for bf16/fp16 optimizer state.
        # Sharded: the full state gathered by `stage_full_state`.
        if self.sharded:
            if getattr(self, "_full_optimizer_state", None) is None:
                raise RuntimeError("the optimizer state is sharded over the learners: it is gathered by all of them "
                                   "together (ReinforcePP stages it before a checkpoint)")
            states = self._full_optimizer_state
        else:
            states = {name: optim.state_dict() for name, optim in self._named_optimizers.items()}

        def snapshot(x):
            return x.detach().cpu().clone() if isinstance(x, torch.Tensor) else x

        return {name: {"module_id": self._optimizer_name_to_module[name], "state": tree.map_structure(snapshot, s)}
                for name, s in states.items()}

    @override(TorchLearner)
    def _set_optimizer_state(self, state) -> None:
        if not self.sharded:
            return super()._set_optimizer_state(state)
        module = self.policy_module()
        for name, entry in state.items():  # every learner takes its shards of the full state
            fsdp.load_full_optimizer_state(module, self._named_optimizers[name], entry["state"])

    @override(Learner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        # The whole batch's loss in one piece (the update itself goes micro-batch by micro-batch).
        num_tokens, num_seqs = step_counts(batch[S.LOSS_MASK], self._collectives())
        loss, _ = microbatch_loss(fwd_out["logprobs"], fwd_out["entropy"], batch, self.options, kl_coef=self.kl_coef,
                                 num_tokens=num_tokens, num_seqs=num_seqs)
        return loss
