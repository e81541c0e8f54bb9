"""Speed without changing the result: π_old from the sampler (the same update as recomputing it,
one forward pass cheaper, the sampler/learner gap and the entropy still logged), taken by default
where it is exact, and finished rows leaving the transformers sampler's decode batch (the same
tokens as `generate`)."""

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
    for source in ("recompute", "sampler", "auto"):
        passes.clear()
        algo = small_config(old_logprobs=source, minibatch_size=64).build_algo()
        results.append(algo.train()["learners"]["default_policy"])
        results[-1]["passes"] = list(passes)
        weights.append(algo.get_policy_state_dict())
        algo.stop()
    recompute, sampler, auto = results
    # One mini-batch: the training forward runs at π_old, so its entropy is the π_old pass's.
    assert sampler["entropy"] == pytest.approx(recompute["entropy"], rel=1e-4)
    assert recompute["passes"] == [True, False] and sampler["passes"] == [False]  # π_old pass skipped; π_ref kept
    assert auto["passes"] == [False]  # the default: transformers in fp32 is exact
    assert sampler["logprob_mismatch_max"] < 1e-4 and recompute["logprob_mismatch_max"] < 1e-4  # measured both ways
    assert sampler["ratio_mean"] == pytest.approx(1.0, abs=1e-4)  # one mini-batch: π_θ = π_old = π_sampler
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(weights[2][k], weights[1][k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs π_old recomputed"):
        small_config(old_logprobs="sampler", max_rollout_staleness=1).env_runners(num_env_runners=1).validate()


@pytest.mark.parametrize("change, used", [
    ({}, "sampler"),  # transformers sampler, fp32, on-policy: the sampler's numbers are the learner's
    ({"generation": {"sampler": "vllm"}}, "recompute"),  # another engine's kernels
    ({"model": {"dtype": "bfloat16"}}, "recompute"),  # bf16: the KV-cached decode rounds differently
    ({"training": {"tis_cap": 2.0}}, "recompute"),  # a gap correction needs the gap
    ({"training": {"is_mask_range": (0.5, 2.0)}}, "recompute"),
    ({"training": {"entropy_coef": 0.01}}, "recompute"),  # the entropy bonus reads the π_old pass
    ({"training": {"max_rollout_staleness": 1}}, "recompute"),  # sampled by older weights
    ({"model": {"lora": {"r": 4}}}, "recompute"),  # merged adapters round differently
    ({"training": {"old_logprobs": "recompute"}}, "recompute"),  # an explicit choice stands
    ({"generation": {"sampler": "vllm"}, "training": {"old_logprobs": "sampler"}}, "sampler"),
])
def test_auto_takes_pi_old_from_the_sampler_only_where_exact(change, used):
    from rllib_rpp.core.options import UpdateOptions

    config = small_config(**change.get("training", {})).generation(**change.get("generation", {}))
    if "model" in change:
        config.rl_module(model_config={**config._model_config, **change["model"]})  # not the auto-included keys
    assert config.old_logprobs == change.get("training", {}).get("old_logprobs", "auto")
    assert config.old_logprobs_used == used
    assert UpdateOptions.from_config(config).old_logprobs == used
    assert config.model_config["entropy_in_forward"] == (used == "sampler")


def test_pi_old_from_the_sampler_gives_the_loss_and_gradients_of_the_explicit_pass():
    """The exactness claim itself, on sampled tokens: the same loss and gradients up to rounding."""
    from envs.tasks.arithmetic import arithmetic_prompts
    from rllib_rpp import schema as S
    from rllib_rpp.core.batch import prepare_batch
    from rllib_rpp.core.logprobs import LogprobModule, response_logprobs
    from rllib_rpp.core.loss import microbatch_loss
    from rllib_rpp.core.options import UpdateOptions
    from rllib_rpp.samplers.base import SamplingParams
    from rllib_rpp.samplers.hf import TransformersSampler, left_pad
    from rpp_hub.models import load_causal_lm, load_tokenizer, resolve_model_path

    path = resolve_model_path("tiny-arith")
    tok = load_tokenizer(path)
    torch.manual_seed(0)
    sampler = TransformersSampler(path, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    prompts = [tok(r["prompt"])["input_ids"] for r in arithmetic_prompts("train")[:12]]
    gen = sampler.generate(prompts, SamplingParams(n=3, max_new_tokens=6, temperature=0.8))
    p_ids, p_mask = left_pad([p for p in prompts for _ in range(3)], tok.pad_token_id)
    width = max(map(len, gen.token_ids))
    r_ids, r_mask, s_lp = torch.zeros(len(gen.token_ids), width, dtype=torch.long), torch.zeros(
        len(gen.token_ids), width), torch.zeros(len(gen.token_ids), width)
    for i, (t, lp) in enumerate(zip(gen.token_ids, gen.logprobs)):
        r_ids[i, : len(t)], r_mask[i, : len(t)], s_lp[i, : len(t)] = torch.tensor(t), 1.0, torch.tensor(lp)
    rewards = torch.randn(len(gen.token_ids), generator=torch.Generator().manual_seed(1))
    policy, ref = load_causal_lm(path), load_causal_lm(path)
    with torch.no_grad():  # a reference away from the policy: KL in the reward is not zero
        for p in ref.parameters():
            p.add_(0.02 * torch.randn_like(p))
    losses, grads = [], []
    for source in ("recompute", "sampler"):
        opts = UpdateOptions(old_logprobs=source, temperature=0.8)
        batch = {S.PROMPT_IDS: p_ids, S.PROMPT_MASK: p_mask, S.RESPONSE_IDS: r_ids, S.RESPONSE_MASK: r_mask,
                 S.LOSS_MASK: r_mask.clone(), S.SAMPLER_LOGPROBS: s_lp, S.SCORES: rewards}
        prepare_batch(LogprobModule(policy, temperature=0.8), LogprobModule(ref, temperature=0.8), batch, opts,
                      kl_coef=0.05)
        policy.zero_grad(set_to_none=True)
        lp, _ = response_logprobs(policy, batch, temperature=0.8)
        loss, _ = microbatch_loss(lp, None, batch, opts, kl_coef=0.05, num_tokens=r_mask.sum(), num_seqs=len(rewards))
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in policy.named_parameters()})
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-7)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)


def test_old_logprobs_from_a_sampler_that_may_differ_warns():
    from rllib_rpp.reinforce_pp import validation

    risky = small_config(old_logprobs="sampler").generation(sampler="vllm")
    assert any("old_logprobs='sampler'" in w for w in validation.option_warnings(risky))
    assert not validation.option_warnings(small_config(old_logprobs="sampler"))  # transformers, fp32: exact


def test_transformers_sampler_stops_computing_finished_rows_and_decodes_as_generate():
    from envs.tasks.arithmetic import arithmetic_prompts
    from rllib_rpp.samplers.base import SamplingParams
    from rllib_rpp.samplers.hf import TransformersSampler, left_pad
    from rpp_hub.models import load_tokenizer, resolve_model_path

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


def test_built_objects_leave_the_cyclic_gc_until_the_algorithm_stops():
    import gc

    gc.unfreeze()
    algo = small_config().build_algo()
    try:
        assert gc.get_freeze_count() > 100_000  # imports, Ray, the models and modules: out of every scan
        garbage = []
        garbage.append(garbage)  # a cycle created after the build is still collected
        del garbage
        assert gc.collect() > 0
    finally:
        algo.stop()
    assert gc.get_freeze_count() == 0  # stopped: its objects can be collected again
