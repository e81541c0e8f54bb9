"""A TorchRLModule wrapping a Hugging Face causal LM: the REINFORCE++ policy.

model_config: {"model": id | path | "tiny-arith", "dtype": "float32" | "bfloat16" | ...,
               "temperature": sampling temperature (log-probs are of logits / temperature)}
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.rl_module.torch import TorchRLModule

from envs.models import load_causal_lm
from rllib_rpp.functional import entropy_from_logits


def trim_batch(prompt_ids, prompt_mask, response_ids, response_mask):
    """Drop all-padding columns: prompts are left-padded, responses right-padded."""
    p = int(prompt_mask.sum(-1).max())
    r = max(int(response_mask.sum(-1).max()), 1)
    return prompt_ids[:, -p:], prompt_mask[:, -p:], response_ids[:, :r], response_mask[:, :r]


def response_logprobs(lm, prompt_ids, prompt_mask, response_ids, response_mask, *, temperature: float = 1.0,
                      with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(a_t | s_t) of each response token, [B, R] (0 at padding), and optionally entropy.

    Input is [left-padded prompt | right-padded response]; position ids count real tokens only,
    so a padded row gives the same log-probs as the unpadded sequence."""
    R = response_ids.shape[1]
    ids = torch.cat([prompt_ids, response_ids], dim=1)
    attn = torch.cat([prompt_mask, response_mask], dim=1).long()
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    # Logits at the last prompt token and each response token but the last predict the response.
    logits = lm(input_ids=ids, attention_mask=attn, position_ids=pos, logits_to_keep=R + 1).logits[:, :-1]
    logits = logits.float() / temperature
    logprobs = logits.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    mask = response_mask.to(logprobs.dtype)
    entropy = entropy_from_logits(logits) * mask if with_entropy else None
    return logprobs * mask, entropy


class CausalLMTorchRLModule(TorchRLModule):
    """forward_train -> {"logprobs": [B, R], "entropy": [B, R]} for the batch's responses."""

    def setup(self) -> None:
        cfg = self.model_config or {}
        self.lm = load_causal_lm(cfg.get("model", "tiny-arith"), dtype=cfg.get("dtype", "float32"))
        self.temperature = float(cfg.get("temperature", 1.0))
        self.with_entropy = bool(cfg.get("entropy_coef", 0.0))

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        prompt_ids, prompt_mask, response_ids, response_mask = trim_batch(
            batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"], batch["response_mask"])
        logprobs, entropy = response_logprobs(self.lm, prompt_ids, prompt_mask, response_ids, response_mask,
                                              temperature=self.temperature, with_entropy=self.with_entropy)
        return {"logprobs": logprobs, "entropy": entropy, "response_width": response_ids.shape[1]}

    def get_state(self, components=None, *, not_components=None, inference_only: bool = False, **kwargs):
        # Torch tensors, not numpy: keeps bf16/fp16 exact (numpy has no bf16). On CPU, so any
        # runner can load them (no copy when the learner is on CPU).
        return {k: v.detach().cpu() for k, v in self.state_dict().items()}

    def set_state(self, state) -> None:
        state = {k: (torch.as_tensor(v) if not isinstance(v, torch.Tensor) else v) for k, v in state.items()}
        self.load_state_dict(state, strict=True)
