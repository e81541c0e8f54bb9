"""The presets and tuned examples build and validate (GPU ones without loading any weights)."""

import pytest

from rllib_rpp.presets import general_alignment, math_reasoning, tiny_arith


def test_tiny_arith_config():
    c = tiny_arith()
    c.validate()
    assert (c.max_new_tokens, c.num_prompts_per_iteration, c.num_samples_per_prompt) == (5, 64, 4)
    assert c.env_config["reward_funcs"] == ["exact_match"] and c.greedy_eval_prompts == "arithmetic-eval"


@pytest.mark.parametrize("gpus", [1, 2, 3])
def test_math_gpu_config(gpus):
    c = math_reasoning(model="Qwen/Qwen2.5-7B-Instruct", prompts="math.jsonl", gpus=gpus)
    c.validate()
    assert c.sampler == "vllm" and c.kl_coef == 0.001 and c.model_config["model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert c.env_config["reward_funcs"][0] == "math_verify" and c.env_config["apply_chat_template"]
    assert c.num_gpus_per_env_runner == (0.5 if gpus == 1 else 1)
    assert c.num_env_runners == max(1, gpus - 1)
    assert c.sampler_kwargs.get("enable_sleep_mode", False) == (gpus == 1)


def test_general_gpu_config():
    c = general_alignment(model="sft", reward_model="rm", prompts="p.jsonl", gpus=2)
    c.validate()
    assert c.kl_coef == 0.01 and c.env_config["reward_funcs"] == ["rm"] and c.reward_normalization == "running"


def test_gpu_examples_refuse_bad_placement():
    with pytest.raises(ValueError, match="at least one GPU"):
        math_reasoning(gpus=0)
    with pytest.raises(ValueError, match="must split over 3 vLLM runners"):
        math_reasoning(gpus=4, num_prompts=64)


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
    assert env.score([rec], [ids]).rewards.tolist() == [1.0]
    algo = build_config().build_algo()
    r = algo.train()
    assert r["env_runners"]["num_env_steps_sampled"] == 40
    assert "reversed_word" in r["env_runners"]["reward"]
    algo.stop()
