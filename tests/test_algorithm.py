"""ReinforcePP / ReinforcePPConfig end to end on CPU with the tiny model."""

import numpy as np
import pytest
import torch
from helpers import small_config

from rllib_rpp import ReinforcePP, ReinforcePPConfig

pytestmark = pytest.mark.usefixtures("ray_local")


def _policy(algo):
    return algo.get_policy_state_dict()


@pytest.mark.parametrize(
    "training, match",
    [
        (dict(advantage_estimator="grpo", num_samples_per_prompt=1), "needs num_samples_per_prompt >= 2"),
        (dict(kl_in_reward=True, use_kl_loss=True), "count the KL penalty twice"),
        (dict(advantage_estimator="ppo"), "advantage_estimator='ppo' is invalid"),
        (dict(kl_estimator="k9"), "kl_estimator='k9' is invalid"),
        (dict(clip_low=1.5), "clip_low=1.5 is invalid"),
        (dict(dual_clip=0.5), "dual_clip=0.5 is invalid"),
        (dict(loss_agg_mode="sum"), "loss_agg_mode='sum' is invalid"),
        (dict(minibatch_size=24), "minibatch_size=24 must divide the 64 completions"),
        (dict(reward_normalization="global"), "reward_normalization='global' is invalid"),
        (dict(truncated_response="drop"), "truncated_response='drop' is invalid"),
        (dict(kl_coef=-1.0), "kl_coef=-1.0 is invalid"),
        (dict(kl_target=1.0, kl_coef=0.0), "kl_target needs kl_coef > 0"),
        (dict(num_samples_per_prompt=0), "num_samples_per_prompt=0 is invalid"),
    ],
)
def test_validate_refuses_bad_options_naming_them(training, match):
    with pytest.raises(ValueError, match=match):
        small_config(**training).validate()


def test_validate_refuses_bad_generation_and_model_settings():
    with pytest.raises(ValueError, match="sampler='sglang' is invalid"):
        small_config().generation(sampler="sglang").validate()
    with pytest.raises(ValueError, match="temperature=0 is invalid"):
        small_config().generation(temperature=0).validate()
    with pytest.raises(ValueError, match=r"model_config\['model'\] must name the policy"):
        small_config().rl_module(model_config={"dtype": "float32"}).validate()
    with pytest.raises(ValueError, match="is fewer than the num_env_runners=3"):
        small_config(num_prompts_per_iteration=2).env_runners(num_env_runners=3).validate()
    small_config().env_runners(num_env_runners=3).validate()  # 16 prompts over 3 runners: 6, 5, 5


def test_config_defaults_follow_the_spec_and_round_trip_through_dicts():
    c = ReinforcePPConfig()
    assert (c.kl_coef, c.gamma, c.clip_low, c.clip_high, c.num_samples_per_prompt) == (0.01, 1.0, 0.2, 0.2, 4)
    assert c.kl_placement_used == "reward" and c.kl_estimator_used == "k1" and c.loss_agg_mode == "token-mean"
    base = c.copy().training(advantage_estimator="reinforce_pp_baseline")
    assert base.kl_placement_used == "loss" and base.kl_estimator_used == "k2"
    c2 = ReinforcePPConfig.from_dict(small_config(kl_coef=0.05, dual_clip=3.0).to_dict())
    assert (c2.kl_coef, c2.dual_clip, c2.max_new_tokens, c2.num_prompts_per_iteration) == (0.05, 3.0, 5, 16)


def test_two_iterations_train_sync_and_report_metrics():
    algo = small_config().build_algo()
    before = _policy(algo)
    results = [algo.train() for _ in range(2)]
    r = results[-1]
    learner = r["learners"]["default_policy"]
    for key in ("policy_loss", "clip_fraction", "ratio_mean", "ratio_max", "approx_kl_old", "kl_ref_per_token",
                "kl_ref_per_seq", "kl_coef", "entropy", "advantage_mean", "advantage_std",
                "logprob_mismatch_mean", "logprob_mismatch_max", "gradients_default_optimizer_global_norm"):
        assert np.isfinite(learner[key]), key
    runners = r["env_runners"]
    for key in ("episode_return_mean", "reward_std", "response_length_mean", "truncated_fraction",
                "completions_per_s", "tokens_per_s", "weights_version"):
        assert key in runners, key
    assert runners["reward"]["exact_match"] == pytest.approx(runners["episode_return_mean"])
    assert runners["num_env_steps_sampled"] == 64
    assert "sample_s" in runners["timers"] and "reward_s" in runners["timers"]
    assert {"old_logprobs_s", "ref_logprobs_s"} <= set(learner["timers"])
    assert {"env_runner_sampling_timer", "learner_update_timer", "synch_weights"} <= set(r["timers"])
    # Globally whitened advantages; π_old recomputed by the learner matches the sampler.
    assert learner["advantage_mean"] == pytest.approx(0.0, abs=1e-5)
    assert learner["advantage_std"] == pytest.approx(1.0, abs=1e-3)
    assert learner["logprob_mismatch_max"] < 1e-4
    assert learner["kl_coef"] == 0.01
    # The weights moved, and the runner samples with the learner's latest weights.
    after = _policy(algo)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    runner_weights = algo.env_runner.sampler.model.state_dict()
    assert all(torch.equal(runner_weights[k], after[k]) for k in after)
    assert algo.env_runner.sampler.weights_version == runners["weights_version"] + 1
    algo.stop()


def test_first_minibatch_is_on_policy():
    # One epoch, one mini-batch: π_θ = π_old when the loss is computed, so ρ = 1, nothing clips.
    algo = small_config(minibatch_size=64).build_algo()
    learner = algo.train()["learners"]["default_policy"]
    assert learner["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert learner["clip_fraction"] == 0.0 and learner["approx_kl_old"] == pytest.approx(0.0, abs=1e-7)
    assert learner["kl_ref_per_token"] == pytest.approx(0.0, abs=1e-6)  # π_old = π_ref before any update
    algo.stop()


@pytest.mark.parametrize("estimator", ["reinforce_pp_baseline", "grpo", "rloo"])
def test_other_estimators_train(estimator):
    algo = small_config(advantage_estimator=estimator).build_algo()
    learner = algo.train()["learners"]["default_policy"]
    assert np.isfinite(learner["policy_loss"])
    assert ("kl_loss" in learner) == (estimator != "rloo")  # KL as a loss term by default for these
    algo.stop()


def test_adaptive_kl_coef_moves_and_is_checkpointed(tmp_path):
    # k3 = e^-δ - 1 + δ >= 0 on every token (a sampled k1 mean can be negative, then β shrinks again).
    algo = small_config(kl_target=1e-9, kl_horizon=100, kl_estimator="k3",
                        reward_normalization="running").build_algo()
    learner = [algo.train()["learners"]["default_policy"] for _ in range(3)]
    betas = [m["kl_coef"] for m in learner]
    # The controller, fed the per-sequence KL each iteration reported: β·(1 + clip(KL/target - 1, ±0.2)·n/H).
    expected = 0.01
    for m in learner:
        expected *= 1 + min(max(m["kl_ref_per_seq"] / 1e-9 - 1, -0.2), 0.2) * 64 / 100
        assert m["kl_coef"] == pytest.approx(expected)
    assert betas[0] == pytest.approx(0.01 * (1 - 0.2 * 64 / 100))  # KL 0 at first (π_old = π_ref): β shrinks
    assert learner[1]["kl_ref_per_seq"] > 1e-9 and learner[2]["kl_ref_per_seq"] > 1e-9  # the policy moved
    assert betas[2] > betas[1] > betas[0]  # so KL exceeds the tiny target: β grows
    beta = betas[-1]
    order = algo.env_runner.env.order.get_state()
    moments = algo.reward_moments.get_state()
    assert moments["count"] == 3 * 64
    path = algo.save_to_path(str(tmp_path / "ckpt"))
    weights = _policy(algo)
    restored = ReinforcePP.from_checkpoint(path)
    assert restored.learner_group._learner.kl_coef == pytest.approx(beta)
    assert restored.reward_moments.get_state() == moments
    assert restored.env_runner.env.order.get_state() == order
    new_weights = _policy(restored)
    assert all(torch.equal(weights[k], new_weights[k]) for k in weights)
    opt = lambda a: a.learner_group._learner._named_optimizers["default_policy_default_optimizer"].state_dict()  # noqa: E731
    s1, s2 = opt(algo)["state"], opt(restored)["state"]
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k]["exp_avg"], torch.as_tensor(s2[k]["exp_avg"])) for k in s1)
    # The restored runner samples with the restored weights.
    runner_weights = restored.env_runner.sampler.model.state_dict()
    assert all(torch.equal(runner_weights[k], new_weights[k]) for k in new_weights)
    algo.stop()
    restored.stop()


def _changed_fraction(before, after, keys):
    changed = sum(int((before[k] != after[k]).sum()) for k in keys)
    return changed / sum(before[k].numel() for k in keys)


def test_bf16_compute_trains_fp32_master_weights_at_the_papers_learning_rate(tmp_path):
    # dtype is the compute (autocast) and rollout dtype; the master weights stay fp32, so an update
    # at lr 1e-6 moves nearly every weight (pure bf16 weights would round ~98 % of them away).
    algo = small_config(lr=1e-6).rl_module(model_config={"model": "tiny-arith", "dtype": "bfloat16"}).build_algo()
    before = _policy(algo)
    algo.train()
    after = _policy(algo)
    assert all(v.dtype == torch.float32 for v in after.values())
    layers = [k for k in after if "embed" not in k and "lm_head" not in k]  # unused vocabulary rows get no gradient
    assert _changed_fraction(before, after, layers) > 0.95
    # The runner serves the weights in the rollout dtype: the master weights rounded to bf16.
    runner = algo.env_runner.sampler.model.state_dict()
    assert all(runner[k].dtype == torch.bfloat16 and torch.equal(runner[k], after[k].bfloat16()) for k in after)
    # Checkpoints hold the fp32 master weights exactly.
    path = algo.save_to_path(str(tmp_path / "bf16"))
    restored = ReinforcePP.from_checkpoint(path)
    assert all(torch.equal(after[k], v) for k, v in _policy(restored).items())
    assert np.isfinite(restored.train()["learners"]["default_policy"]["policy_loss"])
    algo.stop()
    restored.stop()


def test_pure_bf16_master_weights_round_small_updates_away():
    # What the split prevents: with bf16 master weights most of an lr 1e-6 update is lost.
    cfg = small_config(lr=1e-6).rl_module(model_config={"model": "tiny-arith", "dtype": "bfloat16",
                                                        "param_dtype": "bfloat16"})
    algo = cfg.build_algo()
    before = _policy(algo)
    algo.train()
    after = _policy(algo)
    assert all(v.dtype == torch.bfloat16 for v in after.values())
    layers = [k for k in after if "embed" not in k and "lm_head" not in k]
    assert _changed_fraction(before, after, layers) < 0.2
    algo.stop()


def test_truncated_responses_penalize_and_mask():
    # No EOS can be sampled: every response ends at max_new_tokens, truncated by construction.
    no_eos = {"max_new_tokens": 2, "ignore_eos": True}
    algo = small_config(truncated_response="penalize", truncated_reward=-2.0).generation(**no_eos).build_algo()
    r = algo.train()
    assert r["reinforce_pp"]["truncated_fraction"] == 1.0
    assert r["reinforce_pp"]["reward_processed_mean"] == -2.0
    algo.stop()
    algo = small_config(truncated_response="mask").generation(**no_eos).build_algo()
    before = _policy(algo)
    r = algo.train()
    assert r["learners"]["default_policy"]["policy_loss"] == 0.0
    after = _policy(algo)
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing left to learn from
    algo.stop()


def test_export_policy_loads_in_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    algo = small_config().build_algo()
    algo.train()
    path = algo.export_policy(tmp_path / "export")
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    trained = _policy(algo)
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    assert tok.decode(tok("12+3=")["input_ids"], skip_special_tokens=True) == "12+3="
    algo.stop()


def test_greedy_eval_is_reported_and_matches_direct_evaluation():
    algo = small_config().evaluation(greedy_eval_interval=1).build_algo()
    r = algo.train()
    assert 0.0 <= r["greedy_eval"]["reward_mean"] <= 1.0 and r["greedy_eval"]["num_prompts"] == 500
    assert algo.evaluate_greedy()["reward_mean"] == pytest.approx(r["greedy_eval"]["reward_mean"])
    with pytest.raises(ValueError, match="no evaluation prompts"):
        small_config().evaluation(greedy_eval_prompts=None).build_algo().evaluate_greedy()
    algo.stop()
