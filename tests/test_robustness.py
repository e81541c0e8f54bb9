"""Nothing lost: exact resume, runner failures, failing reward functions, NaN guards, and the
user-facing workflows (CLI, TensorBoard metrics, Tune search)."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import resume_child
import torch
from helpers import small_config
from ray import tune

from envs.rewards import RewardFunctionError
from rllib_rpp import ReinforcePP
from rpp_hub.models import ModelNotFoundError

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("ray_local")


def _child(*args):
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "resume_child.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_resume_in_a_new_process_equals_training_straight_through(tmp_path):
    resume_child.run("straight", tmp_path / "ckpt", tmp_path / "straight.pt")  # here; saves after 2 of its 3 iterations
    _child("resume", tmp_path / "ckpt", tmp_path / "resumed.pt")
    straight, resumed = torch.load(tmp_path / "straight.pt"), torch.load(tmp_path / "resumed.pt")
    for k, v in straight["metrics"].items():
        assert resumed["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    for k, w in straight["weights"].items():
        torch.testing.assert_close(resumed["weights"][k], w, rtol=1e-5, atol=1e-7)
    saved = torch.load(tmp_path / "straight.pt.saved")
    assert any(not torch.equal(saved["weights"][k], w) for k, w in straight["weights"].items())


FLAKY = {"raise": False}


def flaky(prompts, completions, **kwargs):
    return [1 / 0 if FLAKY["raise"] and p.startswith("7") else 0.0 for p in prompts]


def test_raising_reward_function_fails_the_step_and_checkpoint_stays_loadable(tmp_path):
    # In-process rewards (no timeout): `flaky` reads this module's FLAKY, which the test flips.
    algo = small_config(reward_normalization="running").environment(
        env_config={"prompts": "arithmetic", "reward_funcs": [flaky, "exact_match"]}).rewards(
        reward_timeout_s=None).build_algo()
    algo.train()
    path = algo.save_to_path(str(tmp_path / "ckpt"))
    FLAKY["raise"] = True
    try:
        expected = r"reward function 'flaky' raised ZeroDivisionError.*on sample \d+ \(prompt '7"
        with pytest.raises(Exception, match=expected):
            algo.train()
    finally:
        FLAKY["raise"] = False
    algo.stop()
    restored = ReinforcePP.from_checkpoint(path)
    assert np.isfinite(restored.train()["learners"]["default_policy"]["policy_loss"])
    restored.stop()


def never_scores(prompts, completions, **kwargs):
    raise ConnectionError("the scoring service is down")


def test_an_iteration_whose_every_sample_was_skipped_says_so_and_trains_on_nothing(caplog):
    """on_reward_error="skip" with every reward call failing (issue 30: a normal-looking iteration with
    reward 0.0 and no word): a warning says why, and the weights do not move."""
    algo = small_config().environment(env_config={"prompts": "arithmetic", "reward_funcs": [never_scores]}).rewards(
        reward_timeout_s=None, on_reward_error="skip").build_algo()
    try:
        before = algo.get_policy_state_dict()
        with caplog.at_level("WARNING", logger="rllib_rpp"):
            result = algo.train()
            algo.train()
        said = [r.getMessage() for r in caplog.records if r.name.startswith("rllib_rpp")]
        assert len(said) == 1 and said[0].startswith("iteration 1: every one of the 64 samples' reward calls failed "
                                                     "and on_reward_error='skip' left them all out"), said
        assert "No update this iteration" in said[0]  # the second one is counted, not repeated within 30 s
        assert result["reinforce_pp"]["iteration"]["updated"] == 0.0
        assert result["env_runners"]["reward_calls"]["skipped"] == 64
        after = algo.get_policy_state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert algo._no_update.count == 2
    finally:
        algo.stop()


@pytest.mark.parametrize("staleness", [0, 1])  # synchronous sampling, and async rollouts
def test_a_reward_error_in_a_remote_runner_reaches_the_driver_as_itself_at_once(staleness):
    # restart_failed_env_runners=True (the default) used to hide it: "no env runner is sampling" after ~73 s.
    def broken(completions, **kwargs):  # nested: sent to the runner by value
        return [1 / 0 for _ in completions]

    config = small_config().environment(env_config={"prompts": "arithmetic", "reward_funcs": [broken]}).rewards(
        reward_timeout_s=None).env_runners(num_env_runners=1).training(max_rollout_staleness=staleness)
    assert config.restart_failed_env_runners
    algo = config.build_algo()
    try:
        t0 = time.monotonic()
        with pytest.raises(RewardFunctionError, match=r"reward function 'broken' raised ZeroDivisionError: division "
                                                      r"by zero — on sample 0 ") as caught:
            algo.train()
        assert time.monotonic() - t0 < 30
        assert type(caught.value) is RewardFunctionError  # itself, not a RayTaskError
        assert "raised in env runner 1" in "".join(getattr(caught.value, "__notes__", []))
        assert algo.env_runner_group.num_healthy_remote_workers() == 1  # not taken for dead, not restarted
    finally:
        algo.stop()


def _poison_sampler(algo):
    sampler = algo.env_runner.sampler
    generate = sampler.generate

    def poisoned(prompts, params):
        gen = generate(prompts, params)
        gen.logprobs[0][0] = float("nan")
        return gen

    sampler.generate = poisoned


def test_nan_log_probs_are_caught_or_masked_never_trained_on():
    algo = small_config().build_algo()
    _poison_sampler(algo)
    before = algo.get_policy_state_dict()
    with pytest.raises(Exception, match=r"sampler_logprobs contain NaN/inf in 1 of 64 responses"):
        algo.train()
    after = algo.get_policy_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    algo.stop()
    algo = small_config(nonfinite_logprobs="mask").build_algo()
    _poison_sampler(algo)
    r = algo.train()
    assert r["learners"]["default_policy"]["nonfinite_responses"] == 1
    assert all(torch.isfinite(v).all() for v in algo.get_policy_state_dict().values())
    algo.stop()


def test_unknown_policy_model_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="unknown model 'no-such-org/no-such-model'"):
        small_config().rl_module(model_config={"model": "no-such-org/no-such-model"}).build_algo()


def test_cli_help_explains_the_options(capsys):
    from rllib_rpp.app.cli import main

    for argv in (["train", "--help"], ["--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--time-budget", "--iterations", "--sampler", "--kl-coef", "--estimator", "--export-dir", "--gpus",
                 "--learner-gpus", "--rollout-gpus", "--colocate", "--checkpoint-every", "--resume"):
        assert flag in out
    assert "tiny-model" in out


def test_cli_trains_checkpoints_and_exports(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rllib_rpp", "train", "tiny-arith", "--iterations", "2",
                           "--num-prompts", "16", "--checkpoint-dir", str(tmp_path / "ckpt"),
                           "--export-dir", str(tmp_path / "export")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iter    2" in proc.stdout and "held-out greedy reward" in proc.stdout and "SUMMARY" in proc.stdout
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from envs.evaluation import greedy_completions

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    tok = AutoTokenizer.from_pretrained(tmp_path / "export")
    out = greedy_completions(model, tok, ["12+30="], max_new_tokens=5)
    assert len(out) == 1 and isinstance(out[0], str)
    assert ReinforcePP.from_checkpoint(str(tmp_path / "ckpt")).iteration == 2


def test_tune_search_with_early_stopping_logs_to_tensorboard_and_finds_the_algorithm_by_name(tmp_path, monkeypatch,
                                                                                          capfd):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rllib_rpp.app.tracking import mlflow_store_uri
    from tuned_examples.tune_search import reporter, search, tracking_callbacks

    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")  # as the example's main(): Tune's reporter table
    results, best = search(num_samples=3, max_iterations=4, eval_interval=2, grace=2, storage_path=str(tmp_path),
                           callbacks=tracking_callbacks(mlflow_uri=str(tmp_path / "mlruns")),
                           progress_reporter=reporter())
    assert len(results) == 3 and not results.errors
    # The console shows the searched options and the metric, not the config (~200 lines per update).
    out = capfd.readouterr().out
    assert "held-out acc" in out and "ε_low" in out and "Current best trial" in out
    assert "num_env_runners" not in out and "max_tokens_per_microbatch" not in out
    # Tune's MLflow callback: one run per trial, with RLlib's metric names.
    client = MlflowClient(mlflow_store_uri(str(tmp_path / "mlruns")))
    runs = client.search_runs([client.get_experiment_by_name("rllib-rpp-tune-search").experiment_id])
    assert len(runs) == 3 and all("env_runners/episode_return_mean" in r.data.metrics for r in runs)
    assert 0.0 <= best.metrics["greedy_eval"]["reward_mean"] <= 1.0
    assert {"kl_coef", "clip_low", "clip_high", "lr"} <= set(best.config)
    assert len({r.config["lr"] for r in results}) == 3  # each trial trained with its own sample
    # Tune's TensorBoard logs carry the REINFORCE++ metrics.
    events = list(tmp_path.rglob("events.out.tfevents*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for key in ("learners/default_policy/kl_ref_per_token", "learners/default_policy/clip_fraction",
                "learners/default_policy/kl_coef", "env_runners/episode_return_mean",
                "env_runners/completions_per_s"):
        assert any(t.endswith(key) for t in tags), key
    # The algorithm is registered with Tune by name.
    by_name = tune.Tuner("ReinforcePP", param_space=small_config(), run_config=tune.RunConfig(
        stop={"training_iteration": 1}, storage_path=str(tmp_path), verbose=0)).fit()
    assert not by_name.errors and by_name[0].metrics["training_iteration"] == 1
