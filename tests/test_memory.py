"""The memory estimator against peak memory measured on CPU (each measurement in a fresh process),
and its numbers for the shapes users train."""

import pytest

from benchmarks.memory import MICRO, child
from rllib_rpp import ReinforcePPConfig
from rllib_rpp.memory import GiB, ModelShape, estimate_learner_memory

# The benchmark's settings at half the rows (the same ratios, half the time).
# Without checkpointing at a real vocabulary, with checkpointing on the 10M body (the third
# setting of the benchmark, the 10M body without checkpointing, adds nothing new).
SETTINGS = [{**m, "rows": m["rows"] // 2} for m in MICRO
            if m["model"] != "random:gen-10m" or m.get("gradient_checkpointing")]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda m: f"{m['model']}-ckpt{bool(m.get('gradient_checkpointing'))}")
def test_estimate_matches_the_measured_peak_of_a_microbatch_step(setting):
    r = child({"mode": "microbatch", **setting}, timeout=600)
    assert 0.75 <= r["measured_step_gb"] / r["predicted_step_gb"] <= 1.33, r


def test_estimates_for_real_shapes():
    def shape_of(name):
        from rpp_hub.synthetic import model_config

        return ModelShape.from_hf_config(model_config(name))

    assert shape_of("qwen2.5-1.5b").num_params == pytest.approx(1.544e9, rel=0.01)
    assert shape_of("llama-3.1-8b").num_params == pytest.approx(8.03e9, rel=0.01)
    full = estimate_learner_memory(shape_of("llama-3.1-8b"), tokens_per_microbatch=8192, gradient_checkpointing=True)
    # fp32 master + grads + Adam (16 B/param) and a bf16 reference: one 8B replica cannot fit 80 GB...
    assert full.total > 140 * GiB
    assert estimate_learner_memory(shape_of("llama-3.1-8b"), tokens_per_microbatch=8192, gradient_checkpointing=True,
                                   shards=8).total < 40 * GiB  # ...sharded over 8 it does
    ckpt = estimate_learner_memory(shape_of("qwen2.5-1.5b"), tokens_per_microbatch=8192, gradient_checkpointing=True)
    plain = estimate_learner_memory(shape_of("qwen2.5-1.5b"), tokens_per_microbatch=8192)
    assert ckpt.activations < plain.activations / 5
    cfg = ReinforcePPConfig().rl_module(model_config={"model": "random:qwen2.5-1.5b", "dtype": "bfloat16",
                                                      "gradient_checkpointing": True, "lora": {"r": 16}})
    assert cfg.memory_estimate().total < 10 * GiB  # LoRA: a bf16 base, tiny optimizer state, no reference


def test_reward_models_are_counted_against_their_workers_gpu_share(tiny_path, monkeypatch, caplog):
    """A GPU reward worker's reward model, in bf16 by default, against its share of the GPU."""
    from rllib_rpp import memory
    from rllib_rpp.app.presets import general_alignment
    from rpp_hub.models import model_config_of

    config = general_alignment(model="tiny-arith", reward_model="tiny-arith-rm", prompts="arithmetic", gpus=2)
    params = memory.ModelShape.from_hf_config(model_config_of("tiny-arith-rm")).num_params
    assert memory.reward_model_bytes(config) == 2 * params  # bf16; exact_match and friends count 0
    assert memory.reward_memory_warning(config) is None
    monkeypatch.setattr(memory, "gpu_memory_bytes", lambda default=0: 4 * params)  # a quarter: one byte per param
    assert "raise num_gpus_per_reward_worker" in memory.reward_memory_warning(config)
    config.validate()
    assert "reward model(s) need about" in caplog.text
