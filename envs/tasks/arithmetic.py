"""Two-number addition: prompt "a+b=", answer the decimal sum.

All pairs (a, b) with 0 <= a, b <= max_operand are split once, by a seeded permutation, into a
held-out eval set of `num_eval` pairs and a train set of the rest. The tiny model's warm-up and
RL training draw from `train`; accuracy is reported on `eval`.
"""

from __future__ import annotations

import random


def arithmetic_split(
    split: str = "train", *, max_operand: int = 99, num_eval: int = 500, seed: int = 0
) -> list[tuple[int, int]]:
    """The (a, b) pairs of one split ("train" or "eval"), in a fixed seeded order."""
    if split not in ("train", "eval"):
        raise ValueError(f"arithmetic split must be 'train' or 'eval', got {split!r}")
    if max_operand < 1:
        raise ValueError(f"max_operand must be >= 1, got {max_operand}")
    pairs = [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    if not 0 < num_eval < len(pairs):
        raise ValueError(f"num_eval must be in 1..{len(pairs) - 1}, got {num_eval}")
    random.Random(seed).shuffle(pairs)
    return pairs[:num_eval] if split == "eval" else pairs[num_eval:]


def arithmetic_prompts(split: str = "train", **kwargs) -> list[dict]:
    """Prompt records {"prompt": "12+34=", "answer": "46"} for `split` (see arithmetic_split)."""
    return [
        {"prompt": f"{a}+{b}=", "answer": str(a + b)}
        for a, b in arithmetic_split(split, **kwargs)
    ]
