"""reasoning-gym (PyPI `reasoning-gym`) as a task source: its procedural datasets as prompts, its
own verifiers as reward functions. Imported only when used.

A prompt source spec (accepted wherever a prompt source is: `env_config["prompts"]`,
`greedy_eval_prompts`, `--set`, YAML, Tune's param space):

    {"source": "reasoning_gym", "dataset": "chain_sum", "config": {"max_terms": 2, "max_digits": 1},
     "split": "train" | "eval", "size": 2000, "seed": 0, "eval_size": 64, "eval_seed": None,
     "instruction": " Reply with only the number.", "system_prompt": None, "chat": True}

Splits. reasoning-gym builds item i of a dataset from `Random(seed + i)`, so two seeds close
together give the same items shifted: the held-out split is drawn from `eval_seed` (default
`seed + 1_000_003`, a stream far from the train one) as the first `eval_size` *distinct*
questions, and the train split is the `size` items of `seed` whose question is not held out
(easy tasks have few distinct questions: one-digit two-term chain_sum has 200). No train
question is ever a held-out one; `disjoint` checks it, and the source refuses a spec where the
held-out split cannot be filled or leaves no train item.

Rows: `prompt` (a chat: an optional system message, then the question plus `instruction` as the
user message, so the model's chat template applies; with `chat=False` that text alone), `answer`
(the oracle string), `task` (the dataset name) and `task_entry` (the reasoning-gym entry its
verifier scores against).

Rewards (`reward_funcs` names): `reasoning_gym` scores 1.0 when the dataset's own verifier gives a
full score, else 0.0 (binary: the verifiers' partial credit, e.g. 0.2 for an answer that merely
contains the right one, trains worse); `reasoning_gym_partial` passes the verifier's score
through. Answer extraction from a free-text completion (`extract_answer`):
1. the content of the last `<answer>...</answer>` tag, when there is one;
2. else, when the oracle answer is a number, the last number in the completion ("3 + 4 = 7" -> "7");
3. else the whole completion, stripped.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

SOURCE = "reasoning_gym"
DEFAULT_INSTRUCTION = " Reply with only the number."
EVAL_SEED_OFFSET = 1_000_003
_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_NUMERIC = re.compile(r"\s*-?\d[\d,]*(?:\.\d+)?\s*")


def _datasets() -> dict:
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError as e:
        raise ValueError(f"the reasoning_gym task source needs the package reasoning-gym ({e}); install it with "
                         f"`pip install reasoning-gym==0.1.25` (or `pip install -e '.[real]'`: `make setup` does)"
                         ) from e

    return DATASETS


def create(dataset: str, config: Mapping | None, size: int, seed: int):
    """reasoning_gym.create_dataset, with errors that name the bad dataset, key or value."""
    import dataclasses

    registry = _datasets()
    if dataset not in registry:
        close = difflib.get_close_matches(str(dataset), registry, n=3)
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        raise ValueError(f"unknown reasoning-gym dataset {dataset!r}: {hint}(reasoning-gym {_version()} has "
                         f"{len(registry)} datasets, e.g. chain_sum, letter_counting, leg_counting, basic_arithmetic)")
    config = dict(config or {})
    dataset_cls, config_cls = registry[dataset]
    fields = [f.name for f in dataclasses.fields(config_cls) if f.name not in ("size", "seed")]
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for reasoning-gym dataset {dataset!r}; its options: {fields}")
    try:
        cfg = config_cls(**config, size=size, seed=seed)
        cfg.validate()
    except (AssertionError, TypeError, ValueError) as e:
        why = str(e) or type(e).__name__
        raise ValueError(f"invalid config {config} for reasoning-gym dataset {dataset!r}: {why}") from e
    return dataset_cls(config=cfg)


def _version() -> str:
    import importlib.metadata

    return importlib.metadata.version("reasoning-gym")


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"reasoning-gym source: {name}={value!r} is invalid: expected a positive integer")
    return value


def split_entries(dataset: str, *, config: Mapping | None = None, size: int = 2000, seed: int = 0,
                  eval_size: int = 64, eval_seed: int | None = None) -> tuple[list[dict], list[dict]]:
    """(train entries, held-out entries), disjoint in their questions (see the module docstring)."""
    _positive("size", size)
    _positive("eval_size", eval_size)
    eval_seed = seed + EVAL_SEED_OFFSET if eval_seed is None else eval_seed
    held_out: dict[str, dict] = {}
    pool = create(dataset, config, 20 * eval_size, eval_seed)
    for i in range(len(pool)):
        held_out.setdefault(pool[i]["question"], pool[i])
        if len(held_out) == eval_size:
            break
    if len(held_out) < eval_size:
        raise ValueError(f"reasoning-gym dataset {dataset!r} with config {dict(config or {})} gave only "
                         f"{len(held_out)} distinct questions in {len(pool)} draws, fewer than eval_size={eval_size}")
    train_pool = create(dataset, config, size, seed)
    train = [e for e in (train_pool[i] for i in range(size)) if e["question"] not in held_out]
    if not train:
        raise ValueError(f"every one of the {size} train items of reasoning-gym dataset {dataset!r} is also held out "
                         f"(the task has few distinct questions): lower eval_size={eval_size} or widen its config")
    return train, list(held_out.values())


def disjoint(train: Sequence[Mapping], held_out: Sequence[Mapping], key: str = "prompt") -> None:
    """Refuse a held-out row whose prompt is also a train prompt, naming it."""
    seen = {repr(r[key]) for r in train}
    for j, r in enumerate(held_out):
        if repr(r[key]) in seen:
            raise ValueError(f"held-out row {j} is also a train prompt: {str(r[key])[:120]!r}")


def to_row(entry: Mapping, dataset: str, instruction: str, system_prompt: str | None, chat: bool = True) -> dict:
    text = entry["question"] + instruction
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": text})
    return {"prompt": messages if chat else text, "answer": str(entry["answer"]), "task": dataset,
            "task_entry": {"question": entry["question"], "answer": entry["answer"], "metadata": entry["metadata"]}}


def rows(*, dataset: str, config: Mapping | None = None, split: str = "train", size: int = 2000, seed: int = 0,
         eval_size: int = 64, eval_seed: int | None = None, instruction: str = DEFAULT_INSTRUCTION,
         system_prompt: str | None = None, chat: bool = True) -> list[dict]:
    """The prompt rows of one split (the task source entry point; options as in the module docstring)."""
    if split not in ("train", "eval"):
        raise ValueError(f"reasoning-gym source: split={split!r} is invalid: expected 'train' or 'eval'")
    if not isinstance(instruction, str):
        raise ValueError(f"reasoning-gym source: instruction={instruction!r} is invalid: expected a string")
    train, held_out = split_entries(dataset, config=config, size=size, seed=seed, eval_size=eval_size,
                                    eval_seed=eval_seed)
    if system_prompt is not None and not chat:
        raise ValueError("reasoning-gym source: system_prompt needs chat=True (a plain-text prompt has no system turn)")
    return [to_row(e, dataset, instruction, system_prompt, chat) for e in (train if split == "train" else held_out)]


def spec(dataset: str, split: str = "train", **options) -> dict:
    """The prompt-source spec of one split; `spec(name, "eval", **same)` is its held-out twin."""
    return {"source": SOURCE, "dataset": dataset, "split": split, **options}


# --- rewards ---------------------------------------------------------------------------------

def extract_answer(text: str, oracle: Any = None) -> str:
    """The answer in a free-text completion (the rule is in the module docstring)."""
    tagged = _TAG.findall(text)
    if tagged:
        return tagged[-1].strip()
    if oracle is not None and _NUMERIC.fullmatch(str(oracle)):
        numbers = _NUMBER.findall(text)
        return numbers[-1].replace(",", "") if numbers else text.strip()
    return text.strip()


@functools.cache
def _scorer(dataset: str):
    from reasoning_gym import get_score_answer_fn

    return get_score_answer_fn(dataset)


def _text(completion) -> str:
    return "".join(m.get("content", "") for m in completion) if isinstance(completion, list) else completion


def verify(completions, task_entry, *, partial: bool = False) -> list[float | None]:
    """The dataset's own verifier on each extracted answer: binary (full score or not) or partial."""
    out: list[float | None] = []
    for c, entry in zip(completions, task_entry):
        if entry is None:
            out.append(None)
            continue
        s = float(_scorer(entry["metadata"]["source_dataset"])(extract_answer(_text(c), entry["answer"]), entry))
        out.append(s if partial else float(s >= 1.0 - 1e-9))
    return out


def reasoning_gym_reward(completions, task_entry, **kwargs) -> list[float | None]:
    """1.0 when reasoning-gym's verifier fully accepts the extracted answer, else 0.0."""
    return verify(completions, task_entry)


def reasoning_gym_partial_reward(completions, task_entry, **kwargs) -> list[float | None]:
    """reasoning-gym's verifier score (partial credit included) of the extracted answer."""
    return verify(completions, task_entry, partial=True)
