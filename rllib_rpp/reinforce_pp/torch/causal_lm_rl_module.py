"""A TorchRLModule wrapping a Hugging Face causal LM: the REINFORCE++ policy.

model_config: {"model": id | path | "tiny-arith", "dtype": "float32" | "bfloat16" | ...,
               "temperature": sampling temperature (log-probs are of logits / temperature)}
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from envs.models import load_causal_lm
from rllib_rpp.core.logprobs import response_logprobs


class CausalLMTorchRLModule(TorchRLModule):
    """forward_train -> {"logprobs": [B, R], "entropy": [B, R] or None} for the batch's responses."""

    @override(RLModule)
    def setup(self) -> None:
        cfg = self.model_config or {}
        self.lm = load_causal_lm(cfg.get("model", "tiny-arith"), dtype=cfg.get("dtype", "float32"))
        self.temperature = float(cfg.get("temperature", 1.0))
        self.with_entropy = bool(cfg.get("entropy_coef", 0.0))

    @override(RLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        logprobs, entropy = response_logprobs(self.lm, batch, temperature=self.temperature,
                                              with_entropy=self.with_entropy)
        return {"logprobs": logprobs, "entropy": entropy}

    @override(TorchRLModule)
    def get_state(self, components=None, *, not_components=None, inference_only: bool = False, **kwargs):
        # Torch tensors, not numpy (RLlib's default): keeps bf16/fp16 exact (numpy has no bf16).
        # On CPU, so any runner can load them (no copy when the learner is on CPU).
        return {k: v.detach().cpu() for k, v in self.state_dict().items()}

    @override(TorchRLModule)
    def set_state(self, state) -> None:
        state = {k: (torch.as_tensor(v) if not isinstance(v, torch.Tensor) else v) for k, v in state.items()}
        self.load_state_dict(state, strict=True)
