"""Ray Tune, several learners (gloo on CPU) and remote env runners."""

import pytest
import torch
from helpers import small_config

from rllib_rpp import schema as S

pytestmark = pytest.mark.usefixtures("ray_local")


def test_two_learners_whiten_globally_with_a_remote_runner():
    cfg = small_config(minibatch_size=16).learners(num_learners=2).env_runners(num_env_runners=1)
    algo = cfg.build_algo()
    r = algo.train()
    assert r["env_runners"]["num_env_steps_sampled"] == 64
    shards = algo.learner_group.foreach_learner(
        lambda learner: (learner.last_batch[S.ADVANTAGES], learner.last_batch[S.RESPONSE_MASK]))
    shards = [s.get() for s in shards.result_or_errors]
    assert len(shards) == 2
    values = torch.cat([adv[mask > 0] for adv, mask in shards]).double()
    # Whitened over the whole batch: zero mean, unit (population) std over BOTH shards' tokens...
    assert values.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert values.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    # ...while each shard alone is not standardised (per-shard whitening would make it so).
    per_shard = [adv[mask > 0].double() for adv, mask in shards]
    assert any(abs(s.mean().item()) > 1e-3 or abs(s.std(unbiased=False).item() - 1) > 1e-3 for s in per_shard)
    # Both learners hold identical weights after the DDP update, and the runner got them.
    w = algo.learner_group.foreach_learner(
        lambda learner: {k: v.clone() for k, v in learner.module["default_policy"].unwrapped().lm.state_dict().items()})
    w0, w1 = [x.get() for x in w.result_or_errors]
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    versions = algo.env_runner_group.foreach_env_runner(lambda runner: runner.sampler.weights_version,
                                                        local_env_runner=False)
    assert versions == [1]
    r2 = algo.train()
    assert r2["env_runners"]["weights_version"] == 1  # the second batch came from the updated policy
    algo.stop()


def test_balanced_order_gives_equal_counts_and_near_equal_tokens():
    import random

    from rllib_rpp.core.balance import balanced_order

    rng = random.Random(0)
    lengths = [rng.choice([20, 30, 1000, 1500]) if i % 7 == 0 else rng.randint(10, 60) for i in range(64)]
    for shards in (2, 4):
        order = balanced_order(lengths, shards)
        assert sorted(order) == list(range(64))
        tokens = [sum(lengths[i] for i in order[s::shards]) for s in range(shards)]  # round-robin dealing
        naive = [sum(lengths[s::shards]) for s in range(shards)]
        assert max(tokens) - min(tokens) <= max(lengths)
        assert max(tokens) / min(tokens) < max(naive) / min(naive)
    with pytest.raises(ValueError, match="do not split evenly over 3 learners"):
        balanced_order(lengths, 3)


def test_three_remote_runners_draw_disjoint_prompts_and_split_a_batch_unevenly():
    algo = small_config(num_prompts_per_iteration=16).env_runners(num_env_runners=3).build_algo()
    eps = algo.env_runner_group.foreach_env_runner(lambda runner: runner.sample(num_prompts=8),
                                                   local_env_runner=False)
    idx = [{e.get_infos(0)["prompt_index"] for e in runner_eps[::4]} for runner_eps in eps]
    assert [len(i) for i in idx] == [8, 8, 8] and not (idx[0] & idx[1] or idx[0] & idx[2] or idx[1] & idx[2])
    algo.train()  # (its count includes the 3 x 8 prompts drawn above)
    assert algo.train()["env_runners"]["num_env_steps_sampled"] == 64  # 6 + 5 + 5 prompts, 4 samples each
    algo.stop()


