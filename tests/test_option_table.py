"""The option table is the one place an option is written: the config's defaults and setters, its
validation, the learner's UpdateOptions, the text env's shared defaults, the CLI's --set keys and
README's tables all agree with it."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from envs.text_env_config import TextEnvConfig
from rllib_rpp import ReinforcePPConfig, options
from rllib_rpp.app.overrides import section_keys
from rllib_rpp.core.options import UpdateOptions

README = Path(__file__).resolve().parents[1] / "README.md"
OURS = [o for o in options.OPTIONS if not o.rllib]


def test_readme_tables_are_the_option_table():
    text = README.read_text()
    for section in (*options.SECTIONS, "model_config"):
        assert options.readme_block(section) in text, f"README's {section} table is stale: python -m rllib_rpp.options"
    assert options.rewrite_readme(text) == text


def test_the_readme_check_sees_a_changed_default():
    text = README.read_text()
    stale = text.replace("| `kl_coef` | 0.01 |", "| `kl_coef` | 0.02 |")
    assert stale != text and options.rewrite_readme(stale) == text


def test_a_fresh_config_holds_every_default_of_the_table():
    config = ReinforcePPConfig()
    for o in options.OPTIONS:
        assert getattr(config, o.name) == o.default, o.name
    assert config.model_config["model"] == options.default("model")
    assert config.sampler_kwargs is not options.default("sampler_kwargs")  # each config its own dict


@pytest.mark.parametrize("section", options.SECTIONS)
def test_each_section_setter_sets_exactly_its_options_and_documents_them(section):
    config = ReinforcePPConfig()
    setter = getattr(config, section)
    for o in options.of_section(section):
        assert o.name in section_keys(config, section), o.name  # the CLI's --set key
        if not o.rllib:
            assert f"{o.name}: (default" in setter.__doc__, o.name
            marker = object()
            setter(**{o.name: marker})
            assert getattr(config, o.name) is marker, o.name
    params = inspect.signature(type(config).__dict__[section]).parameters
    assert {p for p in params if p not in ("self", "kwargs")} == {o.name for o in options.of_section(section)
                                                                  if not o.rllib}


def test_a_section_without_an_rllib_setter_refuses_an_unknown_option_naming_it():
    with pytest.raises(TypeError, match=r"generation\(\) got unknown option\(s\) \['max_new_token'\].*max_new_tokens"):
        ReinforcePPConfig().generation(max_new_token=3)


def test_every_rule_accepts_its_default_and_validation_names_a_bad_value():
    for o in [*options.OPTIONS, *options.MODEL_OPTIONS]:
        if o.rule is not None:
            assert o.rule[0](o.default), o.name
    bad = object()
    for o in OURS:
        if o.rule is None:
            continue
        config = ReinforcePPConfig()
        setattr(config, o.name, bad)
        with pytest.raises(ValueError, match=rf"{o.name}=<object object at .*> is invalid: expected"):
            config.validate()


def test_update_options_take_the_table_defaults_and_the_config_values():
    resolved = set(UpdateOptions._RESOLVED)
    fields = {f.name: f for f in dataclasses.fields(UpdateOptions)}
    for name, f in fields.items():
        if name not in resolved:
            assert f.default == options.default(name), name
    config = ReinforcePPConfig().training(clip_low=0.1, logprob_chunk_tokens=64).generation(max_new_tokens=9)
    opts = UpdateOptions.from_config(config)
    assert (opts.clip_low, opts.logprob_chunk_tokens, opts.max_new_tokens) == (0.1, 64, 9)


def test_options_shared_with_the_text_env_have_its_defaults():
    env_fields = {f.name: f.default for f in dataclasses.fields(TextEnvConfig)}
    shared = [o for o in options.OPTIONS if o.name in env_fields]
    assert {o.name for o in shared} >= {"max_new_tokens", "reward_timeout_s", "on_reward_error", "reward_dtype",
                                        "reward_backend"}
    for o in shared:
        assert o.default == env_fields[o.name], o.name


def test_every_option_is_in_one_section_and_named_once():
    names = [o.name for o in options.OPTIONS]
    assert len(names) == len(set(names))
    assert {o.section for o in options.OPTIONS} == set(options.SECTIONS)
    with pytest.raises(KeyError, match="'kl_cof' is not an option"):
        options.default("kl_cof")
