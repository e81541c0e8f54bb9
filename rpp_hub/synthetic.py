"""Random-initialised models of real shapes, built locally (nothing can be downloaded here).

`random:<shape>` works wherever a model name does (`resolve_model_path`): the model is built from
the config below with random weights, saved in Hugging Face format next to a character-level
tokenizer padded to the model's vocabulary size, and cached. For memory and speed checks only:
the weights know nothing. Llama architecture throughout (Qwen2.5 shapes use attention biases,
as Qwen2 does; transformers 5 would force a byte-level pre-tokenizer onto a `qwen2` checkpoint).
"""

from __future__ import annotations

from pathlib import Path

from rpp_hub.cache import cached_dir, ensure_built
from rpp_hub.char_tokenizer import char_tokenizer

# name -> (vocab, hidden, intermediate, layers, heads, kv heads, tied embeddings, attention bias)
SHAPES: dict[str, tuple] = {
    "qwen2.5-0.5b": (151936, 896, 4864, 24, 14, 2, True, True),
    "qwen2.5-1.5b": (151936, 1536, 8960, 28, 12, 2, True, True),
    "qwen2.5-7b": (152064, 3584, 18944, 28, 28, 4, False, True),
    "llama-3.1-8b": (128256, 4096, 14336, 32, 32, 8, False, False),
    # Qwen2.5's vocabulary with a small body: the learner's memory is dominated by the logits.
    "qwen-vocab-tiny": (151936, 64, 256, 2, 4, 2, True, True),
    # The generation-heavy benchmark model: 10.7M parameters over the built-in character vocabulary.
    "gen-10m": (100, 384, 1024, 6, 6, 6, False, False),
    # ~106M parameters (untied 32k vocabulary): the weight-sync benchmark.
    "sync-100m": (32000, 768, 2048, 8, 12, 12, False, False),
}
VERSION = 1


def model_config(shape: str, *, max_position_embeddings: int = 4096):
    """A transformers LlamaConfig of the named shape."""
    from transformers import LlamaConfig

    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; expected one of {sorted(SHAPES)}")
    vocab, hidden, inter, layers, heads, kv, tied, bias = SHAPES[shape]
    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=tied,
                       attention_bias=bias, max_position_embeddings=max_position_embeddings, rms_norm_eps=1e-6,
                       rope_theta=1e6, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def build_random_model(out_dir: str | Path, shape: str, *, seed: int = 0) -> dict:
    """Random-init model of `shape` and its padded tokenizer, saved with `save_pretrained`."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = model_config(shape)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.save_pretrained(out_dir)
    tok = char_tokenizer(cfg.vocab_size, model_max_length=cfg.max_position_embeddings)
    tok.save_pretrained(out_dir)
    return {"shape": shape, "parameters": sum(p.numel() for p in model.parameters()), "seed": seed}


def ensure_random_model(shape: str, rebuild: bool = False) -> Path:
    """The cached directory of `random:<shape>`, built on first use."""
    model_config(shape)  # unknown shapes fail before anything is built
    final = cached_dir(f"random-{shape}-v{VERSION}", {"shape": shape, "version": VERSION})
    return ensure_built(final, lambda out: build_random_model(out, shape), rebuild=rebuild)
