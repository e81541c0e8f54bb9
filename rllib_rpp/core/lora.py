"""LoRA adapters through peft: only the adapters train; the frozen base with the adapters
disabled is the reference policy (no second copy of the model)."""

from __future__ import annotations

import torch


def add_lora(model, lora: dict, *, dtype: str = "float32"):
    """Wrap a causal LM with LoRA adapters {"r", "alpha" (default 2r), "target_modules"
    (default every linear layer but the output layer), "dropout" (default 0)}."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora["r"], lora_alpha=lora.get("alpha", 2 * lora["r"]),
                     target_modules=lora.get("target_modules") or "all-linear", lora_dropout=lora.get("dropout", 0.0),
                     bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    for p in peft_model.parameters():
        if p.requires_grad:
            p.data = p.data.to(getattr(torch, dtype))
    return peft_model


def merged_state_dict(peft_model) -> dict[str, torch.Tensor]:
    """The base model's state dict under its own names, each adapted weight W + s·B·A (fp32 sum)."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    deltas = {f"{name}.weight": module.get_delta_weight(adapter)
              for name, module in base.named_modules() if isinstance(module, LoraLayer)
              for adapter in module.active_adapters if adapter in module.lora_A}
    out = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        if key in deltas:
            value = (value.float() + deltas[key].float()).to(value.dtype)
        out[key] = value
    return out


def disabled_adapters(lm):
    """Context in which a peft model computes with its base weights only (π_ref)."""
    return lm.disable_adapter()
