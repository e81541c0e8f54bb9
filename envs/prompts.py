"""Prompt sources, their tokenisation, and the seeded order in which an environment draws them.

A source is a list of strings, a list of dicts (`prompt` plus any extra columns such as
`answer`), a `.jsonl` file, a Hugging Face `datasets.Dataset`, a built-in name
(`arithmetic`, `arithmetic-eval`), or a task source's spec, a dict `{"source": name, ...}` of
`TASK_SOURCES` (`reasoning_gym`: see `envs.tasks.reasoning_gym`; `openenv`: `envs.tasks.openenv_adapter`;
`mixture`, several sources with weights: `envs.tasks.mixture`). A `prompt` is either text or a chat (a list of
{"role", "content"} messages with string values, TRL's conversational format); any other shape is
refused with an error naming the row. Characters the tokenizer cannot encode are reported by a
warning (they reach the model as its unknown token).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rpp_hub.registry import Registry

BUILTIN_PROMPT_SOURCES = ("arithmetic", "arithmetic-eval")
# Task sources, given as a dict {"source": name, **its options}: name -> "module:function(**options) -> rows".
TASK_SOURCES = Registry("task source", callable, kind_name="function returning prompt rows", paths=False, entries={
    "reasoning_gym": "envs.tasks.reasoning_gym:rows",
    "openenv": "envs.tasks.openenv_adapter:rows",
    "mixture": "envs.tasks.mixture:rows",
})


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
    elif isinstance(source, Mapping):
        rows = task_source_rows(source)
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
        check_prompt(row[prompt_key], i, prompt_key)
    return rows


def task_source_rows(spec: Mapping) -> list[dict]:
    """The rows of a task source's spec `{"source": name, **options}`, errors naming the bad name or option."""
    import inspect

    name = spec.get("source")
    if name not in TASK_SOURCES:
        raise ValueError(f"prompt source {dict(spec)!r}: a dict names a task source with its 'source' key, one of "
                         f"{sorted(TASK_SOURCES)}; got source={name!r}")
    fn = TASK_SOURCES.resolve(name)
    options = {k: v for k, v in spec.items() if k != "source"}
    accepted = [p for p in inspect.signature(fn).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for the {name!r} task source; its options: {accepted}")
    return fn(**options)


CHAT_FORMAT = 'a chat is a list of {"role": str, "content": str} messages'


def check_prompt(prompt: Any, row: int, prompt_key: str = "prompt") -> None:
    """Refuse anything but a non-empty string or a well-formed chat, naming the row and the problem."""
    where = f"prompt row {row}: {prompt_key!r}"
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError(f"{where} must be a non-empty string or chat, got ''")
        return
    if not isinstance(prompt, list) or not prompt:
        raise ValueError(f"{where} must be a non-empty string or chat ({CHAT_FORMAT}), got {_clip(prompt)}")
    for j, m in enumerate(prompt):
        if not isinstance(m, Mapping):
            hint = " (for plain text, give the prompt as a string, not a list)" if isinstance(m, str) else ""
            raise ValueError(f"{where} is a list, read as a chat, but message {j} is a {type(m).__name__} "
                             f"({_clip(m)}), not a dict: {CHAT_FORMAT}{hint}")
        for key in ("role", "content"):
            if key not in m:
                raise ValueError(f"{where}: chat message {j} has no {key!r} (its keys: {sorted(map(str, m))}); "
                                 f"{CHAT_FORMAT}")
            if not isinstance(m[key], str):
                raise ValueError(f"{where}: chat message {j} has {_clip(m[key])} ({type(m[key]).__name__}) "
                                 f"as its {key!r}, expected a str; {CHAT_FORMAT}")


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
    for i, row in enumerate(rows):
        if prompt_key not in row:
            raise KeyError(f"prompt row {i} has no {prompt_key!r} column (columns: {sorted(row)})")
        p = row[prompt_key]
        check_prompt(p, i, prompt_key)
        if isinstance(p, list) or apply_chat_template:
            messages = p if isinstance(p, list) else [{"role": "user", "content": p}]
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError("a chat template is needed (chat prompt or apply_chat_template=True) "
                                 "but the tokenizer has none")
            texts.append((tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), False))
        else:
            texts.append((p, True))
    records = []
    unk_id, unk_rows = getattr(tokenizer, "unk_token_id", None), []
    for i, ((text, add_special), row) in enumerate(zip(texts, rows)):
        ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
        if unk_id is not None and unk_id in ids:
            unk_rows.append((i, text))
        if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
            if not truncate:
                raise ValueError(
                    f"prompt {i} is {len(ids)} tokens, more than max_prompt_tokens={max_prompt_tokens} "
                    f"(prompt: {str(row[prompt_key])[:80]!r}); raise the limit or set truncate_prompts=True"
                )
            ids = ids[-max_prompt_tokens:]
        columns = {k: v for k, v in row.items() if k != prompt_key}
        records.append(PromptRecord(i, row[prompt_key], tuple(ids), columns))
    if unk_rows:
        _warn_unencodable(tokenizer, unk_rows)
    return records


def _warn_unencodable(tokenizer, unk_rows: list[tuple[int, str]]) -> None:
    """One warning for a whole source: the first prompt row and character that became the unknown
    token, and how many rows have such characters. (A literal unknown-token string is not reported.)"""
    unk_id, unk = tokenizer.unk_token_id, tokenizer.unk_token
    for n, (i, text) in enumerate(unk_rows):
        bad = None
        for ch in dict.fromkeys(text):  # distinct characters, in order of first appearance
            if unk_id in tokenizer(ch, add_special_tokens=False)["input_ids"]:
                bad = ch
                break
        if bad is None and unk and unk in text:
            continue
        what = f"the character {bad!r} (U+{ord(bad):04X})" if bad else "part of the text"
        others = len(unk_rows) - n - 1
        more = f"; {others} later prompt row(s) also contain {unk!r} once encoded" if others else ""
        warnings.warn(
            f"prompt row {i}: the tokenizer cannot encode {what}, so the model sees {unk!r} instead "
            f"(prompt: {text[:80]!r}){more}",
            UserWarning, stacklevel=3,
        )
        return


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


def _clip(x, n: int = 60) -> str:
    s = repr(x)
    return s if len(s) <= n else s[: n - 3] + "..."


def _describe(source) -> str:
    return repr(source) if isinstance(source, (str, Path)) else f"({type(source).__name__})"
