"""Task mixtures and curricula: weighted draws, per-task rewards and metrics, bad specs, the
curriculum's rules, and a run checkpointed and resumed that matches an uninterrupted one."""

import math
from collections import Counter

import pytest

from envs.curriculum import Curriculum, TaskCurriculum, merge
from envs.tasks import mixture
from envs.text_env import SingleTurnTextEnv

ONE_DIGIT = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


def _rg(**options):
    return {"source": "reasoning_gym", "dataset": "chain_sum", "config": ONE_DIGIT, "size": 48, "eval_size": 8,
            "chat": False, "instruction": "", **options}


def test_weighted_draws_are_exact_and_their_state_restores():
    order = mixture.TaskOrder([("a", 0, range(0, 10)), ("b", 0, range(10, 30)), ("c", 0, range(30, 35)),
                               ("off", 0, range(35, 40))], {"a": 2.0, "b": 1.0, "c": 1.0, "off": 0.0}, seed=3)
    first = order.take(40)
    owner = {i: t for t, r in (("a", range(0, 10)), ("b", range(10, 30)), ("c", range(30, 35)),
                               ("off", range(35, 40))) for i in r}
    assert Counter(owner[i] for i in first) == {"a": 20, "b": 10, "c": 10}  # 2 : 1 : 1, weight 0 never
    for k in (1, 3, 7):  # at any point each task's share is within one draw of its weight
        counts = Counter(owner[i] for i in order.take(k))
        assert all(counts[t] <= math.ceil(k * w / 4) + 1 for t, w in (("a", 2), ("b", 1), ("c", 1)))
    state = order.get_state()
    again = mixture.TaskOrder([("a", 0, range(0, 10)), ("b", 0, range(10, 30)), ("c", 0, range(30, 35)),
                               ("off", 0, range(35, 40))], {"a": 2.0, "b": 1.0, "c": 1.0, "off": 0.0}, seed=3)
    again.set_state(state)
    assert again.take(13) == order.take(13)


def test_a_mixture_routes_each_sample_to_its_tasks_reward_and_reports_per_task():
    tasks = [{"name": "sums", "prompts": _rg(), "weight": 1.0, "reward_funcs": ["exact_match"]},
             {"name": "add", "prompts": "arithmetic", "weight": 3.0, "reward_funcs": ["digits_format"]}]
    env = SingleTurnTextEnv(prompts=mixture.spec(tasks), max_new_tokens=4)
    prompts = env.next_prompts(8)
    assert Counter(p.columns["task"] for p in prompts) == {"sums": 2, "add": 6}
    answers = [p.columns["answer"] for p in prompts]
    ids = [env.tokenizer(a, add_special_tokens=False)["input_ids"] + [env.eos_token_id] for a in answers]
    res = env.rewards_for(prompts, ids)
    assert res.rewards.tolist() == [1.0] * 8
    sums = [i for i, p in enumerate(prompts) if p.columns["task"] == "sums"]
    # exact_match scored only the sums, digits_format only the additions (NaN: not that task's function)
    assert [i for i, v in enumerate(res.components["exact_match"]) if not math.isnan(v)] == sums
    assert [i for i, v in enumerate(res.components["digits_format"]) if math.isnan(v)] == sums
    held_out = mixture.rows(tasks=tasks, split="eval")
    assert Counter(r["task"] for r in held_out) == {"sums": 8}  # a list source has no held-out split
    env.close()


@pytest.mark.parametrize("tasks, message", [
    ([], "needs a non-empty list of tasks"),
    ([{"name": "x"}], "task 0 of the mixture has no 'prompts'"),
    ([{"prompts": "arithmetic", "wieght": 1}], r"unknown key\(s\) \['wieght'\]"),
    ([{"name": "a b", "prompts": "arithmetic"}], "name='a b' is invalid"),
    ([{"name": "a", "prompts": "arithmetic", "weight": -1}], "task 'a': weight=-1 is invalid"),
    ([{"name": "a", "prompts": "arithmetic", "weight": float("nan")}], "weight=nan is invalid"),
    ([{"name": "a", "prompts": "arithmetic", "weight": 0}], "are all 0"),
    ([{"name": "a", "prompts": "arithmetic"}, {"name": "a", "prompts": "arithmetic"}], "must be distinct"),
    ([{"name": "a", "prompts": "arithmetic", "curriculum": {"levels": [{}, {}], "schedule": [3]}}],
     "curriculum needs a task source with knobs"),
    ([{"name": "a", "prompts": _rg(), "curriculum": {"levels": [{}], "schedule": []}}], "levels=.* at least 2"),
    ([{"name": "a", "prompts": _rg(), "curriculum": {"levels": [{}, {}]}}], "give promote_at .* and/or schedule"),
    ([{"name": "a", "prompts": _rg(), "curriculum": {"levels": [{}, {}], "promote_at": 1.5}}],
     "promote_at=1.5 is invalid"),
    ([{"name": "a", "prompts": _rg(), "curriculum": {"levels": [{}, {}, {}], "schedule": [5, 5]}}],
     r"schedule=\[5, 5\] is invalid: expected 2 increasing"),
    ([{"name": "a", "prompts": _rg(), "curriculum": {"levels": [{}, {}], "schedule": [3], "every": 2}}],
     r"unknown key\(s\) \['every'\]"),
])
def test_bad_mixtures_and_curricula_name_the_bad_value(tasks, message):
    with pytest.raises(ValueError, match=message):
        mixture.rows(tasks=tasks)


def test_a_bad_level_is_refused_when_the_env_is_built_and_bad_levels_by_name():
    tasks = [{"name": "a", "prompts": _rg(), "curriculum": {"levels": [{}, {"config": {"max_digitz": 2}}],
                                                            "schedule": [3]}}]
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['max_digitz'\]"):
        SingleTurnTextEnv(prompts=mixture.spec(tasks), max_new_tokens=4)
    good = [{"name": "a", "prompts": _rg(), "curriculum": {"levels": [{}, {"config": {"max_digits": 2}}],
                                                           "schedule": [3]}}]
    with pytest.raises(ValueError, match="level 2 is invalid: expected 0..1"):
        mixture.rows(tasks=good, levels={"a": 2})
    with pytest.raises(ValueError, match=r"levels for unknown task\(s\) \['b'\]"):
        mixture.rows(tasks=good, levels={"b": 1})


def test_the_curriculum_moves_up_by_accuracy_and_by_schedule():
    assert merge({"config": {"a": 1, "b": 2}, "size": 3}, {"config": {"b": 5}}) == {"config": {"a": 1, "b": 5},
                                                                                    "size": 3}
    rg = _rg()
    by_accuracy = TaskCurriculum.parse("x", {"levels": [{}, {}, {}], "promote_at": 0.75, "window": 4}, rg)
    by_schedule = TaskCurriculum.parse("y", {"levels": [{}, {}, {}], "schedule": [2, 5]}, rg)
    both = TaskCurriculum.parse("z", {"levels": [{}, {}], "promote_at": 0.5, "window": 2, "schedule": [10]}, rg)
    c = Curriculum({"x": by_accuracy, "y": by_schedule, "z": both}, {"x": 1.0, "y": 1.0, "z": 0.5})
    c.observe("x", [1.0, 1.0, 0.0])  # 3 samples: the window of 4 is not full
    c.observe("z", [0.4, float("nan")])  # a skipped sample does not count
    assert c.update(1) == {} and c.levels == {"x": 0, "y": 0, "z": 0}
    c.observe("x", [1.0])  # 3 of the last 4 correct: 0.75
    c.observe("z", [0.6])  # 0.6 >= correct_at 0.5: 1 of 2
    assert c.update(2) == {"x": 1, "y": 1, "z": 1} and math.isnan(c.accuracy("x"))  # the window starts afresh
    c.observe("x", [1.0, 0.0, 0.0, 0.0, 1.0])  # last 4: 0.25
    assert c.update(4) == {}
    state = c.get_state()
    assert c.update(5) == {"y": 2} and c.update(99) == {}  # levels stop at the last
    restored = Curriculum({"x": by_accuracy, "y": by_schedule, "z": both}, {"x": 1.0, "y": 1.0, "z": 0.5})
    restored.set_state(state)
    assert restored.get_state() == state and restored.update(5) == {"y": 2}
    with pytest.raises(ValueError, match=r"task\(s\) \['w'\] that this config's mixture does not have"):
        restored.set_state({**state, "levels": {"w": 1}})


def _resume_config():
    from tuned_examples import curriculum

    # correct_at=0: every sample counts as correct, so the promotions do not depend on what was sampled.
    sums = curriculum.task(promote_at=1.0, window=16, schedule=None, correct_at=0.0, size=64, eval_size=8)
    scheduled = {**curriculum.task(promote_at=None, schedule=(2, 3), size=64, eval_size=8), "name": "scheduled"}
    scheduled["prompts"] = {**scheduled["prompts"], "seed": 5}
    tasks = [{**sums, "reward_funcs": ["exact_match"]}, {**scheduled, "reward_funcs": ["exact_match"]}]
    return (curriculum.build_config(num_prompts=8, samples=2)
            .environment(env_config={"prompts": mixture.spec(tasks), "reward_funcs": ["exact_match"]})
            .evaluation(greedy_eval_prompts=None))


def test_a_resumed_run_has_the_uninterrupted_runs_curriculum_and_prompts(tmp_path, ray_local):
    from rllib_rpp import ReinforcePP

    straight = _resume_config().build_algo()
    levels_seen = []
    for _ in range(4):
        r = straight.train()
        levels_seen.append({t: int(v["level"]) for t, v in r["reinforce_pp"]["curriculum"].items()})
    # 4 samples of chain_sum per iteration, all correct: up after every 2 iterations; the other by schedule.
    assert levels_seen == [{"chain_sum": 0, "scheduled": 0}, {"chain_sum": 1, "scheduled": 1},
                           {"chain_sum": 1, "scheduled": 2}, {"chain_sum": 2, "scheduled": 2}]
    assert r["env_runners"]["tasks"]["chain_sum"]["num_samples"] == 8
    first = _resume_config().build_algo()
    first.train()
    first.train()
    path = first.save_to_path(str(tmp_path / "ckpt"))
    first.stop()
    resumed = ReinforcePP.from_checkpoint(path)
    for _ in range(2):
        resumed.train()
    assert resumed.curriculum.get_state() == straight.curriculum.get_state()
    env_a, env_b = straight.env_runner.env, resumed.env_runner.env
    assert env_b.get_state() == env_a.get_state() and env_b.order.levels == {"chain_sum": 2, "scheduled": 2}
    assert [p.prompt for p in env_b.next_prompts(8)] == [p.prompt for p in env_a.next_prompts(8)]
    level_2 = env_b.order.ranges[("chain_sum", 2)]  # the prompts of three-digit terms
    assert all(p.index in level_2 for p in env_b.next_prompts(16) if p.columns["task"] == "chain_sum")
    # held-out evaluation at the current levels
    ev = resumed.evaluate_greedy(mixture.spec(resumed.config.env_config["prompts"]["tasks"], "eval"))
    assert set(ev["tasks"]) == {"chain_sum", "scheduled"} and ev["num_prompts"] == 16
    straight.stop()
    resumed.stop()


def test_reward_workers_get_each_tasks_reward_functions():
    from rllib_rpp import ReinforcePPConfig
    from rllib_rpp.env_runners.reward_workers import RewardWorker, reward_env_config

    tasks = [{"name": "sums", "prompts": _rg()},
             {"name": "add", "prompts": "arithmetic", "reward_funcs": ["digits_format"]}]
    config = ReinforcePPConfig().environment(env_config={"prompts": mixture.spec(tasks),
                                                         "reward_funcs": ["exact_match"]})
    options = reward_env_config(config)
    assert options["task_rewards"] == {"sums": {"reward_funcs": ["reasoning_gym"], "reward_weights": None},
                                       "add": {"reward_funcs": ["digits_format"], "reward_weights": None}}
    worker = RewardWorker(options)  # (the actor's class, built here in process)
    res = worker.reward({"prompts": ["1+1=", "x"], "completions": ["2", "ab"], "task": ["add", None],
                        "answer": [None, "ab"]})
    assert res.rewards.tolist() == [1.0, 1.0] and set(res.components) == {"digits_format", "exact_match"}
    worker.stop()
