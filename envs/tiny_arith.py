"""The built-in model `tiny-arith`: a 0.5M-parameter Llama LM that half-knows addition.

Built on first use, deterministically from `RECIPE`: a character-level tokenizer over printable
ASCII, a randomly initialised 2-layer Llama, and a supervised warm-up on the arithmetic train
split that stops as soon as held-out greedy accuracy reaches `target_accuracy` (moderate on
purpose: RL needs room to improve and enough signal to start from). Saved in Hugging Face format,
so transformers and vLLM load it from its directory. (Llama rather than Qwen2: transformers 5
forces its own byte-level pre-tokenizer onto any `qwen2` checkpoint, which would drop spaces.)

`tiny-arith-verbose` is tiny-arith fine-tuned on answers of which `verbose_share` are padded
after the sum ("46 is the sum!"), as verbose SFT data is: a policy with room to grow, for the
reward-hacking benchmark (`benchmarks.paper_stability`).

Cached on disk (see `rpp_hub.cache`); `python -m rllib_rpp tiny-model [--rebuild]` prints where.
`RLLIB_RPP_TINY_ARITH_SEED=N` builds (and caches separately) the model warmed up from seed N:
other initial weights and batch order, the same data split. The suite must pass for any of them.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

from rpp_hub.cache import build_info, cached_dir, ensure_built
from rpp_hub.char_tokenizer import char_tokenizer

RECIPE = {
    "version": 2,
    "architecture": "LlamaForCausalLM",
    "seed": 0,
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "lr": 1e-3,
    "batch_size": 64,
    "target_accuracy": 0.30,
    "max_steps": 3000,
    "eval_every": 50,
    "max_new_tokens": 5,
}
# tiny-arith, fine-tuned for a fixed number of steps (no early stop) on answers of which a
# quarter are padded.
VERBOSE_RECIPE = {**RECIPE, "base": "tiny-arith", "verbose_share": 0.25, "max_steps": 50, "target_accuracy": 1.01}
# What verbose answers append after the sum: restatements and emphasis, never whitespace alone
# (an exact-match grader strips whitespace, so these always make the answer wrong).
PADDING = (" is the sum", "!", " ok", " ={answer}")
SPLIT_SEED = 0  # the train/eval split of the arithmetic task, the same for every warm-up seed


def tiny_arith_recipe() -> dict:
    """RECIPE, with the warm-up seed from $RLLIB_RPP_TINY_ARITH_SEED when it is set."""
    seed = os.environ.get("RLLIB_RPP_TINY_ARITH_SEED", "").strip()
    if not seed:
        return RECIPE
    try:
        return {**RECIPE, "seed": int(seed)}
    except ValueError:
        raise ValueError(f"RLLIB_RPP_TINY_ARITH_SEED={seed!r} is not an integer") from None
def padding(answer: str, rng: random.Random, pieces: int | None = None) -> str:
    """1-3 (or `pieces`) of PADDING, the text a verbose response puts after `answer`."""
    n = pieces if pieces is not None else rng.randint(1, 3)
    return "".join(rng.choice(PADDING).format(answer=answer) for _ in range(n))


def tiny_arith_dir() -> Path:
    recipe = tiny_arith_recipe()
    return cached_dir(f"tiny-arith-v{recipe['version']}", recipe)


def _log(msg: str) -> None:
    print(f"[tiny-arith] {msg}", file=sys.stderr, flush=True)


def build_tiny_arith(out_dir: str | Path, recipe: dict | None = None, log=_log) -> dict:
    """Build the model into `out_dir`; returns the build report."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from envs.evaluation import greedy_accuracy
    from envs.tasks.arithmetic import arithmetic_prompts

    recipe = recipe or tiny_arith_recipe()
    t0 = time.time()
    torch.manual_seed(recipe["seed"])
    tok = char_tokenizer(model_max_length=recipe["max_position_embeddings"])
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=recipe["hidden_size"],
        intermediate_size=recipe["intermediate_size"],
        num_hidden_layers=recipe["num_hidden_layers"],
        num_attention_heads=recipe["num_attention_heads"],
        num_key_value_heads=recipe["num_key_value_heads"],
        max_position_embeddings=recipe["max_position_embeddings"],
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if recipe.get("base"):  # fine-tune tiny-arith instead of starting from random weights
        if recipe["base"] != "tiny-arith":
            raise ValueError(f"recipe base {recipe['base']!r}: only 'tiny-arith' can be fine-tuned here")
        model = LlamaForCausalLM.from_pretrained(ensure_tiny_arith())
    else:
        model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"building: Llama {n_params / 1e6:.2f}M parameters, warm-up until held-out greedy "
        f"accuracy >= {recipe['target_accuracy']:.0%} (at most {recipe['max_steps']} steps)")

    train = arithmetic_prompts("train", seed=SPLIT_SEED)
    evals = arithmetic_prompts("eval", seed=SPLIT_SEED)
    # Sequences "<s>a+b=" + "sum</s>"; loss on the completion tokens only.
    prompt_ids = [tok(r["prompt"])["input_ids"] for r in train]
    answers = [r["answer"] for r in train]
    if recipe.get("verbose_share"):  # a share of answers padded after the sum
        rng = random.Random(recipe["seed"])
        answers = [a + padding(a, rng) if rng.random() < recipe["verbose_share"] else a for a in answers]
    answer_ids = [tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for a in answers]
    seqs = [p + a for p, a in zip(prompt_ids, answer_ids)]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    for i, (p, s) in enumerate(zip(prompt_ids, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, len(p) : len(s)] = torch.tensor(s[len(p) :])
    mask = (ids != tok.pad_token_id).long()

    gen = torch.Generator().manual_seed(recipe["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"])
    acc, step = 0.0, 0
    while step < recipe["max_steps"]:
        model.train()
        idx = torch.randint(len(seqs), (recipe["batch_size"],), generator=gen)
        loss = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % recipe["eval_every"] == 0:
            acc = greedy_accuracy(model, tok, evals, max_new_tokens=recipe["max_new_tokens"])
            log(f"step {step}: loss {loss.item():.3f}, held-out greedy accuracy {acc:.1%}")
            if acc >= recipe["target_accuracy"]:
                break
    report = {
        "parameters": n_params,
        "steps": step,
        "heldout_greedy_accuracy": acc,
        "build_seconds": round(time.time() - t0, 1),
        "recipe": recipe,
    }
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    log(f"built in {report['build_seconds']} s: {step} steps, held-out accuracy {acc:.1%} -> {out_dir}")
    return report


def ensure_tiny_arith(rebuild: bool = False) -> Path:
    """Directory of the built model, building it (once, under a lock) when missing."""
    return ensure_built(tiny_arith_dir(), build_tiny_arith, rebuild=rebuild)


def ensure_tiny_arith_verbose(rebuild: bool = False) -> Path:
    """Directory of `tiny-arith-verbose` (VERBOSE_RECIPE), built when missing."""
    key = {**VERBOSE_RECIPE, "base": tiny_arith_dir().name}  # rebuilt when the base changes
    return ensure_built(cached_dir(f"tiny-arith-verbose-v{VERBOSE_RECIPE['version']}", key),
                        lambda out: build_tiny_arith(out, VERBOSE_RECIPE), rebuild=rebuild)


def tiny_arith_info() -> dict:
    return build_info(ensure_tiny_arith())
