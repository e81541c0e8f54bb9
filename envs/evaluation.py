"""Greedy evaluation of a causal LM on prompt records (no sampling, no RL machinery)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


@torch.no_grad()
def greedy_completions(
    model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 512
) -> list[str]:
    """Decoded greedy completions of `prompts`, batched with left padding."""
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[i : i + batch_size]), return_tensors="pt", padding=True)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            gen = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def greedy_accuracy(
    model,
    tokenizer,
    records: Sequence[dict],
    *,
    max_new_tokens: int,
    is_correct: Callable[[str, dict], bool] | None = None,
) -> float:
    """Fraction of records whose greedy completion is correct (default: equals `answer`)."""
    if not records:
        raise ValueError("greedy_accuracy needs at least one record")
    completions = greedy_completions(
        model, tokenizer, [r["prompt"] for r in records], max_new_tokens=max_new_tokens
    )
    check = is_correct or (lambda c, r: c.strip() == str(r["answer"]))
    return sum(check(c, r) for c, r in zip(completions, records)) / len(records)
