"""Any config option from the command line or a YAML file: `section.key=value` onto a config.

A section is one of the config's fluent methods (`training`, `generation`, `env_runners`, ...),
a key one of its keyword arguments; `--set training.lr=1e-5` calls `config.training(lr=1e-5)`.
Keys past the argument reach into its dict: `--set rl_module.model_config.dtype=bfloat16` merges
`{"dtype": "bfloat16"}` into the current `model_config`. Values are parsed as JSON where they parse
(`1e-5`, `true`, `[0.1, 0.2]`, `null`) and kept as strings otherwise. An unknown section or key is
a ValueError naming the closest valid one.
"""

from __future__ import annotations

import difflib
import inspect
import json
from pathlib import Path
from typing import Any

# The config methods a user sets options through (RLlib's and this package's own).
SECTIONS = ("training", "generation", "evaluation", "rewards", "environment", "rl_module", "env_runners",
            "learners", "resources", "fault_tolerance", "checkpointing", "reporting", "debugging", "framework")
# Attributes a method's keyword argument is stored under, where the names differ.
_STORED_AS = {"model_config": "_model_config"}
_PLAIN = (type(None), bool, int, float, str)
# RLlib moved these from `training` to `learners` (`training(...)` still takes them, with a warning).
_MOVED = {"training": ("learner_class", "add_default_connectors_to_learner_pipeline", "learner_config_dict")}


def section_keys(config, section: str) -> list[str]:
    """The keyword arguments of `config.<section>(...)` that the config stores as attributes, over
    every class that defines the method (ours extend RLlib's through **kwargs)."""
    names = {}
    for klass in type(config).__mro__:
        method = klass.__dict__.get(section)
        if method is None:
            continue
        for name, p in inspect.signature(method).parameters.items():
            deprecated = type(p.default) is int and p.default == -1  # RLlib's DEPRECATED_VALUE
            named = name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            moved = name in _MOVED.get(section, ())
            if named and not deprecated and not moved and _has(config, _STORED_AS.get(name, name)):
                names.setdefault(name, None)
    return list(names)


def _has(config, attr: str) -> bool:
    try:
        getattr(config, attr)
        return True
    except Exception:  # RLlib's deprecated properties raise on access
        return False


def _closest(word: str, choices, what: str) -> str:
    near = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"did you mean {near[0]!r}?" if near else f"valid {what}: {', '.join(sorted(choices))}"


def parse_value(text: str) -> Any:
    """JSON where it parses (numbers, true/false/null, lists, dicts), the string otherwise."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_set(item: str) -> tuple[list[str], Any]:
    """`training.lr=1e-5` -> (["training", "lr"], 1e-05)."""
    key, sep, value = item.partition("=")
    path = key.strip().split(".")
    if not sep or len(path) < 2 or not all(path):
        raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. training.lr=1e-5 "
                         f"(sections: {', '.join(SECTIONS)})")
    return path, parse_value(value.strip())


def load_file(path) -> list[tuple[list[str], Any]]:
    """A YAML (or JSON) file of sections, `{training: {lr: 1.0e-5}, generation: {...}}`, as
    (path, value) pairs. Strings that read as JSON numbers are numbers (YAML reads `1e-5` as text)."""
    import yaml

    text = Path(path).read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"--config {path}: not valid YAML: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"--config {path}: expected sections of options, e.g. 'training:\\n  lr: 1.0e-5', "
                         f"got {type(data).__name__}")
    pairs = []
    for section, options in data.items():
        for key, value in options.items():
            if isinstance(value, str):
                parsed = parse_value(value)
                value = parsed if isinstance(parsed, int | float) and not isinstance(parsed, bool) else value
            pairs.append(([str(section), str(key)], value))
    return pairs


def apply(config, overrides: list[tuple[list[str], Any]]):
    """Apply (path, value) pairs in order; returns the config. Unknown names are refused before
    anything is applied."""
    for path, _ in overrides:
        _check(config, path)
    for (section, key, *inner), value in overrides:
        if inner:
            current = getattr(config, _STORED_AS.get(key, key)) or {}
            value = _merged(dict(current), inner, value, f"{section}.{key}")
        getattr(config, section)(**{key: value})
    return config


def _check(config, path: list[str]) -> None:
    section, key, *inner = path
    dotted = ".".join(path)
    if section not in SECTIONS:
        raise ValueError(f"unknown config section {section!r} in {dotted!r}: {_closest(section, SECTIONS, 'sections')}")
    keys = section_keys(config, section)
    if key not in keys:
        elsewhere = [s for s in SECTIONS if s != section and key in section_keys(config, s)]
        hint = f"{key!r} is in section {elsewhere[0]!r}" if elsewhere else _closest(key, keys, f"{section} keys")
        raise ValueError(f"unknown key {key!r} in section {section!r} ({dotted!r}): {hint}")
    if inner and not isinstance(getattr(config, _STORED_AS.get(key, key)) or {}, dict):
        raise ValueError(f"{dotted!r}: {section}.{key} is not a dict of options, set it whole with "
                         f"--set {section}.{key}=VALUE")


def _merged(current: dict, inner: list[str], value, where: str) -> dict:
    head, *rest = inner
    if rest:
        below = current.get(head) or {}
        if not isinstance(below, dict):
            raise ValueError(f"{where}.{head} is {below!r}, not a dict: cannot set {where}.{'.'.join(inner)}")
        value = _merged(dict(below), rest, value, f"{where}.{head}")
    current[head] = value
    return current


def resolved(config) -> dict[str, dict[str, Any]]:
    """Every section's options as the config holds them (plain values only: classes, callables
    and other objects are left out, so the result is valid input for `--config`)."""
    out = {}
    for section in SECTIONS:
        values = {}
        for key in section_keys(config, section):
            value = getattr(config, _STORED_AS.get(key, key))
            if _is_plain(value):
                values[key] = list(value) if isinstance(value, tuple) else value
        out[section] = values
    return out


def _is_plain(value) -> bool:
    if type(value) in _PLAIN:  # exact types: str-valued enums are not plain
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def flat(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`{"training": {"lr": 1e-5}}` -> `{"training.lr": 1e-5}` (hyperparameters for trackers)."""
    return {f"{s}.{k}": v for s, options in sections.items() for k, v in options.items()}
