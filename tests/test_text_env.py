import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import SingleTurnTextEnv
from rpp_hub.models import ModelNotFoundError


def _ids(env, text, eos=True):
    return env.tokenizer(text, add_special_tokens=False)["input_ids"] + ([env.eos_token_id] if eos else [])


def _action(env, ids):
    a = np.full(env.max_new_tokens, env.pad_token_id, np.int64)
    a[: len(ids)] = ids
    return a


def test_passes_gymnasium_check_env_and_registers_an_id():
    env = gym.make(envs.ENV_ID, max_new_tokens=6)
    check_env(env.unwrapped, skip_render_check=True)
    assert isinstance(env.unwrapped, SingleTurnTextEnv)


def test_reset_gives_prompt_and_step_scores_whole_response():
    env = SingleTurnTextEnv(max_new_tokens=6, seed=0)
    obs, info = env.reset(seed=5)
    assert env.observation_space.contains(obs) and env.action_space.shape == (6,)
    ids = obs["input_ids"][obs["attention_mask"] == 1]
    assert env.tokenizer.decode(ids, skip_special_tokens=True) == info["prompt"]
    assert obs["attention_mask"][-1] == 1  # left padding: the prompt ends at the last column
    answer = info["columns"]["answer"]
    obs2, reward, terminated, truncated, info2 = env.step(_action(env, _ids(env, answer)))
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info2["completion"] == answer and not info2["truncated_response"]
    env.reset()
    _, reward, *_ = env.step(_action(env, _ids(env, "x")))
    assert reward == 0.0
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(_action(env, _ids(env, "1")))


def test_response_length_convention():
    env = SingleTurnTextEnv(max_new_tokens=5)
    eos, pad = env.eos_token_id, env.pad_token_id
    assert env.response_length([7, 8, eos, 9, pad]) == 3  # through the first EOS
    assert env.response_length([7, 8, pad, pad, pad]) == 2  # no EOS: up to the first pad
    assert env.response_length([7, 8, 9, 10, 11]) == 5  # neither: truncated at max_new_tokens
    env.reset()
    *_, info = env.step([7, 8, 9, 10, 11])
    assert info["truncated_response"] and info["response_length"] == 5


def test_batched_score_matches_step_and_uses_extra_columns():
    seen = {}

    def by_level(prompts, completions, level, **kw):
        seen["level"] = level
        return [float(len(c)) for c in completions]

    rows = [{"prompt": "a", "level": 1}, {"prompt": "b", "level": 2}]
    # In-process (no timeout): the function's side effect lands here, not in an isolated process.
    env = SingleTurnTextEnv(prompts=rows, reward_funcs=[by_level], shuffle=False, max_new_tokens=4,
                            reward_timeout_s=None)
    recs = env.next_prompts(2)
    res = env.rewards_for(recs, [_ids(env, "xyz"), _ids(env, "q")])
    assert res.rewards.tolist() == [3.0, 1.0] and seen["level"] == [1, 2]


def test_chat_prompts_get_the_template_and_chat_completions():
    got = {}

    def fn(prompts, completions, **kw):
        got["c"] = completions
        return [1.0] * len(completions)

    env = SingleTurnTextEnv(prompts=[{"prompt": [{"role": "user", "content": "hi"}]}], reward_funcs=[fn],
                            reward_timeout_s=None)
    obs, _ = env.reset()
    assert env.tokenizer.decode(obs["input_ids"]).endswith("user: hi\nassistant: ")
    env.step(_action(env, _ids(env, "yo")))
    assert got["c"] == [[{"role": "assistant", "content": "yo"}]]


def test_state_round_trip_restores_prompt_order():
    a = SingleTurnTextEnv(seed=1)
    [a.reset() for _ in range(3)]
    b = SingleTurnTextEnv(seed=1)
    b.set_state(a.get_state())
    assert [p.index for p in a.next_prompts(4)] == [p.index for p in b.next_prompts(4)]


def test_bad_inputs_get_clear_errors(tmp_path, tiny_path):
    with pytest.raises(ValueError, match=r"unknown text-env option\(s\) \['max_tokens'\]"):
        SingleTurnTextEnv(max_tokens=4)
    with pytest.raises(ValueError, match="empty"):
        SingleTurnTextEnv(prompts=[])
    with pytest.raises(ValueError, match="more than max_prompt_tokens=3"):
        SingleTurnTextEnv(max_prompt_tokens=3)
    env = SingleTurnTextEnv(max_prompt_tokens=3, truncate_prompts=True)
    assert env.observation_space["input_ids"].shape == (3,)
    with pytest.raises(ValueError, match=r"exceeds the context of 'tiny-arith' \(256 tokens\)"):
        SingleTurnTextEnv(max_new_tokens=250)
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
        SingleTurnTextEnv(max_new_tokens=0)
    with pytest.raises(ModelNotFoundError, match="unknown model 'no-such-org/no-such-model'"):
        SingleTurnTextEnv(model="no-such-org/no-such-model")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "nopad")
    with pytest.raises(ValueError, match="has no pad token"):
        SingleTurnTextEnv(model=str(tmp_path / "nopad"))
    env = SingleTurnTextEnv()
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(16,\)"):
        env.step([1, 2])


def test_out_of_vocabulary_action_ids_are_refused():
    env = SingleTurnTextEnv(max_new_tokens=4)
    env.reset()
    vocab = len(env.tokenizer)
    with pytest.raises(ValueError, match=rf"id {vocab + 7} at position 1, outside the vocabulary of size {vocab}"):
        env.step([5, vocab + 7, env.eos_token_id, env.pad_token_id])
    with pytest.raises(ValueError, match=rf"token id -1 at position 0, outside the vocabulary of size {vocab}"):
        env.step([-1, 5, env.eos_token_id, env.pad_token_id])
    *_, info = env.step([5, vocab - 1, env.eos_token_id, env.pad_token_id])  # the episode is still open
    assert info["response_length"] == 3


def test_prompt_row_missing_a_rewarded_column_is_an_error():
    rows = [{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2="}]
    with pytest.raises(ValueError, match=r"prompt row 1 has no 'answer' column, which reward function 'exact_match'"):
        SingleTurnTextEnv(prompts=rows)
    with pytest.raises(ValueError, match=r"prompt row 0 has None in 'answer' column"):
        SingleTurnTextEnv(prompts=[{"prompt": "1+1=", "answer": None}])
    # Rows scored later (e.g. evaluation prompts) are checked too, naming their row.
    env = SingleTurnTextEnv(prompts=rows[:1])
    bad = dataclasses.replace(env.prompts[0], index=4, columns={})
    with pytest.raises(ValueError, match=r"prompt row 4 has no 'answer' column"):
        env.rewards_for([bad], [_ids(env, "None")])


def test_directory_that_is_not_a_model_names_the_missing_files(tmp_path, tiny_path):
    from rpp_hub.models import load_causal_lm, model_config_of

    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hi")
    for d, found in [("empty", "it is empty"), ("junk", "notes.txt")]:
        path = str(tmp_path / d)
        with pytest.raises(ModelNotFoundError, match=r"is not a model directory: it has no tokenizer files "
                                                     r"\(expected one of tokenizer.json, tokenizer_config.json") as e:
            SingleTurnTextEnv(model=path)
        assert found in str(e.value) and "installed" not in str(e.value)
        for load in (model_config_of, load_causal_lm):
            with pytest.raises(ModelNotFoundError, match=r"is not a model directory: it has no config.json"):
                load(path)


def test_unknown_model_id_fails_fast(monkeypatch):
    from rpp_hub.models import load_tokenizer, model_config_of

    t0 = time.perf_counter()
    for load in (load_tokenizer, model_config_of):
        with pytest.raises(ModelNotFoundError, match="unknown model 'no-such-org/no-such-model'"):
            load("no-such-org/no-such-model")
    assert time.perf_counter() - t0 < 10
    # Without the offline switches too: the hub client's network retries took ~46 s before.
    code = ("import time\nfrom rpp_hub.models import ModelNotFoundError, load_tokenizer\nt = time.perf_counter()\n"
            "try:\n    load_tokenizer('no-such-org/no-such-model')\nexcept ModelNotFoundError as e:\n"
            "    print(time.perf_counter() - t)\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    assert out.returncode == 0 and "unknown model 'no-such-org/no-such-model'" in out.stdout, out.stderr[-2000:]
    assert float(out.stdout.splitlines()[0]) < 10, f"took {out.stdout.splitlines()[0]} s (process: {wall:.1f} s)"
