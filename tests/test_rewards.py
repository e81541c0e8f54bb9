import math

import numpy as np
import pytest
import torch

from envs.reward_model import (
    RewardModelReward,
    arithmetic_preference_pairs,
    bradley_terry_loss,
    preference_accuracy,
    train_reward_model,
)
from envs.rewards import RewardFunctionError, RewardStep, exact_match, length_reward, math_verify_reward


def test_trl_style_functions_get_extra_columns_and_are_weighted():
    seen = {}

    def trl_fn(prompts, completions, answer, completion_ids, difficulty, **kwargs):
        seen.update(prompts=prompts, ids=completion_ids, difficulty=difficulty)
        return [float(c == a) for c, a in zip(completions, answer)]

    def shorter_is_better(completions, **kwargs):
        return [-len(c) / 10 for c in completions]

    step = RewardStep([trl_fn, shorter_is_better], reward_weights=[2.0, 0.5])
    res = step(["1+1=", "2+2="], ["2", "5"], completion_ids=[[1], [2]], answer=["2", "4"], difficulty=["e", "h"])
    np.testing.assert_allclose(res.rewards, [2.0 - 0.05, -0.05])
    np.testing.assert_allclose(res.components["trl_fn"], [1.0, 0.0])
    assert seen == {"prompts": ["1+1=", "2+2="], "ids": [[1], [2]], "difficulty": ["e", "h"]}


def test_none_is_left_out_but_all_none_is_an_error():
    def only_first(completions, **kw):
        return [1.0] + [None] * (len(completions) - 1)

    res = RewardStep([only_first, "exact_match"])(["p", "q"], ["a", "b"], answer=["a", "x"])
    np.testing.assert_allclose(res.rewards, [2.0, 0.0])
    assert math.isnan(res.components["only_first"][1])
    with pytest.raises(RewardFunctionError, match="no reward function scored sample 1"):
        RewardStep([only_first])(["p", "q"], ["a", "b"])


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda completions, **kw: [1.0], r"'bad' returned 1 values for 3 completions"),
        (lambda completions, **kw: [1.0, float("nan"), 0.0], r"'bad' returned nan for sample 1"),
        (lambda completions, **kw: [1.0, 0.0, float("inf")], r"'bad' returned inf for sample 2"),
        (lambda completions, **kw: [1.0, "high", 0.0], r"'bad' returned 'high' \(str\) for sample 1"),
        (lambda completions, **kw: 1.0, r"'bad' returned a float; expected a list of 3"),
    ],
)
def test_bad_reward_outputs_name_function_and_sample(fn, match):
    fn.__name__ = "bad"
    with pytest.raises(RewardFunctionError, match=match):
        RewardStep([fn])(["p"] * 3, ["a", "b", "c"])


def test_raising_reward_function_names_the_sample():
    def picky(completions, **kw):
        return [1.0 / (c != "boom") for c in completions]

    with pytest.raises(RewardFunctionError, match=r"'picky' raised ZeroDivisionError.*on sample 2 .*'boom'"):
        RewardStep([picky])(["p"] * 3, ["a", "b", "boom"])


@pytest.mark.parametrize("on_error", ["skip", "raise"])
def test_a_failing_sample_is_found_by_bisection_and_no_sample_is_scored_twice(on_error):
    calls = []

    def scored_once(completions, **kw):  # e.g. a paid scoring service: every call costs
        calls.append(list(completions))
        if "bad" in completions:
            raise ValueError("cannot score 'bad'")
        return [1.0] * len(completions)

    completions = [f"c{i}" for i in range(256)]
    completions[173] = "bad"
    step = RewardStep([scored_once], timeout_s=None, on_error=on_error)
    if on_error == "raise":
        with pytest.raises(RewardFunctionError, match=r"'scored_once' raised ValueError: cannot score 'bad' — on "
                                                      r"sample 173 "):
            step(["p"] * 256, completions)
    else:
        assert np.flatnonzero(step(["p"] * 256, completions).skipped).tolist() == [173]
    # The batch, then per halving (log2 256 = 8) the left half and, where the culprit is in it and the
    # other half must still be scored, the right one: not one call per sample (1 + 256 before).
    assert len(calls) <= (2 + 8 if on_error == "raise" else 1 + 2 * 8)
    passed = [c for call in calls if "bad" not in call for c in call]
    assert len(passed) == len(set(passed))  # nothing scored successfully is scored again
    if on_error == "skip":
        assert sorted(passed) == sorted(c for c in completions if c != "bad")


def test_a_batch_failure_no_sample_reproduces_alone_is_an_error():
    def batch_only(completions, **kw):
        if len(completions) > 2:
            raise MemoryError("batch too big")
        return [0.0] * len(completions)

    with pytest.raises(RewardFunctionError, match=r"failed on the batch of 8 \(MemoryError: batch too big\), but "
                                                  r"no sample fails alone"):
        RewardStep([batch_only], timeout_s=None, on_error="skip")(["p"] * 8, ["c"] * 8)


def test_bad_weights_and_names():
    with pytest.raises(ValueError, match="2 entries for 1 reward functions"):
        RewardStep(["exact_match"], [1.0, 2.0])
    with pytest.raises(ValueError, match="could not be imported"):
        RewardStep(["no_such_module:fn"])
    with pytest.raises(TypeError, match="callable or a name"):
        RewardStep([3])


def test_builtin_rule_rewards():
    step = RewardStep(["exact_match", "digits_format"])
    res = step(["1+2="] * 3, ["3", " 3 ", "x3"], answer=["3"] * 3)
    np.testing.assert_allclose(res.components["exact_match"], [1, 1, 0])
    np.testing.assert_allclose(res.components["digits_format"], [1, 1, 0])
    completions = ["The answer is $\\frac{1}{2}$", "\\boxed{0.5}", "\\boxed{3}"]
    assert math_verify_reward(completions, ["0.5"] * 3) == [1.0, 1.0, 0.0]
    assert length_reward(4)(["abcd", "abcdef", "a" * 100]) == [0.0, -0.5, -1.0]
    res = RewardStep(["envs.rewards:exact_match"])(["p"], ["1"], answer=["1"])
    assert res.rewards.tolist() == [1.0]


def test_reward_model_scores_a_batch_and_prefers_correct_sums():
    rm_reward = RewardModelReward("tiny-arith-rm", batch_size=16)
    pairs = arithmetic_preference_pairs("eval")[:64]
    prompts = [p["prompt"] for p in pairs]
    good = rm_reward(prompts, [p["chosen"] for p in pairs])
    bad = rm_reward(prompts, [p["rejected"] for p in pairs])
    assert len(good) == 64 and all(isinstance(x, float) for x in good)
    assert np.mean(np.array(good) > np.array(bad)) > 0.75
    # Batching must not change scores (padding is handled).
    assert rm_reward(prompts[:3], ["1", "22", "333"]) == pytest.approx(
        [rm_reward([p], [c])[0] for p, c in zip(prompts[:3], ["1", "22", "333"])], abs=1e-4)
    # The reward model is usable as one more reward function by name.
    res = RewardStep(["tiny-arith-rm", "exact_match"])(prompts[:2], ["5", "7"], answer=["5", "8"])
    np.testing.assert_allclose(res.rewards, np.array(rm_reward(prompts[:2], ["5", "7"])) + [1, 0], atol=1e-5)


def test_reward_model_must_have_one_label(tmp_path, tiny_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    two = AutoModelForSequenceClassification.from_pretrained(tiny_path, num_labels=2)
    two.save_pretrained(tmp_path / "two")
    AutoTokenizer.from_pretrained(tiny_path).save_pretrained(tmp_path / "two")
    with pytest.raises(ValueError, match="has 2 labels"):
        RewardModelReward(str(tmp_path / "two"))
    with pytest.raises(ValueError, match="LlamaForCausalLM, not a sequence classifier"):
        RewardModelReward("tiny-arith")


def test_bradley_terry_training_learns_a_preference(tiny_path, tiny_tokenizer):
    from transformers import AutoModelForSequenceClassification

    assert bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(
        -math.log(1 / (1 + math.exp(-2.0))))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_path, num_labels=1)
    pairs = [{"prompt": "Q:", "chosen": "yes" * k, "rejected": "no" * k} for k in range(1, 6)]
    with torch.no_grad():  # a zero head scores every response alike: no preference to start from
        model.score.weight.zero_()
    assert preference_accuracy(model, tiny_tokenizer, pairs) == 0.0  # ties never count as preferred
    report = train_reward_model(model, tiny_tokenizer, pairs, steps=30, batch_size=8, lr=1e-3)
    assert preference_accuracy(model, tiny_tokenizer, pairs) == 1.0
    assert report["final_loss"] < math.log(2)  # below the zero head's loss on every pair
    with pytest.raises(ValueError, match="at least one preference pair"):
        train_reward_model(model, tiny_tokenizer, [], steps=1)


def test_exact_match_never_matches_a_missing_answer():
    assert exact_match(["None", "", "2"], [None, None, "2"]) == [None, None, 1.0]
    assert math_verify_reward(["None"], [None]) == [None]
    with pytest.raises(ValueError, match=r"sample 1 has no value \(None\) in the column 'answer'.*'exact_match'"):
        RewardStep(["exact_match"])(["p", "q"], ["2", "None"], answer=["2", None])
    with pytest.raises(ValueError, match=r"'exact_match' reads the column 'answer', which the prompts do not have"):
        RewardStep(["exact_match"])(["p"], ["None"])
    step = RewardStep(["exact_match"])
    with pytest.raises(ValueError, match=r"prompt row 7 has no 'answer' column, which reward function 'exact_match'"):
        step.check_columns([{"answer": "1"}, {"level": 2}], row_ids=[3, 7])
    with pytest.raises(ValueError, match=r"prompt row 1 has None in 'answer' column"):
        step.check_columns([{"answer": "1"}, {"answer": None}])
    step.check_columns([{"answer": "1"}, {"answer": 0}])  # falsy values are values


@pytest.mark.parametrize("spec, closest", [("exact-match", "exact_match"), ("math-verify", "math_verify"),
                                           ("digit_format", "digits_format"), ("ExactMatch", "exact_match")])
def test_typo_in_builtin_reward_name_suggests_the_builtin(spec, closest):
    with pytest.raises(ValueError, match=rf"unknown reward function '{spec}': did you mean the built-in '{closest}'"):
        RewardStep([spec])
