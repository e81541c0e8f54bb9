"""Weights through vLLM's weight-transfer engine (gloo on CPU): one broadcast from the learner to
two remote vLLM runners at different rank offsets, bf16 cast, tied embeddings, versions, and a
runner killed just before a transfer. The engines' weights are read back and compared exactly
(log-probs of two bf16 implementations differ by more than any tolerance worth asserting)."""

import os
import time

import numpy as np
import pytest
import torch
from helpers import small_config

pytestmark = [pytest.mark.vllm, pytest.mark.usefixtures("ray_local")]


# Tensors vLLM keeps as they were loaded (its linear layers are fused or repacked for the CPU).
AS_LOADED = ("embed_tokens", "lm_head", "norm")


def served_weights(algo) -> list[dict[str, torch.Tensor]]:
    """Each remote runner's engine weights (vLLM names = Hugging Face names for these)."""
    def engine_weights(runner):
        def read(model):
            return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                    if any(part in k for part in AS_LOADED)}
        return runner.sampler.llm.apply_model(read)[0]

    return algo.env_runner_group.foreach_env_runner(engine_weights, local_env_runner=False)


def assert_serves(served: dict[str, torch.Tensor], policy: dict[str, torch.Tensor]) -> None:
    """Exactly the learner's weights, cast to bf16: every embedding, norm and the lm_head."""
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} <= set(served)
    for k, v in served.items():
        want = policy[k].bfloat16()
        # vLLM pads the vocabulary rows of the embedding and lm_head (to a multiple of 64).
        assert v.shape[1:] == want.shape[1:] and torch.equal(v[: len(want)], want), k


def test_one_broadcast_reaches_two_runners_and_survives_a_runner_killed_mid_transfer():
    cfg = (small_config(lr=3e-3).rl_module(model_config={"model": "tiny-arith", "dtype": "bfloat16"})
           .generation(sampler="vllm", sampler_kwargs={"kv_cache_memory_bytes": 32 << 20})
           .env_runners(num_env_runners=2).fault_tolerance(restart_failed_env_runners=True)
           .training(weight_sync_timeout_s=60))
    assert cfg.weight_transfer_used == "gloo"
    algo = cfg.build_algo()
    before = served_weights(algo)[0]
    algo.train()
    policy = algo.get_policy_state_dict()
    served = served_weights(algo)
    assert len(served) == 2  # both ranks (offsets 1 and 2) got the bf16 weights, lm_head included
    for weights in served:
        assert_serves(weights, policy)
    assert any(not torch.equal(before[k], served[0][k]) for k in before)  # ...and they are the new ones
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
    policy = algo.get_policy_state_dict()
    for weights in served_weights(algo):
        assert_serves(weights, policy)
    algo.stop()
