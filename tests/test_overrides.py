"""Any option from the command line: --set SECTION.KEY=VALUE, --config FILE, show-config."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rllib_rpp.app import overrides
from rllib_rpp.app.cli import build_parser
from rllib_rpp.app.presets import tiny_arith

ROOT = Path(__file__).resolve().parents[1]


def _apply(*items):
    return overrides.apply(tiny_arith(), [overrides.parse_set(i) for i in items])


def test_set_reaches_every_section_and_nested_dicts():
    config = _apply("training.lr=1e-5", "generation.max_new_tokens=7", "training.reward_clip=[-3, 3]",
                    "rl_module.model_config.dtype=bfloat16", "environment.env_config.reward_funcs=[\"exact_match\"]",
                    "training.advantage_estimator=grpo", "evaluation.greedy_eval_prompts=null",
                    "env_runners.num_env_runners=1", "debugging.seed=7")
    assert config.lr == 1e-5 and config.max_new_tokens == 7 and config.reward_clip == [-3, 3]
    assert config.advantage_estimator == "grpo" and config.greedy_eval_prompts is None
    assert config.num_env_runners == 1 and config.seed == 7
    # Nested keys merge into the dict: the rest of the preset's model_config and env_config stays.
    assert config._model_config == {"model": "tiny-arith", "dtype": "bfloat16"}
    assert config.env_config["prompts"] == "arithmetic" and config.env_config["reward_funcs"] == ["exact_match"]


@pytest.mark.parametrize("item, message", [
    ("trainig.lr=1e-5", "unknown config section 'trainig' in 'trainig.lr': did you mean 'training'?"),
    ("training.lrr=1e-5", "unknown key 'lrr' in section 'training' ('training.lrr'): did you mean 'lr'?"),
    ("training.max_new_tokens=5", "'max_new_tokens' is in section 'generation'"),
    ("generation.max_new_token=5", "did you mean 'max_new_tokens'?"),
    ("rl_module.model_config.dtype.x=1", "rl_module.model_config.dtype is 'float32', not a dict"),
    ("training.lr.x=1", "training.lr is not a dict of options"),
    ("lr=1e-5", "expected SECTION.KEY=VALUE"),
    ("training.lr", "expected SECTION.KEY=VALUE"),
])
def test_unknown_sections_and_keys_name_the_closest_valid_one(item, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        _apply(item)


def test_a_typo_is_refused_before_anything_is_applied():
    config = tiny_arith()
    with pytest.raises(ValueError, match="did you mean 'kl_coef'"):
        overrides.apply(config, [overrides.parse_set("training.lr=1e-5"), overrides.parse_set("training.kl_cof=1")])
    assert config.lr == 2e-4


def test_a_config_file_has_the_keys_of_set_and_show_config_round_trips(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("training:\n  lr: 1e-5\n  kl_coef: 0.05\ngeneration:\n  max_new_tokens: 6\n")
    config = overrides.apply(tiny_arith(), overrides.load_file(run))
    assert config.lr == 1e-5 and config.kl_coef == 0.05 and config.max_new_tokens == 6  # YAML's "1e-5" is a number
    dumped = tmp_path / "all.yaml"
    dumped.write_text(yaml.safe_dump(overrides.resolved(config)))
    again = overrides.apply(tiny_arith(), overrides.load_file(dumped))
    assert overrides.resolved(again) == overrides.resolved(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: 3\n")
    with pytest.raises(ValueError, match="expected sections of options"):
        overrides.load_file(bad)


def test_cli_show_config_prints_the_resolved_config_with_overrides_and_names_typos(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("training:\n  lr: 3.0e-4\n  kl_coef: 0.05\n")
    proc = subprocess.run([sys.executable, "-m", "rllib_rpp", "show-config", "tiny-arith", "--config", str(run),
                           "--set", "training.kl_coef=0.2", "--set", "generation.max_new_tokens=8"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = yaml.safe_load(proc.stdout)
    assert shown["training"]["lr"] == 3e-4 and shown["training"]["kl_coef"] == 0.2  # --set after --config
    assert shown["generation"]["max_new_tokens"] == 8 and shown["rl_module"]["model_config"]["model"] == "tiny-arith"
    proc = subprocess.run([sys.executable, "-m", "rllib_rpp", "show-config", "tiny-arith", "--set",
                           "generaton.max_new_tokens=8"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and "did you mean 'generation'?" in proc.stderr


def test_train_flags_that_a_preset_or_resume_would_ignore_are_refused():
    from rllib_rpp.app.cli import main

    for argv, message in (
        (["train", "tiny-arith", "--colocate"], "--colocate: options of the math/general presets"),
        (["train", "tiny-arith", "--gpus", "4"], "--gpus: options of the math/general presets"),
        (["train", "tiny-arith", "--checkpoint-every", "5"], "--checkpoint-every needs --checkpoint-dir"),
        (["train", "tiny-arith", "--resume", "x", "--lr", "1e-3", "--set", "training.kl_coef=0"],
         "--lr, --set would be ignored"),
        (["train", "math", "--model", "m", "--prompts", "no-such.jsonl"], "--prompts no-such.jsonl: no such file"),
    ):
        with pytest.raises(SystemExit, match=message):
            main(argv)
    assert build_parser().parse_args(["train", "tiny-arith", "--set", "a.b=1", "--set", "c.d=2"]).set == ["a.b=1",
                                                                                                         "c.d=2"]


@pytest.mark.parametrize("item, message", [
    ("training.lr=abc", "lr='abc' is invalid: expected a finite number > 0"),
    ("training.num_epochs=1.5", "num_epochs=1.5 is invalid: expected an integer >= 1"),
    ("generation.max_new_tokens=abc", "max_new_tokens='abc' is invalid: expected an integer >= 1"),
    ("rewards.on_reward_error=sometimes", "on_reward_error='sometimes' is invalid: expected 'raise', 'skip' or"),
])
def test_show_config_and_train_refuse_a_wrong_type_before_anything_is_made(item, message, tmp_path, monkeypatch):
    """show-config printed `lr: abc` as valid YAML, and train left an empty runs/<preset>-<time>/
    behind (issue 30): both check the config as build_algo does, train before Ray or a directory."""
    from rllib_rpp.app import driver
    from rllib_rpp.app.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(driver, "init_ray", lambda log: pytest.fail("Ray was started for a refused config"))
    for command in ("show-config", "train"):
        with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace("?", r"\?")):
            main([command, "tiny-arith", "--set", item])
    run = tmp_path / "run.yaml"
    section, rest = item.split(".", 1)
    key, value = rest.split("=")
    run.write_text(f"{section}:\n  {key}: {value}\n")
    with pytest.raises(SystemExit, match=message.replace("(", r"\(")):
        main(["show-config", "tiny-arith", "--config", str(run)])
    assert not list(tmp_path.glob("runs/*"))


def test_a_config_file_with_an_unknown_key_or_a_bad_shape_is_named(tmp_path):
    from rllib_rpp.app.cli import main

    run = tmp_path / "run.yaml"
    for text, message in (("training:\n  lrr: 1.0e-5\n", "unknown key 'lrr' in section 'training'.*did you mean 'lr'"),
                          ("trainng:\n  lr: 1.0e-5\n", "unknown config section 'trainng'.*did you mean 'training'"),
                          ("training: [1, 2]\n", "expected sections of options"),
                          ("training:\n  lr: [1\n", "not valid YAML")):
        run.write_text(text)
        with pytest.raises(SystemExit, match=message):
            main(["show-config", "tiny-arith", "--config", str(run)])
    with pytest.raises(SystemExit, match="no-such.yaml"):
        main(["show-config", "tiny-arith", "--config", str(tmp_path / "no-such.yaml")])
