"""The option table and what is derived from it (no Ray): defaults, rules, setter docstrings and
README's tables. `python -m rllib_rpp.options` rewrites README's tables from the table.

    from rllib_rpp import options
    options.default("kl_coef")        # 0.01
    options.of_section("generation")  # the Options `config.generation(...)` sets
"""

from __future__ import annotations

import textwrap
from typing import Any

from rllib_rpp.options.rules import Rule
from rllib_rpp.options.table import MODEL_OPTIONS, OPTIONS, SECTIONS, Option

__all__ = ["MODEL_OPTIONS", "OPTIONS", "SECTIONS", "Option", "default", "of_section", "rules", "setter_doc",
           "readme_table"]

_BY_NAME = {o.name: o for o in OPTIONS}
_MODEL_BY_NAME = {o.name: o for o in MODEL_OPTIONS}


def default(name: str) -> Any:
    """An option's default (a config option, or a model_config key)."""
    option = _BY_NAME.get(name) or _MODEL_BY_NAME.get(name)
    if option is None:
        raise KeyError(f"{name!r} is not an option; options: {sorted(_BY_NAME)}; model_config keys: "
                       f"{sorted(_MODEL_BY_NAME)}")
    return option.default


def of_section(section: str) -> tuple[Option, ...]:
    """The options `config.<section>(...)` sets, in table order (RLlib's own included)."""
    if section not in SECTIONS and section != "model_config":
        raise KeyError(f"{section!r} is not a section; sections: {SECTIONS} and 'model_config'")
    return tuple(o for o in (MODEL_OPTIONS if section == "model_config" else OPTIONS) if o.section == section)


def rules(model_config: bool = False) -> dict[str, Rule]:
    """option -> rule, for every option that has one."""
    return {o.name: o.rule for o in (MODEL_OPTIONS if model_config else OPTIONS) if o.rule is not None}


def _shown(value: Any) -> str:
    return f"`{value}`" if isinstance(value, str) else f"{value!r}"


def setter_doc(section: str, summary: str) -> str:
    """A setter's docstring: the summary, then each option with its default, its rule and its doc."""
    lines = [summary, "", "Args:"]
    for o in of_section(section):
        if o.rllib:
            continue
        expected = f"; {o.rule[1]}" if o.rule else ""
        text = f"{o.name}: (default {_shown(o.default)}{expected}) {o.doc}"
        lines += textwrap.wrap(text, 96, initial_indent="    ", subsequent_indent="        ")
    return "\n".join(lines)


def readme_table(section: str) -> str:
    """README's table of a section's options (the README test compares it with README.md)."""
    rows = ["| option | default | |", "|---|---|---|"]
    for o in of_section(section):
        doc = o.doc.replace("|", "\\|")
        rows.append(f"| `{o.name}` | {_shown(o.default).replace('|', chr(92) + '|')} | {doc} |")
    return "\n".join(rows)


def readme_block(section: str) -> str:
    """The README block of a section: its markers and its table."""
    return f"<!-- options:{section} -->\n{readme_table(section)}\n<!-- /options:{section} -->"


def rewrite_readme(text: str) -> str:
    """README's text with each section's block (between its markers) regenerated from the table."""
    import re

    for section in (*SECTIONS, "model_config"):
        pattern = re.compile(rf"<!-- options:{section} -->.*?<!-- /options:{section} -->", re.S)
        block = readme_block(section)
        text = pattern.sub(lambda _, block=block: block, text)
    return text
