"""reasoning-gym as a task source: splits, verifier rewards, answer extraction, errors, and the
config API / CLI / Tune reaching it."""

import pytest
from ray import tune

from envs.prompts import load_prompt_rows
from envs.rewards import RewardStep
from envs.tasks import reasoning_gym as rg

ONE_DIGIT = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


def _spec(split="train", **options):
    return rg.spec("chain_sum", split, **{"config": ONE_DIGIT, "size": 400, "eval_size": 32, **options})


def test_splits_are_disjoint_deterministic_and_distinct():
    train, held_out = load_prompt_rows(_spec()), load_prompt_rows(_spec("eval"))
    assert len(held_out) == 32 and len({r["task_entry"]["question"] for r in held_out}) == 32
    # One-digit two-term chain_sum has 200 distinct questions: the train split keeps what is not held out.
    assert 0 < len(train) < 400
    assert not {r["task_entry"]["question"] for r in train} & {r["task_entry"]["question"] for r in held_out}
    rg.disjoint(train, held_out)
    assert load_prompt_rows(_spec()) == train and load_prompt_rows(_spec("eval")) == held_out  # seeded
    assert load_prompt_rows(_spec("eval", seed=1)) != held_out
    row = held_out[0]
    assert row["task"] == "chain_sum" and row["answer"] == row["task_entry"]["answer"]
    assert row["prompt"] == [{"role": "user", "content": row["task_entry"]["question"] + rg.DEFAULT_INSTRUCTION}]
    with pytest.raises(ValueError, match="held-out row 0 is also a train prompt"):
        rg.disjoint(train, [train[3]])


def test_prompt_forms_chat_with_system_prompt_and_plain_text():
    chat = load_prompt_rows(_spec("eval", system_prompt="Be brief.", instruction=""))[0]["prompt"]
    assert chat[0] == {"role": "system", "content": "Be brief."} and chat[1]["role"] == "user"
    plain = load_prompt_rows(_spec("eval", chat=False))[0]
    assert plain["prompt"] == plain["task_entry"]["question"] + rg.DEFAULT_INSTRUCTION
    with pytest.raises(ValueError, match="system_prompt needs chat=True"):
        load_prompt_rows(_spec(chat=False, system_prompt="x"))


@pytest.mark.parametrize("text, oracle, expected", [
    ("3 + 4 = 7", "7", "7"),  # the last number
    ("The answer is -12.", "-12", "-12"),
    ("1,234 apples", "1234", "1234"),
    ("I think <answer>5</answer>, no wait, <answer> 6 </answer> 9", "6", "6"),  # the last tag wins over numbers
    ("no digits here", "3", "no digits here"),
    ("  cba  ", "cba", "cba"),  # a word answer: the whole reply, stripped
])
def test_answer_extraction(text, oracle, expected):
    assert rg.extract_answer(text, oracle) == expected


def test_verifier_rewards_binary_by_default_partial_on_request():
    rows = load_prompt_rows(_spec("eval"))[:3]
    entries = [r["task_entry"] for r in rows]
    right, contains = rows[0]["answer"], f"1{rows[1]['answer']}"  # "contains the oracle": partial credit only
    completions = [f"{rows[0]['task_entry']['metadata']['expression']} = {right}", f"<answer>{contains}</answer>",
                   "<answer>zebra</answer>"]
    binary = RewardStep(["reasoning_gym"], timeout_s=None)([r["prompt"] for r in rows], completions, task_entry=entries)
    partial = RewardStep(["reasoning_gym_partial"], timeout_s=None)([r["prompt"] for r in rows], completions,
                                                                     task_entry=entries)
    assert binary.rewards.tolist() == [1.0, 0.0, 0.0]
    assert partial.rewards[0] == 1.0 and 0.0 < partial.rewards[1] < 1.0 and partial.rewards[2] == 0.0
    # The reward reads the task_entry column: a prompt source without it is refused up front.
    with pytest.raises(ValueError, match="task_entry"):
        RewardStep(["reasoning_gym"], timeout_s=None).check_columns([{"prompt": "x", "answer": "1"}])


@pytest.mark.parametrize("options, message", [
    ({"dataset": "chain_summ"}, "unknown reasoning-gym dataset 'chain_summ': did you mean 'chain_sum'"),
    ({"config": {"max_termz": 2}}, r"unknown option\(s\) \['max_termz'\] for reasoning-gym dataset 'chain_sum'"),
    ({"config": {"min_terms": 3, "max_terms": 2}}, "invalid config .* max_terms must be >= min_terms"),
    ({"eval_size": 300}, "gave only 200 distinct questions .* fewer than eval_size=300"),
    ({"eval_size": 200}, "every one of the 400 train items .* is also held out"),
    ({"size": 0}, "size=0 is invalid: expected a positive integer"),
    ({"split": "test"}, "split='test' is invalid: expected 'train' or 'eval'"),
    ({"sizee": 10}, r"unknown option\(s\) \['sizee'\] for the 'reasoning_gym' task source"),
])
def test_bad_specs_name_the_bad_value(options, message):
    spec = {**_spec(), **options}
    with pytest.raises(ValueError, match=message):
        load_prompt_rows(spec)


def test_unknown_task_source_is_named():
    with pytest.raises(ValueError, match="one of \\[.*'reasoning_gym'.*\\]; got source='reasoning-gym'"):
        load_prompt_rows({"source": "reasoning-gym", "dataset": "chain_sum"})


def test_cli_reaches_the_task_through_set_and_show_config(capsys):
    from rllib_rpp.app.cli import main

    main(["show-config", "smollm2", "--set", "environment.env_config.prompts.dataset=letter_counting",
          "--set", 'environment.env_config.prompts.config={"min_words": 1, "max_words": 1}'])
    out = capsys.readouterr().out
    assert "dataset: letter_counting" in out and "min_words: 1" in out and "smollm2-135m-instruct" in out


def test_tune_searches_over_the_task_difficulty(tmp_path, ray_local):
    """A grid over the task's config reaches each trial's prompts (tiny-arith reads plain text)."""
    from rllib_rpp import ReinforcePP, ReinforcePPConfig

    task = {"dataset": "chain_sum", "size": 64, "eval_size": 8, "chat": False, "instruction": "",
            "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": tune.grid_search([1, 2])}}
    config = (ReinforcePPConfig()
              .environment(env_config={"prompts": rg.spec(**task), "reward_funcs": ["reasoning_gym"]})
              .generation(max_new_tokens=4)
              .training(num_prompts_per_iteration=4, num_samples_per_prompt=2, minibatch_size=8)
              .debugging(seed=0))
    results = tune.Tuner(ReinforcePP, param_space=config, run_config=tune.RunConfig(
        stop={"training_iteration": 1}, storage_path=str(tmp_path), verbose=0)).fit()
    assert not results.errors and len(results) == 2
    digits = sorted(r.config["env_config"]["prompts"]["config"]["max_digits"] for r in results)
    assert digits == [1, 2]
    assert all(r.metrics["training_iteration"] == 1 for r in results)
