"""The built-in character-level tokenizer (tiny-arith's, and the random models' of real shapes):
printable ASCII and newline after <pad>, <s>, </s>, <unk>, with a role-prefixed chat template."""

from __future__ import annotations

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = [chr(i) for i in range(32, 127)] + ["\n"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def char_tokenizer(vocab_size: int | None = None, *, model_max_length: int | None = None):
    """A transformers fast tokenizer over SPECIAL_TOKENS + CHARS, padded with filler tokens up to
    `vocab_size` entries when given (a real model's vocabulary size)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    names = SPECIAL_TOKENS + CHARS
    if vocab_size is not None:
        if vocab_size < len(names):
            raise ValueError(f"vocab_size={vocab_size} is smaller than the {len(names)} characters and specials")
        names += [f"<x{i}>" for i in range(vocab_size - len(names))]
    vocab = {t: i for i, t in enumerate(names)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                 unk_token="<unk>")
    hf.chat_template = CHAT_TEMPLATE
    if model_max_length is not None:
        hf.model_max_length = model_max_length
    return hf
