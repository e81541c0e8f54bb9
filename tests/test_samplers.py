"""The sampler registry: each backend declares what it can do, nothing tells them apart by name,
and a third backend is one module plus one registry line (or just its "module:Class" path)."""

import pytest
from helpers import ScriptedSampler, small_config

from rllib_rpp.app.cli import build_parser
from rllib_rpp.reinforce_pp import validation
from rllib_rpp.samplers import SAMPLERS, register_sampler, sampler_class


@pytest.fixture
def scripted():
    register_sampler("scripted", "helpers:ScriptedSampler")
    yield "scripted"
    SAMPLERS.unregister("scripted")


def test_backends_declare_their_capabilities():
    hf, vllm = sampler_class("transformers"), sampler_class("vllm")
    assert hf.runs_learner_code and not hf.weight_transfer_engines and not hf.can_sleep and not hf.can_replay_logprobs
    assert vllm.weight_transfer_engines == ("gloo", "nccl") and vllm.can_sleep and vllm.can_replay_logprobs
    assert vllm.sized_by_sequence and not vllm.runs_learner_code
    with pytest.raises(ValueError, match="unknown sampler 'sglang'"):
        sampler_class("sglang")
    with pytest.raises(ValueError, match="not a subclass of rllib_rpp.samplers.base.Sampler"):
        sampler_class("helpers:small_config")
    with pytest.raises(ValueError, match="'my_server' is neither a subclass of .*Sampler nor a 'module:name' path"):
        register_sampler("remote", "my_server")


def test_a_third_backend_is_one_registry_line(scripted, ray_local):
    cfg = small_config().generation(sampler=scripted)
    cfg.validate()
    assert cfg.copy().env_runners(num_env_runners=2).weight_transfer_used is None  # no engine: object store
    assert build_parser().parse_args(["train", "tiny-arith", "--sampler", scripted]).sampler == scripted
    # What it declares decides: its log-probs are not the learner's, and it cannot sleep.
    assert any("old_logprobs='sampler'" in w for w in validation.option_warnings(
        small_config(old_logprobs="sampler").generation(sampler=scripted)))
    assert not validation.option_warnings(small_config(old_logprobs="sampler"))  # transformers in fp32: exact
    with pytest.raises(ValueError, match=r"sampler 'scripted' cannot free its memory between samples"):
        small_config().generation(sampler=scripted, sampler_kwargs={"enable_sleep_mode": True}).validate()
    algo = cfg.build_algo()
    r = algo.train()
    assert isinstance(algo.env_runner.sampler, ScriptedSampler)
    assert r["env_runners"]["num_env_steps_sampled"] == 64
    algo.stop()
    small_config().generation(sampler="helpers:ScriptedSampler").validate()  # a path needs no registration


def test_a_seeded_transformers_call_repeats_and_leaves_the_callers_stream():
    import torch

    from rllib_rpp.samplers import SamplingParams
    from rllib_rpp.samplers.hf import TransformersSampler

    sampler = TransformersSampler("tiny-arith", eos_token_id=2, pad_token_id=0)
    prompts = [[1, 21, 15, 22, 33], [1, 22, 23, 15, 21, 30]]
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    first, again, other = (sampler.generate(prompts, SamplingParams(n=8, max_new_tokens=6, seed=seed))
                           for seed in (3, 3, 4))
    assert first.token_ids == again.token_ids and first.logprobs == again.logprobs
    assert first.token_ids != other.token_ids
    assert torch.equal(torch.rand(2), expected)
