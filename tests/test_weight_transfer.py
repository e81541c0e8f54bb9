"""Weights through vLLM's weight-transfer engine (gloo on CPU): one broadcast from the learner to
two remote vLLM runners at different rank offsets, bf16 cast, tied embeddings, versions, and a
runner killed in the middle of a transfer."""

import os
import time

import numpy as np
import pytest
import torch
from helpers import small_config
from transformers import AutoModelForCausalLM

from envs.models import resolve_model_path
from rllib_rpp.core.logprobs import response_logprobs
from rllib_rpp.samplers.hf import left_pad

pytestmark = [pytest.mark.vllm, pytest.mark.usefixtures("ray_local")]


def served_logprobs(algo, prompts, responses):
    """Each remote runner's replay of the responses' log-probs (its engine's weights)."""
    return algo.env_runner_group.foreach_env_runner(
        lambda runner: runner.sampler.replay_logprobs(prompts, responses), local_env_runner=False)


def reference_logprobs(weights, prompts, responses):
    """The same log-probs from a transformers model holding `weights` (bf16, like the engines)."""
    lm = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny-arith"), dtype=torch.bfloat16)
    lm.load_state_dict({k: v.bfloat16() for k, v in weights.items()})
    p_ids, p_mask = left_pad(prompts, 0)
    r_ids = torch.zeros(len(responses), max(map(len, responses)), dtype=torch.long)
    r_mask = torch.zeros(r_ids.shape)
    for i, r in enumerate(responses):
        r_ids[i, : len(r)], r_mask[i, : len(r)] = torch.tensor(r), 1
    with torch.no_grad():
        lp, _ = response_logprobs(lm, {"prompt_ids": p_ids, "prompt_mask": p_mask, "response_ids": r_ids,
                                       "response_mask": r_mask})
    return np.concatenate([lp[i, : len(r)].float().numpy() for i, r in enumerate(responses)])


def test_one_broadcast_reaches_two_runners_and_survives_a_runner_killed_mid_transfer():
    cfg = (small_config(lr=3e-3).rl_module(model_config={"model": "tiny-arith", "dtype": "bfloat16"})
           .generation(sampler="vllm", sampler_kwargs={"kv_cache_memory_bytes": 32 << 20})
           .env_runners(num_env_runners=2).fault_tolerance(restart_failed_env_runners=True)
           .training(weight_sync_timeout_s=60))
    assert cfg.weight_transfer_used == "gloo"
    algo = cfg.build_algo()
    eps = algo.env_runner_group.foreach_env_runner(lambda runner: runner.sample(num_prompts=2),
                                                   local_env_runner=False)[0]
    prompts = [e.get_observations(0)["input_ids"][e.get_observations(0)["attention_mask"] == 1].tolist() for e in eps]
    responses = [e.get_actions(0)[: int(e.get_extra_model_outputs("response_mask", 0).sum())].tolist() for e in eps]
    # Plus a response no policy would sample: the log-probs of unlikely tokens move with their
    # logits, so an update shows whatever the runners happened to sample.
    prompts, responses = prompts + prompts[:1], responses + [[60, 70, 80, 90, 2]]
    before = np.concatenate(served_logprobs(algo, prompts, responses)[0])
    algo.train()
    want = reference_logprobs(algo.get_policy_state_dict(), prompts, responses)
    served = [np.concatenate(s) for s in served_logprobs(algo, prompts, responses)]
    assert len(served) == 2  # both ranks (offsets 1 and 2) got the bf16 weights, lm_head included
    for s in served:
        np.testing.assert_allclose(s, want, rtol=0.02, atol=0.05)  # bf16: 1 ulp at |lp| ~ 10 is 0.06
    assert np.abs(served[0] - before).max() > 0.1  # ...and they are the new ones
    versions = algo.env_runner_group.foreach_env_runner(lambda r: r.sampler.weights_version, local_env_runner=False)
    assert versions == [1, 1]
    # Kill runner 1 just before the next broadcast: the transfer fails, the group is formed again
    # with the runner left, which gets the weights; Ray restarts the dead one, which is re-synced.
    sync, killed = algo._engine_sync, []
    transfer = sync._transfer

    def kill_first(ids, version):
        if not killed:
            pid = algo.env_runner_group.foreach_env_runner(lambda r: os.getpid(), remote_worker_ids=[ids[0]],
                                                           local_env_runner=False)[0]
            os.kill(pid, 9)
            killed.append(pid)
        return transfer(ids, version)

    sync._transfer = kill_first
    deadline = time.time() + 240  # Ray restarts the runner (a new vLLM engine), RLlib probes it back
    while time.time() < deadline:
        r = algo.train()
        assert np.isfinite(r["learners"]["default_policy"]["policy_loss"])
        if algo.env_runner_group.num_healthy_remote_workers() == 2 and sync.ids == [1, 2]:
            break
    assert killed and algo.env_runner_group.num_healthy_remote_workers() == 2
    algo.train()
    versions = algo.env_runner_group.foreach_env_runner(lambda r: r.sampler.weights_version, local_env_runner=False)
    assert len(set(versions)) == 1 and versions[0] == algo._learner_version
    want = reference_logprobs(algo.get_policy_state_dict(), prompts, responses)
    for s in served_logprobs(algo, prompts, responses):
        np.testing.assert_allclose(np.concatenate(s), want, rtol=0.02, atol=0.05)
    algo.stop()
