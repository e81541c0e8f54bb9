"""OpenEnv environments as single-turn tasks: the adapter in process and over an OpenEnv server the
test starts on 127.0.0.1, its splits, its reward under the reward step's guarantees (timeouts, error
policy, a server that is down or hangs), bad specs, and one training iteration over the server."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from envs.prompts import load_prompt_rows
from envs.rewards import RewardFunctionError, RewardStep
from tuned_examples import openenv_env

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """tuned_examples.openenv_env's environment behind OpenEnv's own server, on a free local port."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tuned_examples.openenv_env", "--serve", "--port", str(port)],
                            cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the OpenEnv server did not start (exit status {proc.poll()})") from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


def _score(rows, completions, **options):
    step = RewardStep(["openenv"], **{"timeout_s": 30.0, **options})
    try:
        return step([r["prompt"] for r in rows], completions, openenv=[r["openenv"] for r in rows])
    finally:
        step.close()


def _answer(row) -> str:
    return str(eval(row["prompt"].rstrip("=")))  # "4-7=": the environment's compact expression


def test_in_process_env_splits_and_rewards_by_its_own_step():
    spec = openenv_env.task(size=48, eval_size=8)
    train, held_out = load_prompt_rows(spec), load_prompt_rows({**spec, "split": "eval"})
    assert len(held_out) == 8 and len({r["prompt"] for r in held_out}) == 8
    assert 0 < len(train) <= 48 and not {r["prompt"] for r in train} & {r["prompt"] for r in held_out}
    assert load_prompt_rows(spec) == train  # seeded: the same rows again
    row = train[0]
    assert row["task"] == "ReasoningGymEnv" and row["openenv"]["action_field"] == "text"
    assert row["openenv"]["reset"] == {"seed": 0} and row["prompt"] == row["openenv"]["prompt"]
    rows = held_out[:4]
    res = _score(rows, [_answer(rows[0]), _answer(rows[1]), "x", str(int(_answer(rows[3])) + 1)])
    assert res.rewards.tolist() == [1.0, 1.0, 0.0, 0.0] and "openenv" in res.components


def test_a_hanging_or_failing_step_costs_only_its_sample():
    rows = load_prompt_rows({"source": "openenv", "env": "openenv_helpers:AdditionEnv", "size": 8, "eval_size": 4,
                             "split": "eval"})
    assert rows[0]["openenv"]["action_field"] == "words" and rows[0]["prompt"].endswith("+1=")
    completions = [_answer(rows[0]), "hang", "boom", "0"]
    t0 = time.monotonic()
    res = _score(rows, completions, timeout_s=1.5, on_error=-1.0)
    assert res.rewards.tolist() == [1.0, -1.0, -1.0, 0.0]
    assert res.stats.culprits == [1, 2] and res.stats.timeouts >= 1 and res.stats.errors >= 1
    assert time.monotonic() - t0 < 60  # the hanging step was killed, not waited for
    with pytest.raises(RewardFunctionError, match="the environment broke"):
        _score(rows[2:3], ["boom"])


def test_an_env_that_does_not_reproduce_its_episode_from_the_seed_is_an_error():
    rows = load_prompt_rows({"source": "openenv", "env": "openenv_helpers:AdditionEnv", "size": 8, "eval_size": 4})
    forgetful = [{**r, "openenv": {**r["openenv"], "env": "openenv_helpers:ForgetfulEnv"}} for r in rows[:2]]
    with pytest.raises(RewardFunctionError, match=r"reset\(seed=0\) gave the prompt .* reproduces an episode"):
        _score(forgetful, ["1", "2"])
    no_reward = [{**r, "openenv": {**r["openenv"], "env": "openenv_helpers:NoRewardEnv"}} for r in rows[:1]]
    with pytest.raises(RewardFunctionError, match="gave the reward None: a single-turn task needs a number"):
        _score(no_reward, ["1"], timeout_s=None)


@pytest.mark.parametrize("options, message", [
    ({}, "give exactly one of env .* and url"),
    ({"env": "openenv_helpers:AdditionEnv", "url": "http://127.0.0.1:1"}, "give exactly one of env"),
    ({"env": "openenv_helpers:NoSuchEnv"}, "could not be imported"),
    ({"env": "openenv_helpers:TwoFieldEnv"}, r"cannot tell which field takes the completion .* \['first', "
                                             r"'second'\]"),
    ({"env": "openenv_helpers:TwoFieldEnv", "action_field": "third"}, "action_field='third' is not a field"),
    ({"env": "openenv_helpers:AdditionEnv", "prompt_field": "answer"}, "field 'answer' is '<missing>'"),
    ({"env": "openenv_helpers:AdditionEnv", "modulo": 3}, r"unknown option\(s\) \['modulo'\]"),
    ({"env": "openenv_helpers:AdditionEnv", "env_kwargs": {"modulo": 3}, "eval_size": 4},
     "gave only 3 distinct prompts for 80 seeds, fewer than eval_size=4"),
    ({"env": "openenv_helpers:AdditionEnv", "size": 0}, "size=0 is invalid"),
    ({"env": "openenv_helpers:AdditionEnv", "split": "test"}, "split='test' is invalid"),
    ({"url": "ftp://host"}, "OpenEnv server URL 'ftp://host' is invalid"),
    ({"url": "http://127.0.0.1:9"}, r"OpenEnv server http://127.0.0.1:9 is unreachable"),
])
def test_bad_specs_name_the_bad_value(options, message):
    with pytest.raises(ValueError, match=message):
        load_prompt_rows({"source": "openenv", "size": 8, **options})


def test_the_server_form_gives_the_in_process_prompts_and_rewards(server):
    spec = openenv_env.task(server, size=48, eval_size=8, split="eval")
    rows = load_prompt_rows(spec)
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in load_prompt_rows(openenv_env.task(
        size=48, eval_size=8, split="eval"))]
    assert rows[0]["task"] == server.split("://")[1] and rows[0]["openenv"]["url"] == server
    completions = [_answer(r) if i % 2 == 0 else "x" for i, r in enumerate(rows)]
    res = _score(rows, completions)
    assert res.rewards.tolist() == [1.0, 0.0] * 4


def test_a_server_that_is_down_or_hangs_fails_the_whole_batch_at_once(server):
    rows = load_prompt_rows(openenv_env.task(server, size=16, eval_size=4, split="eval"))
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        for url, why in ((f"http://127.0.0.1:{_free_port()}", "is unreachable"),
                         (f"http://127.0.0.1:{silent.getsockname()[1]}", "(is unreachable|did not answer)")):
            moved = [{**r, "openenv": {**r["openenv"], "url": url}} for r in rows]
            t0 = time.monotonic()
            res = _score(moved, ["1"] * 4, timeout_s=2.0, on_error="skip")
            assert res.skipped.tolist() == [True] * 4 and np.isnan(res.rewards).all()
            assert res.stats.timeouts + res.stats.errors == 1  # one call: no bisection
            assert time.monotonic() - t0 < 15
            with pytest.raises(RewardFunctionError, match=f"OpenEnv server {url} {why}.*4 of the batch of 4"):
                _score(moved, ["1"] * 4, timeout_s=2.0)
        with pytest.raises(ValueError, match="is unreachable"):  # collecting the prompts: an error at set-up
            load_prompt_rows(openenv_env.task(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=1.0))


def test_one_training_iteration_on_the_server(server, ray_local):
    algo = openenv_env.build_config(server, num_prompts=8, samples=2).build_algo()
    try:
        r = algo.train()
        runners = r["env_runners"]
        assert runners["num_env_steps_sampled"] == 16 and "openenv" in runners["reward"]
        assert runners["reward_calls"]["skipped"] == 0
        task = server.split("://")[1]
        assert runners["tasks"][task]["num_samples"] == 16
        ev = algo.evaluate_greedy()
        assert ev["num_prompts"] == 32 and 0.0 <= ev["tasks"][task]["accuracy"] <= 1.0
    finally:
        algo.stop()
