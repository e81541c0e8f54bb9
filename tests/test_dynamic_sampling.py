"""DAPO dynamic sampling: which groups are kept, how many rounds are drawn, the trim to whole
mini-batches; then through the public API with remote runners and with async rollouts."""

from __future__ import annotations

import pytest
import torch

from rllib_rpp import schema as S
from rllib_rpp.reinforce_pp.dynamic_sampling import fill_batch, is_informative, trim_for_update


class Episode:
    """What dynamic sampling reads of an episode: its reward, group id and skipped flag."""

    def __init__(self, group: int, reward: float, skipped: bool = False):
        self.reward = reward
        self.custom_data = {S.GROUP_ID: group, S.REWARD_SKIPPED: skipped}

    def get_rewards(self, index):
        return self.reward


def groups(rewards_per_group, first_id=0):
    return [Episode(first_id + g, r) for g, rs in enumerate(rewards_per_group) for r in rs]


def test_a_group_is_informative_when_its_rewards_differ_skipped_samples_left_out():
    assert is_informative([Episode(0, 1.0), Episode(0, 0.0)])
    assert not is_informative([Episode(0, 1.0), Episode(0, 1.0)])
    assert not is_informative([Episode(0, 1.0), Episode(0, 0.0, skipped=True)])


def test_fill_batch_draws_until_the_target_then_keeps_exactly_the_target():
    draws = iter([
        groups([[1, 1], [0, 1], [0, 0]], first_id=0),  # 1 informative of 3
        groups([[1, 0], [1, 1], [0, 1]], first_id=10),  # 2 more (3 wanted: 2 left to find)
    ])
    asked = []

    def draw(n):
        asked.append(n)
        return next(draws), [{"runner": len(asked)}]

    episodes, metrics, stats = fill_batch(draw, target=3, max_rounds=5)
    assert asked == [3, 2]  # the second draw asks for what is still missing
    assert [e.custom_data[S.GROUP_ID] for e in episodes] == [1, 1, 10, 10, 12, 12]
    assert stats == {"rounds": 2.0, "prompts_drawn": 6.0, "groups_dropped": 3.0, "informative_groups": 3.0,
                     "short_of_target": 0.0}
    assert metrics == [{"runner": 1}, {"runner": 2}]


def test_fill_batch_stops_after_max_rounds_and_says_it_is_short():
    def draw(n):
        return groups([[1, 1]] * (n - 1) + [[0, 1]], first_id=100 * n), []

    episodes, _, stats = fill_batch(draw, target=4, max_rounds=2)
    assert stats["rounds"] == 2 and stats["informative_groups"] == 2 and stats["short_of_target"] == 1.0
    assert len(episodes) == 4
    assert fill_batch(lambda n: ([], []), target=4, max_rounds=3)[2]["rounds"] == 1  # nothing came back


def test_trim_drops_whole_trailing_groups_until_the_minibatches_are_equal():
    eps = groups([[0, 1, 1, 0]] * 5)  # 5 groups x 4 = 20 completions
    kept, minibatch = trim_for_update(eps, learners=2, steps=2)  # needs a multiple of 4: all 20 fit
    assert len(kept) == 20 and minibatch == 5
    eps3 = groups([[0, 1, 1]] * 5)  # 15 completions: a multiple of 4 needs whole groups of 3 -> 12
    kept, minibatch = trim_for_update(eps3, learners=2, steps=2)
    assert len(kept) == 12 and minibatch == 3
    assert trim_for_update(groups([[0, 1, 1]]), learners=2, steps=2) == ([], 0)


def test_an_iteration_without_an_update_says_why_at_most_every_30_s(caplog):
    from rllib_rpp.reinforce_pp.no_update import NoUpdateNotice, no_informative_group

    clock = Clock()
    notice = NoUpdateNotice(every_s=30.0, clock=clock)
    why = no_informative_group({"rounds": 3.0, "prompts_drawn": 48.0, "informative_groups": 0.0})
    with caplog.at_level("WARNING", logger="rllib_rpp"):
        for it in range(1, 5):  # one iteration every 10 s
            notice(it, why)
            clock.t += 10.0
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and said[0].startswith("iteration 1: dynamic sampling drew 48 prompt groups in 3 round(s) "
                                                 "and none was informative")
    assert said[1].startswith("iteration 4:") and "(4 iterations without an update so far)" in said[1]
    trimmed = no_informative_group({"rounds": 1.0, "prompts_drawn": 4.0, "informative_groups": 1.0})
    assert "1 informative group(s) held too few completions for one equal mini-batch" in trimmed


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def same_for_all(completions, **kwargs):  # every group uninformative
    return [1.0] * len(completions)


def test_dynamic_sampling_that_finds_no_informative_group_warns_and_trains_on_nothing(ray_local, caplog):
    from rllib_rpp.app.presets import tiny_arith

    config = (tiny_arith(estimator="grpo", num_prompts=8, samples_per_prompt=2)
              .training(dynamic_sampling=True, max_sampling_rounds=2, minibatch_size=16)
              .environment(env_config={"prompts": "arithmetic", "reward_funcs": [same_for_all]})
              .rewards(reward_timeout_s=None).evaluation(greedy_eval_prompts=None, greedy_eval_interval=0))
    algo = config.build_algo()
    try:
        before = algo.get_policy_state_dict()
        with caplog.at_level("WARNING", logger="rllib_rpp"):
            r = algo.train()
        assert r["reinforce_pp"]["dynamic_sampling"]["informative_groups"] == 0.0
        assert r["reinforce_pp"]["iteration"]["updated"] == 0.0
        assert "iteration 1: dynamic sampling drew 16 prompt groups in 2 round(s) and none was" in caplog.text
        after = algo.get_policy_state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    finally:
        algo.stop()


def test_dynamic_sampling_options_are_checked(caplog):
    from rllib_rpp.app.presets import tiny_arith

    with pytest.raises(ValueError, match="num_samples_per_prompt=1 every group has one sample"):
        tiny_arith(estimator="reinforce_pp", samples_per_prompt=1).training(dynamic_sampling=True).validate()
    with pytest.raises(ValueError, match="max_sampling_rounds=0 is invalid"):
        tiny_arith(estimator="grpo").training(dynamic_sampling=True, max_sampling_rounds=0).validate()
    with caplog.at_level("WARNING"):
        tiny_arith(estimator="reinforce_pp").training(dynamic_sampling=True).validate()
    assert "no per-prompt baseline" in caplog.text


@pytest.mark.parametrize("layout", ["remote runners", "async"])
def test_dynamic_sampling_trains_on_informative_groups_only(ray_local, layout):
    from rllib_rpp.app.presets import tiny_arith

    config = tiny_arith(estimator="grpo", num_prompts=16, samples_per_prompt=4).training(
        dynamic_sampling=True, max_sampling_rounds=3)
    config.env_runners(num_env_runners=2)
    if layout == "async":
        config.training(max_rollout_staleness=1)
    algo = config.build_algo()
    dropped = 0.0
    for _ in range(3):
        r = algo.train()
        ds = r["reinforce_pp"]["dynamic_sampling"]
        assert 1 <= ds["rounds"] <= 3 and 0 < ds["informative_groups"] <= 16
        assert ds["prompts_drawn"] >= ds["informative_groups"] + ds["groups_dropped"]  # surplus groups are cut
        assert ds["short_of_target"] == float(ds["informative_groups"] < 16)
        # The learners trained on the informative groups' completions and nothing else.
        assert r["learners"]["default_policy"]["num_seqs"] == ds["informative_groups"] * 4
        dropped += ds["groups_dropped"]
    algo.stop()
    assert dropped > 0  # tiny-arith answers some prompts always or never right: groups are dropped
