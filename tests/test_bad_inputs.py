"""Bad options get an error naming the option and what was expected; a layout the cluster cannot
hold fails at once; dead runners stop training; non-finite updates never reach the runners."""

import math
import os
import time

import pytest
import torch
from helpers import small_config

from rllib_rpp.core.update import check_finite_weights


@pytest.mark.parametrize("training, match", [
    (dict(lr=-1e-4), r"lr=-0.0001 is invalid: expected a finite number > 0"),
    (dict(lr=math.nan), r"lr=nan is invalid"),
    (dict(lr=math.inf), r"lr=inf is invalid"),
    (dict(lr="1e-4"), r"lr='1e-4' is invalid: expected a finite number > 0"),
    (dict(grad_clip=-0.5), r"grad_clip=-0.5 is invalid: expected None or a finite number > 0"),
    (dict(grad_clip=-1.0), r"grad_clip=-1.0 is invalid"),
    (dict(reward_scale=0.0), r"reward_scale=0.0 is invalid: expected a finite number > 0"),
    (dict(num_epochs=0), r"num_epochs=0 is invalid: expected an integer >= 1"),
    (dict(kl_coef="0.01"), r"kl_coef='0.01' is invalid"),
    (dict(clip_high=math.nan), r"clip_high=nan is invalid"),
    (dict(max_tokens_per_microbatch=0), r"max_tokens_per_microbatch=0 is invalid"),
])
def test_numeric_options_are_checked_before_rllib_sees_them(training, match):
    with pytest.raises(ValueError, match=match):
        small_config(**training).validate()


def test_other_options_name_the_culprit():
    with pytest.raises(ValueError, match=r"model_config\['dtype'\]='fp16' is invalid: expected one of"):
        small_config().rl_module(model_config={"model": "tiny-arith", "dtype": "fp16"}).validate()
    with pytest.raises(ValueError, match="greedy_eval_interval=5 needs held-out prompts"):
        small_config().evaluation(greedy_eval_prompts=None, greedy_eval_interval=5).validate()
    with pytest.raises(ValueError, match=r"env_config has unknown option\(s\) \['prompt_file'\]"):
        small_config().environment(env_config={"prompts": "arithmetic", "prompt_file": "x.jsonl"}) \
            .env_runners(num_env_runners=1).validate()
    with pytest.raises(ValueError, match="learner_strategy='fsdp' with LoRA is not supported"):
        small_config(learner_strategy="fsdp").rl_module(model_config={"model": "tiny-arith", "lora": {"r": 4}}) \
            .validate()


@pytest.mark.parametrize("option, expected", [
    ("lr", "a finite number > 0"), ("kl_coef", "a finite number >= 0"), ("num_epochs", "an integer >= 1"),
    ("max_rollout_staleness", "an integer >= 0"), ("reward_scale", "a finite number > 0"),
    ("greedy_eval_interval", "an integer >= 0"),
])
def test_minus_one_reaches_validation_through_build_algo(option, expected):
    # RLlib's config round trip in Algorithm.__init__ used to turn -1 (its "deprecated" marker) into
    # the default: lr=-1 trained with lr=1e-6.
    config = small_config()
    (config.evaluation if option == "greedy_eval_interval" else config.training)(**{option: -1})
    with pytest.raises(ValueError, match=rf"{option}=-1 is invalid: expected {expected}"):
        config.build_algo()


def test_a_legal_minus_one_survives_the_config_round_trip():
    from rllib_rpp import ReinforcePPConfig
    from rllib_rpp.app.presets import tiny_arith

    config = small_config(entropy_coef=-1, truncated_response="penalize", truncated_reward=-1).rewards(
        on_reward_error=-1)
    config.kl_horizon = 5  # not -1: what RLlib keeps stays as it was
    rebuilt = ReinforcePPConfig().from_state(config.get_state())
    assert (rebuilt.entropy_coef, rebuilt.truncated_reward, rebuilt.on_reward_error) == (-1, -1, -1)
    assert rebuilt.kl_horizon == 5
    rebuilt.validate()
    with pytest.raises(ValueError, match=r"lr=-1.0 is invalid"):
        tiny_arith(lr=-1.0).build_algo()


def test_risky_options_warn_and_unsupported_dtypes_are_refused(caplog):
    with pytest.raises(ValueError, match=r"model_config\['param_dtype'\]='float16' is invalid: expected None, "
                                         r"'float32' or 'bfloat16' \(float16 master weights need loss scaling"):
        small_config().rl_module(model_config={"model": "tiny-arith", "param_dtype": "float16"}).validate()
    small_config().rl_module(model_config={"model": "tiny-arith", "dtype": "float16"}).validate()  # compute: fine
    with caplog.at_level("WARNING"):
        small_config(num_epochs=16).validate()
        assert "num_epochs" not in caplog.text
        small_config(num_epochs=1000).validate()
    assert "num_epochs=1000: every epoch is one more full pass" in caplog.text and "off-policy" in caplog.text


def test_an_update_that_leaves_a_weight_nonfinite_is_refused():
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.tensor([1.0, math.nan]))]
    with pytest.raises(FloatingPointError, match="made some weights NaN/inf; they were not sent"):
        check_finite_weights(params)
    check_finite_weights(params[:1])


def test_a_layout_bigger_than_the_cluster_fails_at_once_with_the_numbers(ray_local):  # a cluster of 8 CPUs
    t = time.time()
    with pytest.raises(ValueError, match=r"this layout needs 10 CPUs \(the cluster has 8\)"):
        small_config().env_runners(num_env_runners=9).build_algo()
    with pytest.raises(ValueError, match=r"needs 1 GPUs \(the cluster has 0\)"):
        small_config().learners(num_learners=1, num_gpus_per_learner=1).build_algo()
    assert time.time() - t < 60  # no actor was left waiting for resources


def test_training_stops_when_every_runner_is_dead(ray_local):
    algo = small_config().env_runners(num_env_runners=1).fault_tolerance(ignore_env_runner_failures=True).build_algo()
    algo.train()
    pid = algo.env_runner_group.foreach_env_runner(lambda runner: os.getpid(), local_env_runner=False)[0]
    os.kill(pid, 9)
    with pytest.raises(RuntimeError, match=r"no env runner is sampling: 1 of 1 failed"):
        for _ in range(5):
            algo.train()
    algo.stop()
