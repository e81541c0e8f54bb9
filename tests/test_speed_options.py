"""Speed without changing the result: π_old from the sampler (the same update as recomputing it,
one forward pass cheaper, the sampler/learner gap still logged), and finished rows leaving the
transformers sampler's decode batch (the same tokens as `generate`)."""

import numpy as np
import pytest
import torch
from helpers import small_config

import rllib_rpp.core.batch as batch_module

pytestmark = pytest.mark.usefixtures("ray_local")


def test_old_logprobs_from_the_sampler_train_like_a_recompute_and_log_the_gap(monkeypatch):
    passes, weights, results = [], [], []
    real_pass = batch_module.logprob_pass

    def counted_pass(model, *args, **kwargs):
        passes.append(kwargs.get("with_entropy", False))
        return real_pass(model, *args, **kwargs)

    monkeypatch.setattr(batch_module, "logprob_pass", counted_pass)  # the learner runs in this process
    for source in ("recompute", "sampler"):
        passes.clear()
        algo = small_config(old_logprobs=source, minibatch_size=64).build_algo()
        results.append(algo.train()["learners"]["default_policy"])
        results[-1]["passes"] = list(passes)
        weights.append(algo.get_policy_state_dict())
        algo.stop()
    recompute, sampler = results
    assert np.isnan(sampler["entropy"]) and np.isfinite(recompute["entropy"])  # no π_old pass: no entropy
    assert recompute["passes"] == [True, False] and sampler["passes"] == [False]  # π_old pass skipped; π_ref kept
    assert sampler["logprob_mismatch_max"] < 1e-4 and recompute["logprob_mismatch_max"] < 1e-4  # measured both ways
    assert sampler["ratio_mean"] == pytest.approx(1.0, abs=1e-4)  # one mini-batch: π_θ = π_old = π_sampler
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="needs π_old recomputed"):
        small_config(old_logprobs="sampler", max_rollout_staleness=1).env_runners(num_env_runners=1).validate()


def test_old_logprobs_from_a_sampler_that_may_differ_warns():
    from rllib_rpp.reinforce_pp import validation

    risky = small_config(old_logprobs="sampler").generation(sampler="vllm")
    assert any("old_logprobs='sampler'" in w for w in validation.option_warnings(risky))
    assert not validation.option_warnings(small_config(old_logprobs="sampler"))  # transformers, fp32: exact


def test_transformers_sampler_stops_computing_finished_rows_and_decodes_as_generate():
    from envs.models import load_tokenizer, resolve_model_path
    from envs.tasks.arithmetic import arithmetic_prompts
    from rllib_rpp.samplers.base import SamplingParams
    from rllib_rpp.samplers.hf import TransformersSampler, left_pad

    path = resolve_model_path("tiny-arith")
    tok = load_tokenizer(path)
    sampler = TransformersSampler(path, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    prompts = [tok(r["prompt"])["input_ids"] for r in arithmetic_prompts("train")[:24]]
    prompts += [tok("1" * k)["input_ids"] for k in range(1, 9)]  # nonsense: may run to the limit
    selected = []
    from transformers.cache_utils import Cache  # record every compaction of the KV cache

    real = Cache.batch_select_indices
    Cache.batch_select_indices = lambda self, idx: (selected.append(len(idx)), real(self, idx))[1]
    try:
        out = sampler.generate(prompts, SamplingParams(n=1, max_new_tokens=12, greedy=True))
    finally:
        Cache.batch_select_indices = real
    assert selected and selected[-1] < len(prompts)  # finished rows left the batch
    ids, mask = left_pad(prompts, tok.pad_token_id)
    with torch.no_grad():
        ref = sampler.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    for row, got in zip(ref[:, ids.shape[1]:].tolist(), out.token_ids):
        want = row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row
        assert got == want
    lengths = {len(t) for t in out.token_ids}
    assert len(lengths) > 1  # rows really ended at different steps
