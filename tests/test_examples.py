"""The presets and tuned examples build and validate (GPU ones without loading any weights)."""

import pytest

from rllib_rpp.app.presets import general_alignment, math_reasoning, tiny_arith


def test_tiny_arith_config():
    c = tiny_arith()
    c.validate()
    assert (c.max_new_tokens, c.num_prompts_per_iteration, c.num_samples_per_prompt) == (5, 64, 4)
    assert c.env_config["reward_funcs"] == ["exact_match"] and c.greedy_eval_prompts == "arithmetic-eval"


@pytest.mark.parametrize("gpus", [1, 2, 3, 4, 6, 7, 8])
def test_math_preset_uses_every_gpu(gpus):
    c = math_reasoning(model="Qwen/Qwen2.5-7B-Instruct", prompts="math.jsonl", gpus=gpus)
    c.validate()
    assert c.sampler == "vllm" and c.kl_coef == 0.001 and c.model_config["model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert c.env_config["reward_funcs"][0] == "math_verify" and c.env_config["apply_chat_template"]
    if gpus == 1:  # colocated: one learner and one vLLM runner sharing the GPU
        assert (c.num_learners, c.num_env_runners) == (1, 1)
        assert c.num_gpus_per_env_runner > 0.5 and c.num_gpus_per_learner + c.num_gpus_per_env_runner == 1
        assert c.sampler_kwargs["sleep_level"] == 2 and c.release_memory_between_updates
    else:
        assert c.num_learners + c.num_env_runners == gpus and c.num_gpus_per_env_runner == 1
        assert c.learner_strategy == ("fsdp" if c.num_learners > 1 else "ddp")
    # Two optimizer steps per iteration over all learners, whatever the layout.
    assert c.minibatch_size * max(1, c.num_learners) * 2 == c.num_prompts_per_iteration * c.num_samples_per_prompt


def test_the_papers_batch_shape_validates_on_8_gpus_split_and_colocated():
    # 256 prompts x 4 samples, a train batch of 128: 8 optimizer steps per iteration.
    for placement in ({"learner_gpus": 4, "rollout_gpus": 4}, {"gpus": 8, "colocate": True}):
        c = math_reasoning(prompts="p.jsonl", num_prompts=256, samples_per_prompt=4, train_batch=128, **placement)
        c.validate()
        assert c.minibatch_size * c.num_learners == 128 and c.learner_strategy == "fsdp"
        used = c.num_gpus_per_learner * c.num_learners + c.num_gpus_per_env_runner * c.num_env_runners
        assert used == pytest.approx(8)
    c = math_reasoning(prompts="p.jsonl", num_prompts=256, learner_gpus=4, rollout_gpus=3, train_batch=128)
    c.validate()  # 256 prompts over 3 runners: 86, 85, 85


def test_general_gpu_config():
    c = general_alignment(model="sft", reward_model="rm", prompts="p.jsonl", gpus=2)
    c.validate()
    assert c.kl_coef == 0.01 and c.env_config["reward_funcs"] == ["rm"] and c.reward_normalization == "running"
    # The reward model: one reward worker on a quarter of each runner's GPU; vLLM leaves it room.
    assert (c.num_reward_workers, c.num_gpus_per_reward_worker, c.num_gpus_per_env_runner) == (1, 0.25, 0.75)
    assert c.sampler_kwargs["gpu_memory_utilization"] == pytest.approx(0.85 * 0.75, abs=1e-3)
    assert "reward_device" not in c.env_config  # runners never load it (workers score on their GPU)
    colocated = general_alignment(model="sft", reward_model="rm", prompts="p.jsonl", gpus=1)
    colocated.validate()
    assert colocated.num_reward_workers == 0 and colocated.env_config["reward_device"] == "cuda"
    own = general_alignment(model="sft", reward_model="rm", prompts="p.jsonl", gpus=3, reward_gpus=1)
    own.validate()
    assert (own.num_reward_workers, own.num_gpus_per_reward_worker, own.num_learners + own.num_env_runners) == (1, 1, 2)
    with pytest.raises(ValueError, match="reward_gpus=0.7 is invalid"):
        general_alignment(model="sft", reward_model="rm", prompts="p.jsonl", gpus=2, reward_gpus=0.7)


def test_gpu_presets_refuse_bad_placement():
    with pytest.raises(ValueError, match="at least one learner GPU and one rollout GPU"):
        math_reasoning(gpus=0)
    with pytest.raises(ValueError, match="give both learner_gpus and rollout_gpus"):
        math_reasoning(learner_gpus=2)
    with pytest.raises(ValueError, match="train_batch=100 must divide the 256 completions"):
        math_reasoning(gpus=4, train_batch=100)


def test_custom_reward_function_example_trains(ray_local):
    from tuned_examples.custom_reward import build_config, close_enough

    assert close_enough(["p"] * 3, ["12", "15", "x"], ["12"] * 3) == [1.0, 0.7, 0.0]
    algo = build_config().build_algo()
    r = algo.train()
    assert "close_enough" in r["env_runners"]["reward"]
    algo.stop()


def test_custom_env_subclass_example_trains(ray_local):
    from tuned_examples.custom_env import PalindromeEnv, build_config

    env = PalindromeEnv()
    env.reset()
    ids = env.tokenizer("cba", add_special_tokens=False)["input_ids"] + [env.eos_token_id]
    rec = env.prompts[0]
    assert env.rewards_for([rec], [ids]).rewards.tolist() == [1.0]
    algo = build_config().build_algo()
    r = algo.train()
    assert r["env_runners"]["num_env_steps_sampled"] == 40
    assert "reversed_word" in r["env_runners"]["reward"]
    algo.stop()


def test_an_estimator_named_by_its_path_reaches_remote_learners(ray_local):
    import torch

    from rllib_rpp.estimators import ESTIMATORS, Groups, get_estimator
    from tuned_examples.custom_estimator import build_config, median_baseline

    r, g = torch.tensor([1.0, 0.0, 0.0, 5.0, 1.0, 1.0]), Groups.of(torch.tensor([0, 0, 0, 1, 1, 1]))
    assert median_baseline(r, g).tolist() == [1.0, 0.0, 0.0, 4.0, 0.0, 0.0]
    assert "median_baseline" not in ESTIMATORS  # never registered: every process imports it by its path
    algo = build_config(num_learners=2).build_algo()
    assert algo.train()["env_runners"]["num_env_steps_sampled"] == 128
    found = algo.learner_group.foreach_learner(lambda learner: get_estimator(learner.config.advantage_estimator).name)
    assert [f.get() for f in found.result_or_errors] == ["median_baseline", "median_baseline"]
    algo.stop()
    with pytest.raises(ValueError, match="advantage_estimator='no_such.module:X' is invalid"):
        build_config().training(advantage_estimator="no_such.module:X").validate()


def test_a_policy_loss_named_by_its_path_reaches_remote_learners(ray_local):
    from rllib_rpp.policy_losses import POLICY_LOSSES, get_policy_loss
    from tuned_examples.custom_policy_loss import build_config

    assert "truncated_pg" not in POLICY_LOSSES  # never registered: every process imports it by its path
    algo = build_config(num_learners=2).build_algo()
    assert algo.train()["env_runners"]["num_env_steps_sampled"] == 128
    found = algo.learner_group.foreach_learner(lambda learner: get_policy_loss(learner.config.policy_loss).name)
    assert [f.get() for f in found.result_or_errors] == ["truncated_pg", "truncated_pg"]
    algo.stop()


def test_task_mixture_example_reports_each_task_everywhere(tmp_path, ray_local, monkeypatch):
    """Per-task reward/accuracy/length in the results, the console, the run directory (metrics.jsonl,
    tasks.png), the trackers, and a held-out evaluation per task; chain_sum's level moves by schedule."""
    import io
    import json

    from rllib_rpp.app import driver
    from rllib_rpp.app.console import Console
    from rllib_rpp.app.tracking import Trackers
    from tuned_examples.task_mixture import CURRICULUM, build_config

    logged = {}

    class Tracker:
        name = "fake"

        def start(self, hparams, run_id=None):
            return "run"

        def log(self, metrics, step):
            logged.update(metrics)

        def where(self):
            return "memory"

        def finish(self, ok=True):
            pass

    monkeypatch.setattr(driver, "build_trackers", lambda **kwargs: Trackers([Tracker()]))
    out = io.StringIO()
    config = build_config(num_prompts=8, samples=2, curriculum={**CURRICULUM, "schedule": [1]})
    run_dir = tmp_path / "run"
    summary = driver.run(config, iterations=2, time_budget_s=None, run_dir=str(run_dir),
                         console=Console(out, mode="plain", every_s=0))
    assert summary["iterations"] == 2
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    names = {"add", "chain_sum", "openenv"}
    assert all(set(r["tasks"]) == names for r in train + evals)
    assert [r["tasks"]["chain_sum"]["level"] for r in train] == [1, 1]  # up after 1 iteration (schedule)
    assert all(0.0 <= r["tasks"][t]["accuracy"] <= 1.0 for r in evals for t in names)
    assert (run_dir / "tasks.png").stat().st_size > 0 and (run_dir / "curves.png").exists()
    text = out.getvalue()
    assert "| add " in text and "chain_sum " in text and "(level 1)" in text  # status lines and eval lines
    assert {"env_runners/tasks/openenv/accuracy", "env_runners/tasks/add/response_length_mean",
            "greedy_eval/tasks/chain_sum/accuracy", "reinforce_pp/curriculum/chain_sum/level"} <= set(logged)


def test_tune_searches_over_task_weights_and_difficulty(tmp_path, ray_local):
    from tuned_examples.tune_search import TASK_METRIC, search, task_space

    results, best = search(over="tasks", tasks=task_space(size=64, eval_size=8), num_samples=1, max_iterations=1,
                           eval_interval=1, grace=1, storage_path=str(tmp_path), num_prompts=8)
    assert not results.errors and len(results) == 2
    digits = []
    for r in results:
        tasks, held_out = r.config["env_config"]["prompts"]["tasks"], r.config["greedy_eval_prompts"]["tasks"]
        assert tasks[0]["weight"] in (1.0, 3.0) and held_out == tasks  # each trial evaluates its own tasks
        digits.append(tasks[1]["prompts"]["config"]["max_digits"])
        assert TASK_METRIC.split("/")[1] in r.metrics["greedy_eval"]
    assert sorted(digits) == [1, 2]
