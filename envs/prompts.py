"""Prompt sources, their tokenisation, and the seeded order in which an environment draws them.

A source is a list of strings, a list of dicts (`prompt` plus any extra columns such as
`answer`), a `.jsonl` file, a Hugging Face `datasets.Dataset`, or a built-in name
(`arithmetic`, `arithmetic-eval`). A `prompt` is either text or a chat (a list of
{"role", "content"} messages, TRL's conversational format).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BUILTIN_PROMPT_SOURCES = ("arithmetic", "arithmetic-eval")


@dataclass(frozen=True)
class PromptRecord:
    """One prompt: its position in the source, its text or chat, token ids and extra columns."""

    index: int
    prompt: str | list[dict]
    input_ids: tuple[int, ...]
    columns: Mapping[str, Any] = field(default_factory=dict)


def load_prompt_rows(source: Any, *, prompt_key: str = "prompt") -> list[dict]:
    """Rows (dicts with `prompt_key`) from any supported source; refuses an empty source."""
    if isinstance(source, str) and source in BUILTIN_PROMPT_SOURCES:
        from envs.tasks.arithmetic import arithmetic_prompts

        rows = arithmetic_prompts("eval" if source.endswith("-eval") else "train")
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix != ".jsonl" or not path.is_file():
            raise ValueError(
                f"prompt source {str(source)!r} is neither a built-in name "
                f"({', '.join(BUILTIN_PROMPT_SOURCES)}) nor an existing .jsonl file"
            )
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e})") from e
    elif _is_hf_dataset(source):
        rows = [dict(r) for r in source]
    elif isinstance(source, Sequence):
        rows = [{prompt_key: r} if isinstance(r, str) else r for r in source]
    else:
        raise TypeError(
            f"unsupported prompt source of type {type(source).__name__}; expected a list of "
            f"strings or dicts, a .jsonl path, a datasets.Dataset or one of {BUILTIN_PROMPT_SOURCES}"
        )
    if not rows:
        raise ValueError(f"the prompt source {_describe(source)} is empty: at least one prompt is needed")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"prompt row {i} is a {type(row).__name__}, expected a str or dict")
        if prompt_key not in row:
            raise KeyError(f"prompt row {i} has no {prompt_key!r} column (columns: {sorted(row)})")
        p = row[prompt_key]
        if not (isinstance(p, str) and p) and not (isinstance(p, list) and p):
            raise ValueError(f"prompt row {i}: {prompt_key!r} must be a non-empty string or chat, got {p!r}")
    return rows


def encode_prompts(
    rows: Sequence[Mapping],
    tokenizer,
    *,
    prompt_key: str = "prompt",
    apply_chat_template: bool | None = None,
    max_prompt_tokens: int | None = None,
    truncate: bool = False,
) -> list[PromptRecord]:
    """Tokenise every prompt once. Chats always go through the chat template; plain text does
    when `apply_chat_template=True`. Over-long prompts raise, or keep their last
    `max_prompt_tokens` tokens when `truncate=True`."""
    texts = []
    for row in rows:
        p = row[prompt_key]
        if isinstance(p, list) or apply_chat_template:
            messages = p if isinstance(p, list) else [{"role": "user", "content": p}]
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError("a chat template is needed (chat prompt or apply_chat_template=True) "
                                 "but the tokenizer has none")
            texts.append((tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), False))
        else:
            texts.append((p, True))
    records = []
    for i, ((text, add_special), row) in enumerate(zip(texts, rows)):
        ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
        if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
            if not truncate:
                raise ValueError(
                    f"prompt {i} is {len(ids)} tokens, more than max_prompt_tokens={max_prompt_tokens} "
                    f"(prompt: {str(row[prompt_key])[:80]!r}); raise the limit or set truncate_prompts=True"
                )
            ids = ids[-max_prompt_tokens:]
        columns = {k: v for k, v in row.items() if k != prompt_key}
        records.append(PromptRecord(i, row[prompt_key], tuple(ids), columns))
    return records


class PromptOrder:
    """Seeded, epoch-wise shuffled order over `n` prompts, optionally sharded i::num_shards.

    Each shard walks its own slice of the same permutation, so parallel samplers never draw
    the same prompt in an epoch. State is two integers (epoch, cursor): checkpoints restore it.
    """

    def __init__(self, n: int, *, seed: int = 0, shuffle: bool = True, shard_index: int = 0, num_shards: int = 1):
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index must be in 0..{num_shards - 1}, got {shard_index}")
        if n < num_shards:
            raise ValueError(f"{n} prompts cannot be split into {num_shards} shards")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.shard_index, self.num_shards = shard_index, num_shards
        self.epoch, self.cursor = 0, 0
        self._order = self._epoch_order()

    def _epoch_order(self) -> np.ndarray:
        order = np.arange(self.n)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        return order[self.shard_index :: self.num_shards]

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            if self.cursor == len(self._order):
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._epoch_order()
            step = min(k - len(out), len(self._order) - self.cursor)
            out += self._order[self.cursor : self.cursor + step].tolist()
            self.cursor += step
        return out

    def reseed(self, seed: int) -> None:
        self.seed, self.epoch, self.cursor = seed, 0, 0
        self._order = self._epoch_order()

    def get_state(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "cursor": self.cursor}

    def set_state(self, state: Mapping) -> None:
        self.seed, self.epoch, self.cursor = int(state["seed"]), int(state["epoch"]), int(state["cursor"])
        self._order = self._epoch_order()


def _is_hf_dataset(obj) -> bool:
    return type(obj).__module__.startswith("datasets.") and hasattr(obj, "column_names")


def _describe(source) -> str:
    return repr(source) if isinstance(source, (str, Path)) else f"({type(source).__name__})"
