"""A TorchRLModule wrapping a Hugging Face causal LM: the REINFORCE++ policy.

model_config:
    model: id | path | "tiny-arith" | "random:<shape>"
    param_dtype: master weights (and so the optimizer state), default "float32"
    dtype: compute dtype of the forward passes (bf16 autocast over fp32 weights) and the dtype
        the env runners serve (weights are cast to it when sent), default "float32"
    gradient_checkpointing: recompute each decoder layer in backward (default False)
    lora: {"r", "alpha", "target_modules", "dropout"}: train peft LoRA adapters (param_dtype)
        on a frozen base (dtype); the base with adapters disabled is the reference policy
    temperature, entropy_coef, entropy_in_forward, logprob_chunk_tokens, sharded: filled in by the
        config (entropy_in_forward: the training forward measures the entropy, as there is no π_old
        pass to do it; sharded: `config.sharded`)

Sharded (learner_strategy="fsdp" over several learners), only rank 0 reads the weights (the others
build the model on the meta device and receive their shards once the learner has sharded it), and
the state is collective: the learner gathers the full state (`set_full_state`) before RLlib
reads it from rank 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from rllib_rpp.core.fsdp import is_sharded, load_full_model_state
from rllib_rpp.core.logprobs import DEFAULT_CHUNK_TOKENS, response_logprobs
from rllib_rpp.core.lora import add_lora, merged_state_dict
from rpp_hub.models import load_causal_lm, meta_causal_lm


class CausalLMTorchRLModule(TorchRLModule):
    """forward_train -> {"logprobs": [B, R], "entropy": [B, R] or None} for the batch's responses."""

    @override(RLModule)
    def setup(self) -> None:
        cfg = self.model_config or {}
        self.compute_dtype = cfg.get("dtype") or "float32"
        self.param_dtype = cfg.get("param_dtype") or "float32"
        self.lora = cfg.get("lora")
        self._full_state: dict | None = None  # gathered by the learner when the weights are sharded
        model = cfg.get("model", "tiny-arith")
        if self.lora:  # a frozen base in the compute dtype, adapters in the master dtype
            self.lm = add_lora(load_causal_lm(model, dtype=self.compute_dtype), self.lora, dtype=self.param_dtype)
        elif cfg.get("sharded") and dist.is_initialized() and dist.get_rank() > 0:
            self.lm = meta_causal_lm(model, dtype=self.param_dtype)  # shards arrive from rank 0
        else:
            self.lm = load_causal_lm(model, dtype=self.param_dtype)
        if cfg.get("gradient_checkpointing"):
            self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.temperature = float(cfg.get("temperature", 1.0))
        self.with_entropy = bool(cfg.get("entropy_coef", 0.0)) or bool(cfg.get("entropy_in_forward", False))
        self.chunk_tokens = int(cfg.get("logprob_chunk_tokens", DEFAULT_CHUNK_TOKENS))

    @override(RLModule)
    def _forward(self, batch: dict[str, Any], with_entropy: bool | None = None, **kwargs) -> dict[str, Any]:
        with_entropy = self.with_entropy if with_entropy is None else with_entropy
        logprobs, entropy = response_logprobs(self.lm, batch, temperature=self.temperature,
                                              with_entropy=with_entropy, chunk_tokens=self.chunk_tokens)
        return {"logprobs": logprobs, "entropy": entropy}

    def set_full_state(self, state: dict | None) -> None:
        """The gathered full state of sharded weights (rank 0), for the next get_state calls."""
        self._full_state = state

    def _state_dict(self) -> dict[str, torch.Tensor]:
        if is_sharded(self):
            if self._full_state is None:
                raise RuntimeError("the policy's weights are sharded over the learners: its full state is gathered "
                                   "by all of them together (ReinforcePP stages it before reading it)")
            return self._full_state
        return self.state_dict()

    def hf_state_dict(self, dtype: str | torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The policy under Hugging Face names (LoRA adapters merged), on CPU, in `dtype`
        (default: as held)."""
        return dict(self.hf_tensors(dtype, device="cpu"))

    def hf_tensors(self, dtype: str | torch.dtype | None, device, *,
                   gather: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """hf_state_dict's tensors one at a time, cast on `device` (the learner's GPU for the NCCL
        path: one tensor's copy at a time, no host round trip). Sharded with `gather`: every
        learner iterates it together, each tensor gathered in turn (collective)."""
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if self.lora:
            state = merged_state_dict(self.lm)
        elif gather and is_sharded(self):  # the same on every rank (rank 0 may hold a gathered copy)
            state = self.state_dict()  # this learner's shards: each tensor is gathered when reached
        else:
            state = self._state_dict()
        for k, v in state.items():
            if self.lora or k.startswith("lm."):
                v = v.full_tensor() if hasattr(v, "full_tensor") else v
                yield (k if self.lora else k[len("lm."):]), v.detach().to(device=device, dtype=dtype or v.dtype)

    @override(TorchRLModule)
    def get_state(self, components=None, *, not_components=None, inference_only: bool = False, **kwargs):
        # Torch tensors, not numpy (RLlib's default): keeps bf16/fp16 exact (numpy has no bf16).
        if inference_only:
            # What env runners load: Hugging Face names (the "lm." prefix mapped once, in hf_tensors),
            # merged weights in the rollout dtype (half the bytes for bf16).
            return self.hf_state_dict(self.compute_dtype)
        # Checkpoints: the master weights (with LoRA only the adapters: the base is the model id).
        return {k: v.detach().cpu() for k, v in self._state_dict().items()
                if not self.lora or k in self._trainable_names()}

    @override(TorchRLModule)
    def set_state(self, state) -> None:
        state = {k: (torch.as_tensor(v) if not isinstance(v, torch.Tensor) else v) for k, v in state.items()}
        self._full_state = None
        if is_sharded(self):  # every learner takes its shards of the full state
            load_full_model_state(self, state)
            self._full_state = state if dist.get_rank() == 0 else None  # what RLlib reads next
            return
        if not self.lora:
            self.load_state_dict(state, strict=True)
            return
        missing = self._trainable_names() - set(state)
        unexpected = set(state) - self._trainable_names()
        if missing or unexpected:
            raise KeyError(f"LoRA policy state: missing adapter weights {sorted(missing)[:3]}, unexpected "
                           f"{sorted(unexpected)[:3]} (was it saved with the same lora settings?)")
        self.load_state_dict(state, strict=False)

    def _trainable_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}
