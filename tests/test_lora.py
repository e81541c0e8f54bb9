"""LoRA through the public API: only adapters train, no reference copy, the runners serve the
merged weights, checkpoints and exports."""

import numpy as np
import pytest
import torch
from helpers import small_config
from peft import PeftModel
from transformers import AutoModelForCausalLM

from rllib_rpp import ReinforcePP
from rllib_rpp import schema as S
from rllib_rpp.core.logprobs import response_logprobs
from rllib_rpp.core.lora import disabled_adapters
from rpp_hub.models import resolve_model_path

pytestmark = pytest.mark.usefixtures("ray_local")
LORA = {"r": 16, "alpha": 32}


def lora_config(**training):
    opts = {"lr": 1e-3, "num_prompts_per_iteration": 32, "minibatch_size": 64, **training}
    return small_config(**opts).rl_module(
        model_config={"model": "tiny-arith", "lora": LORA})


def test_lora_trains_adapters_only_and_its_update_improves_the_objective():
    # One optimizer step per iteration (minibatch = the whole batch), at a small lr.
    algo = lora_config(lr=1e-4, minibatch_size=128).build_algo()
    learner = algo.learner_group._learner
    lm = learner.policy_lm()
    adapters = [p for p in lm.parameters() if p.requires_grad]
    assert learner.ref_lm.lm is lm  # π_ref is the base with adapters disabled: no second model
    assert sum(p.numel() for p in lm.parameters()) < 1.25 * sum(p.numel() for n, p in lm.named_parameters()
                                                               if "lora_" not in n)  # one base model
    optim = learner._named_optimizers["default_policy_default_optimizer"]
    assert {id(p) for g in optim.param_groups for p in g["params"]} == {id(p) for p in adapters}
    base_before = {n: p.clone() for n, p in lm.named_parameters() if not p.requires_grad}
    for _ in range(2):
        algo.train()
        # Whatever was sampled: one Adam step moves each adapter weight against its gradient, so
        # the batch's surrogate Σ Â_t·log π(a_t) rises (to first order: lr·Σ|g| > 0).
        b = learner.last_batch
        with torch.no_grad():
            new, _ = response_logprobs(lm, b)
            with disabled_adapters(lm):
                base, _ = response_logprobs(lm, b)
        mask = b[S.RESPONSE_MASK]
        gain = (b[S.ADVANTAGES] * (new - b[S.OLD_LOGPROBS]) * mask).sum() / mask.sum()
        assert gain > 0, float(gain)
        assert ((new - base).abs() * mask).max() > 0  # the policy left its base
    assert all(torch.equal(p, base_before[n]) for n, p in lm.named_parameters() if not p.requires_grad)
    algo.stop()


def test_lora_runner_serves_merged_weights_checkpoint_and_export(tmp_path):
    algo = lora_config().build_algo()
    for _ in range(2):
        algo.train()
    lm = algo.learner_group._learner.policy_lm()
    sampler_lm = algo.env_runner.sampler.model
    eps = algo.env_runner.sample(num_prompts=4)
    obs = eps[0].get_observations(0)
    batch = {"prompt_ids": torch.tensor(np.stack([e.get_observations(0)["input_ids"] for e in eps])),
             "prompt_mask": torch.tensor(np.stack([e.get_observations(0)["attention_mask"] for e in eps])),
             "response_ids": torch.tensor(np.stack([e.get_actions(0) for e in eps])),
             "response_mask": torch.tensor(np.stack([e.get_extra_model_outputs("response_mask", 0) for e in eps]))}
    assert obs["input_ids"].shape[0] > 0
    with torch.no_grad():
        learner_lp, _ = response_logprobs(lm, batch)
        sampler_lp, _ = response_logprobs(sampler_lm, batch)
        with disabled_adapters(lm):
            base_lp, _ = response_logprobs(lm, batch)
    torch.testing.assert_close(sampler_lp, learner_lp, rtol=1e-5, atol=1e-5)  # merged = base + adapters
    assert (base_lp - learner_lp).abs().max() > 1e-4
    # Checkpoints hold the adapters only; a restore serves the same policy.
    path = algo.save_to_path(str(tmp_path / "ckpt"))
    policy = algo.get_policy_state_dict()
    restored = ReinforcePP.from_checkpoint(path)
    assert all(torch.equal(v, policy[k]) for k, v in restored.get_policy_state_dict().items())
    # Export: a merged model for transformers/vLLM, and the adapter for peft.
    out = restored.export_policy(tmp_path / "export")
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert all(torch.equal(v, policy[k]) for k, v in merged.state_dict().items())
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny-arith"))
    adapted = PeftModel.from_pretrained(base, out / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(response_logprobs(adapted, batch)[0], response_logprobs(merged, batch)[0],
                                   rtol=1e-5, atol=1e-5)
    algo.stop()
    restored.stop()
