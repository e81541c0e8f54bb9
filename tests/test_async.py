"""Bounded-staleness async rollouts: one step off policy, stale batches dropped, and the per-token
corrections (TIS, ICEPOP-style mask) exactly as specified."""

import numpy as np
import pytest
import torch
from helpers import small_config
from test_learner_core import loss_of, make_learner, token_batch

import rllib_rpp.functional as F
from rllib_rpp import schema as S
from rllib_rpp.reinforce_pp.rollouts import AsyncRollouts, shares


def test_async_rollouts_train_one_step_off_policy(ray_local):
    algo = small_config(max_rollout_staleness=1).env_runners(num_env_runners=1).build_algo()
    results = [algo.train() for _ in range(4)]
    stats = [r["reinforce_pp"]["async"] for r in results]
    # The first batch was sampled by the initial weights before any update; every later one with
    # the weights of one update before the learner's.
    assert [s["staleness"] for s in stats] == [0.0, 1.0, 1.0, 1.0]
    assert [r["env_runners"]["weights_version"] for r in results] == [0, 0, 1, 2]
    assert all(s["dropped_batches"] == 0 and 0.0 <= s["overlap_fraction"] <= 1.0 for s in stats)
    assert all(np.isfinite(r["learners"]["default_policy"]["policy_loss"]) for r in results)
    assert "idle_s" in results[-1]["env_runners"]["timers"]
    algo.stop()
    with pytest.raises(ValueError, match="max_rollout_staleness=1 needs remote env runners"):
        small_config(max_rollout_staleness=1).validate()


class _Group:
    """A stand-in env runner group whose one runner hands back a batch of a given version."""

    def __init__(self, version):
        self.version, self.calls = version, []

    def healthy_env_runner_ids(self):
        return [1]

    def foreach_env_runner_async(self, funcs, tag, remote_worker_ids):
        self.calls.append(("issue", len(funcs)))

    def fetch_ready_async_reqs(self, tags, timeout_seconds):
        episode = type("E", (), {"custom_data": {S.WEIGHTS_VERSION: self.version}})()
        return [(1, ([episode] * 4, {}))]


def test_a_batch_older_than_the_bound_is_never_trained_on():
    for version, dropped in ((2, False), (1, True)):
        algo = type("A", (), {"env_runner_group": _Group(version),
                              "config": type("C", (), {"num_prompts_per_iteration": 8})()})()
        pushes = []
        episodes, _, stats = AsyncRollouts(algo).next_batch(3, 1, lambda p=pushes: p.append(1))
        assert stats["staleness"] == 3 - version and bool(stats["dropped_batches"]) == dropped
        assert (episodes == []) == dropped and pushes == [1]  # weights pushed before the next request
        assert algo.env_runner_group.calls == [("issue", 1), ("issue", 1)]
    assert shares(10, 3) == [4, 3, 3] and sum(shares(256, 7)) == 256


def test_is_mask_drops_far_off_tokens_from_the_loss_exactly():
    losses, batches = [], []
    for mask_range in (None, (0.5, 2.0)):
        learner = make_learner(kl_coef=0.0, is_mask_range=mask_range)
        batch, _ = token_batch("reinforce_pp", seed=7)
        learner.prepare_batch(batch)  # π_old computed; put the sampler far off on every other token
        old = batch[S.OLD_LOGPROBS]
        off = torch.zeros_like(old, dtype=torch.bool)
        off[:, ::2] = True
        batch[S.SAMPLER_LOGPROBS] = torch.where(off, old - 3.0, old - 0.1)
        learner.prepare_batch(batch)
        losses.append(loss_of(learner, batch))
        batches.append(batch)
    batch = batches[1]
    mask = batch[S.RESPONSE_MASK]
    keep = (~off).float()
    assert torch.equal(batch[S.IS_WEIGHTS] * mask, keep * mask)  # ratio e^3 > 2 leaves, e^0.1 stays
    logprobs = losses[1][1]
    want = F.clipped_policy_loss(logprobs, batch[S.OLD_LOGPROBS], batch[S.ADVANTAGES], mask, is_weights=keep).loss
    torch.testing.assert_close(losses[1][0], want)
    assert not torch.isclose(losses[1][0], losses[0][0])  # the mask changed the loss
