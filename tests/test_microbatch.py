"""Scale features on one learner, proven by equivalence: micro-batched = whole mini-batch (every
loss_agg_mode, KL loss, entropy, uneven splits, two DDP learners), chunked log-probs = full
logits, gradient checkpointing = none, bf16 compute ~ fp32."""

import copy
import dataclasses
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import rllib_rpp.functional as F
from rllib_rpp import schema as S
from rllib_rpp.core.batch import prepare_batch
from rllib_rpp.core.logprobs import LogprobModule, response_logprobs
from rllib_rpp.core.microbatch import row_lengths, split_by_tokens, take_rows
from rllib_rpp.core.options import ALONE, Collectives, UpdateOptions
from rllib_rpp.core.update import accumulate_gradients
from rllib_rpp.loss_aggregations import LOSS_AGGREGATIONS as AGG
from rpp_hub.models import load_causal_lm

OPTS = UpdateOptions(kl_placement="loss", kl_estimator="k2", entropy_coef=0.01, temperature=0.7,
                     logprob_chunk_tokens=5, max_tokens_per_microbatch=10_000)


def tiny(dtype="float64", seed=0):
    lm = load_causal_lm("tiny-arith", dtype=dtype)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return lm


def random_batch(B=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    P, R = 7, 6
    p_len = torch.randint(2, P + 1, (B,), generator=g)
    r_len = torch.randint(1, R + 1, (B,), generator=g)
    prompt_mask = (torch.arange(P) >= P - p_len[:, None]).long()
    response_mask = (torch.arange(R) < r_len[:, None]).float()
    return {S.PROMPT_IDS: torch.randint(4, 90, (B, P), generator=g) * prompt_mask, S.PROMPT_MASK: prompt_mask,
            S.RESPONSE_IDS: torch.randint(4, 90, (B, R), generator=g) * response_mask.long(),
            S.RESPONSE_MASK: response_mask, S.LOSS_MASK: response_mask.clone(),
            S.SAMPLER_LOGPROBS: -torch.rand(B, R, generator=g) * response_mask,
            S.SCORES: torch.randn(B, generator=g)}


class Policy(torch.nn.Module):
    """What the RLModule is to RLlib: forward(micro-batch) -> log-probs and entropy."""

    def __init__(self, lm, opts):
        super().__init__()
        self.lm, self.opts = lm, opts

    def forward(self, micro):
        lp, ent = response_logprobs(self.lm, micro, temperature=self.opts.temperature, with_entropy=True,
                                    chunk_tokens=self.opts.logprob_chunk_tokens)
        return {"logprobs": lp, "entropy": ent}


def logprob_module(lm, opts):
    return LogprobModule(lm, temperature=opts.temperature, chunk_tokens=opts.logprob_chunk_tokens)


def one_step(lm, batch, opts, max_tokens, **dist_kw):
    """Prepare the batch against a perturbed reference, then one Adam step; returns the weights."""
    ref = tiny(seed=1)
    batch = dict(batch)
    prepare_batch(logprob_module(lm, opts), logprob_module(ref, opts), batch, opts, kl_coef=0.1,
                  collectives=dist_kw.get("collectives", ALONE))
    if dist_kw.pop("stale", False):  # π_old != π_θ, as on a later mini-batch: ratios move, clips bite
        # A fixed function of each token (not a random draw), so a learner's shard gets its rows' share.
        ids, pos = batch[S.RESPONSE_IDS].double(), torch.arange(batch[S.RESPONSE_IDS].shape[1])
        noise = torch.sin(ids * 12.9898 + pos * 78.233).to(batch[S.OLD_LOGPROBS].dtype)
        batch[S.OLD_LOGPROBS] = batch[S.OLD_LOGPROBS] + 0.3 * noise * batch[S.LOSS_MASK]
    optim = torch.optim.Adam(lm.parameters(), lr=1e-3)
    optim.zero_grad()
    forward = dist_kw.pop("forward", None) or Policy(lm, opts)
    loss, metrics = accumulate_gradients(forward, batch, opts, kl_coef=0.1, max_tokens=max_tokens, **dist_kw)
    optim.step()
    return {k: v.detach().clone() for k, v in lm.state_dict().items()}, loss, metrics


def test_split_by_tokens_respects_the_budget_sorts_by_length_and_agrees_on_a_count():
    p = torch.tensor([3, 9, 2, 5, 5, 1, 8])
    r = torch.tensor([4, 1, 1, 6, 2, 1, 9])
    groups = split_by_tokens(p, r, max_tokens=24)
    assert sorted(torch.cat(groups).tolist()) == list(range(7))
    for g in groups:
        assert len(g) == 1 or len(g) * (int(p[g].max()) + int(r[g].max())) <= 24
    assert groups[0].tolist()[0] == 6  # the longest row first
    assert len(split_by_tokens(p, r, max_tokens=24, min_count=6)) == 6
    assert len(split_by_tokens(p, r, max_tokens=1)) == 7  # rows over the budget go alone
    # Responses of very different lengths: a group worth splitting ends before padding passes 25 %.
    p, r = torch.full((128,), 10), torch.tensor([100] * 64 + [20] * 64)
    lengths = [int((p[g] + r[g]).max()) for g in split_by_tokens(p, r, max_tokens=16_000)]
    assert lengths == [110, 30]  # one batch would be 36 % padding
    assert len(split_by_tokens(p, r, max_tokens=16_000, max_padding=1.0)) == 1
    assert len(split_by_tokens(p[:4], r[:4] - torch.arange(4) * 30, max_tokens=8192)) == 1  # too small to split
    # Under PADDING_SPLIT_MIN_TOKENS an extra pass costs more than the padding: one micro-batch.
    p, r = torch.full((128,), 2), torch.tensor([10] * 64 + [4] * 64)  # 128 x 12 = 1536 padded tokens
    assert len(split_by_tokens(p, r, max_tokens=8192)) == 1


@pytest.mark.parametrize("mode", tuple(AGG))
@pytest.mark.parametrize("policy_loss", ["ppo_clip", "gspo", "cispo"])
def test_microbatched_step_equals_the_whole_minibatch(mode, policy_loss):
    opts = dataclasses.replace(OPTS, loss_agg_mode=mode, policy_loss=policy_loss, max_new_tokens=6)
    if policy_loss == "gspo":
        opts = dataclasses.replace(opts, clip_low=0.05, clip_high=0.05)  # some sequences clip at these ratios
    batch = random_batch()
    lengths = sum(row_lengths(batch))
    assert len(split_by_tokens(*row_lengths(batch), max_tokens=25)) >= 4  # uneven splits
    whole, loss_whole, m_whole = one_step(tiny(), batch, opts, max_tokens=10_000, stale=True)
    split, loss_split, metrics = one_step(tiny(), batch, opts, max_tokens=25, stale=True)
    assert 0 < m_whole["clip_fraction"] < 1  # the stale π_old puts some ratios outside the range
    assert metrics["num_microbatches"] >= 4 and lengths.max() <= 25
    torch.testing.assert_close(loss_split, loss_whole, rtol=1e-10, atol=1e-12)
    for k in whole:
        torch.testing.assert_close(split[k], whole[k], rtol=1e-9, atol=1e-12)
    assert any(not torch.equal(whole[k], tiny().state_dict()[k]) for k in whole)  # the step did something


def with_holes(batch, seed=0):
    """The batch with ~30 % of the response tokens left out of the loss, inside the responses
    (tokens the policy did not choose, e.g. tool output): the response mask stays a prefix."""
    g = torch.Generator().manual_seed(seed)
    loss_mask = batch[S.RESPONSE_MASK] * (torch.rand(batch[S.RESPONSE_MASK].shape, generator=g) > 0.3)
    loss_mask[:, 0] = batch[S.RESPONSE_MASK][:, 0]  # every row keeps a token to learn from
    return {**batch, S.LOSS_MASK: loss_mask}


@pytest.mark.parametrize("mode", tuple(AGG))
def test_holes_in_the_loss_mask_are_context_not_loss_and_microbatches_still_equal_the_whole(mode):
    opts = dataclasses.replace(OPTS, loss_agg_mode=mode)
    batch = with_holes(random_batch(seed=9))
    holes = (batch[S.RESPONSE_MASK] > 0) & (batch[S.LOSS_MASK] == 0)
    assert holes.sum() >= 8 and (holes[:, :-1] & (batch[S.LOSS_MASK][:, 1:] > 0)).any()  # holes inside responses
    whole, loss_whole, _ = one_step(tiny(), batch, opts, max_tokens=10_000)
    split, loss_split, metrics = one_step(tiny(), batch, opts, max_tokens=25)
    assert metrics["num_microbatches"] >= 4
    torch.testing.assert_close(loss_split, loss_whole, rtol=1e-10, atol=1e-12)
    for k in whole:
        torch.testing.assert_close(split[k], whole[k], rtol=1e-9, atol=1e-12)
    # The holes are context: every response token's log-prob is the plain forward's of the whole sequence.
    lm = tiny()
    with torch.no_grad():
        lp, _ = response_logprobs(lm, batch, temperature=opts.temperature)
        for b in range(len(lp)):
            prompt = batch[S.PROMPT_IDS][b][batch[S.PROMPT_MASK][b] > 0]
            n = int(batch[S.RESPONSE_MASK][b].sum())
            ids = torch.cat([prompt, batch[S.RESPONSE_IDS][b, :n]])
            want = (lm(ids[None]).logits[0, len(prompt) - 1 : -1] / opts.temperature).log_softmax(-1)
            torch.testing.assert_close(lp[b, :n], want.gather(-1, ids[len(prompt):, None])[:, 0], rtol=1e-9, atol=1e-9)
    # ...and not loss: the loss of the first step (ratio 1) from loss-mask tokens alone.
    prepared = dict(batch)
    prepare_batch(logprob_module(lm, opts), logprob_module(tiny(seed=1), opts), prepared, opts, kl_coef=0.1)
    assert (prepared[S.ADVANTAGES][holes] == 0).all()
    _, ent = response_logprobs(lm, prepared, temperature=opts.temperature, with_entropy=True)
    m = prepared[S.LOSS_MASK]
    per_token = -prepared[S.ADVANTAGES] + 0.1 * F.token_kl(lp, prepared[S.REF_LOGPROBS], F.kl_k2) - 0.01 * ent
    if mode == "token-mean":
        want = (per_token * m).sum() / m.sum()
    else:
        per_seq = (per_token * m).sum(-1) / {"seq-mean-token-mean": m.sum(-1),
                                             "seq-mean-token-sum-norm": opts.max_new_tokens}.get(mode, 1)
        want = per_seq.mean()
    torch.testing.assert_close(loss_whole, want.detach(), rtol=1e-9, atol=1e-10)


def _ddp_worker(rank, world, port, batch, out, opts=OPTS):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)

    def all_reduce(x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    def agree(n):
        t = torch.tensor([n])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t)

    lm = tiny()
    ddp = torch.nn.parallel.DistributedDataParallel(Policy(lm, opts))
    shard = {k: v[rank::world] for k, v in batch.items()}
    collectives = Collectives(world_size=world, all_reduce=all_reduce, agree_count=agree, no_sync=ddp.no_sync)
    weights, loss, _ = one_step(lm, shard, opts, max_tokens=20 + 15 * rank, collectives=collectives, forward=ddp,
                                stale=opts.policy_loss != "ppo_clip")
    out[rank] = weights
    dist.destroy_process_group()


@pytest.mark.parametrize("policy_loss,mode", [("ppo_clip", "token-mean"), ("gspo", "seq-mean-token-mean"),
                                              ("cispo", "seq-mean-token-sum-norm")])
def test_two_ddp_learners_with_microbatches_equal_one_learner(policy_loss, mode):
    opts = dataclasses.replace(OPTS, policy_loss=policy_loss, loss_agg_mode=mode, max_new_tokens=6)
    batch = random_batch(B=12, seed=3)
    whole, _, _ = one_step(tiny(), batch, opts, max_tokens=10_000, stale=policy_loss != "ppo_clip")
    out = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, 29517, batch, out, opts), nprocs=2, join=True)
    for rank in (0, 1):
        for k in whole:
            torch.testing.assert_close(out[rank][k], whole[k], rtol=1e-9, atol=1e-12)


def naive_logprobs(lm, batch, temperature):
    """The full-logits path: [B, T, V] logits, log-softmax, gather."""
    ids = torch.cat([batch[S.PROMPT_IDS], batch[S.RESPONSE_IDS]], 1)
    attn = torch.cat([batch[S.PROMPT_MASK], batch[S.RESPONSE_MASK].long()], 1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    R = batch[S.RESPONSE_IDS].shape[1]
    logits = lm(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, -R - 1 : -1] / temperature
    logp = logits.log_softmax(-1)
    lp = logp.gather(-1, batch[S.RESPONSE_IDS][..., None]).squeeze(-1)
    ent = -(logp.exp() * logp).sum(-1)
    m = batch[S.RESPONSE_MASK]
    return lp * m, ent * m


def test_chunked_logprobs_and_entropy_equal_full_logits_values_and_gradients():
    batch = random_batch(seed=5)
    lm_a, lm_b = tiny(), tiny()
    lp, ent = response_logprobs(lm_a, batch, temperature=0.7, with_entropy=True, chunk_tokens=4)
    lp_ref, ent_ref = naive_logprobs(lm_b, batch, 0.7)
    assert lp.dtype == torch.float64  # log-softmax in the model's precision, at least fp32
    torch.testing.assert_close(lp, lp_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ent, ent_ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(lp)
    ((lp * w).sum() + ent.sum()).backward()
    ((lp_ref * w).sum() + ent_ref.sum()).backward()
    for (name, a), b in zip(lm_a.named_parameters(), lm_b.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_shared_prompts_run_once_and_equal_the_one_pass_forward_values_and_gradients(monkeypatch):
    """A group's samples share their prompt's computation (`core.logprobs`): same log-probs, entropy
    and gradients as the one-pass forward over [prompt | response], to float64 rounding."""
    import rllib_rpp.core.logprobs as logprobs_module

    prompts, n = random_batch(B=4, seed=9), 3
    batch = random_batch(B=4 * n, seed=10)  # responses of their own, of different lengths
    for k in (S.PROMPT_IDS, S.PROMPT_MASK):  # rows i*n .. i*n+n-1 share prompt i (of its own length)
        batch[k] = prompts[k].repeat_interleave(n, dim=0)
    shared = []
    real = logprobs_module._hidden_with_shared_prompts
    monkeypatch.setattr(logprobs_module, "_hidden_with_shared_prompts",
                        lambda *a: (shared.append(len(a[5])), real(*a))[1])
    lm_a, lm_b = tiny(), tiny()
    lp, ent = response_logprobs(lm_a, batch, temperature=0.7, with_entropy=True, chunk_tokens=4)
    assert shared == [4]  # the backbone ran over 4 prompts, not 12
    lp_ref, ent_ref = naive_logprobs(lm_b, batch, 0.7)
    torch.testing.assert_close(lp, lp_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ent, ent_ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(lp)
    ((lp * w).sum() + ent.sum()).backward()
    ((lp_ref * w).sum() + ent_ref.sum()).backward()
    for (name, a), b in zip(lm_a.named_parameters(), lm_b.parameters()):
        # transformers' RMSNorm computes in fp32 even in a float64 model: the prompt's gradient, summed
        # once over its rows instead of per row, rounds at fp32's ~1e-7 of the largest gradient (the
        # values above agree to float64 rounding).
        assert (a.grad - b.grad).abs().max() <= 1e-6 * b.grad.abs().max(), name
    # Under gradient checkpointing transformers' layers drop the cache: the one-pass forward is kept.
    lm_a.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm_a.train()
    response_logprobs(lm_a, batch, temperature=0.7)
    assert shared == [4]


def test_gradient_checkpointing_gives_the_same_gradients():
    batch = random_batch(seed=6)
    plain, ckpt = tiny(), tiny()
    ckpt.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for lm in (plain, ckpt):
        lm.train()
        response_logprobs(lm, batch, temperature=1.0)[0].sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_bf16_compute_logprobs_agree_with_fp32():
    batch = random_batch(seed=7)
    lm = tiny("float32")
    with torch.no_grad():
        fp32, _ = response_logprobs(lm, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, _ = response_logprobs(lm, batch)
    m = batch[S.RESPONSE_MASK] > 0
    # bf16 matmuls (unit roundoff u = 2^-8), log-softmax in fp32: each log-prob within a few u of
    # its magnitude, whatever kernels the CPU has (AVX-512 BF16, AVX2 or none round differently).
    u = 2.0**-8
    assert ((bf16 - fp32)[m].abs() <= 4 * u * (fp32[m].abs() + 1)).all()
    assert (bf16 - fp32)[m].abs().mean() <= u * (fp32[m].abs() + 1).mean()


def test_take_rows_trims_to_the_rows_own_lengths():
    batch = random_batch(seed=8)
    rows = torch.tensor([0, 3])
    micro = take_rows(batch, rows)
    p, r = row_lengths(micro)
    assert micro[S.PROMPT_IDS].shape[1] == int(p.max()) and micro[S.RESPONSE_IDS].shape[1] == int(r.max())
    torch.testing.assert_close(micro[S.SCORES], batch[S.SCORES][rows])


def test_learner_update_is_microbatched_and_equals_the_unsplit_step():
    # Through the RLlib learner's own update override (fp32; Adam's first step is ±lr per weight,
    # so a tolerance of a tenth of lr = 1e-4 still tells a wrong accumulation apart).
    from test_learner_core import make_learner, token_batch

    weights, counts = [], []
    for budget in (10_000, 12):
        learner = make_learner(max_tokens_per_microbatch=budget, kl_placement="loss", entropy_coef=0.01)
        batch, _ = token_batch("reinforce_pp", seed=4)
        learner.prepare_batch(batch)
        learner._uncompiled_update({"default_policy": copy.copy(batch)})
        weights.append({k: v.clone() for k, v in learner.policy_lm().state_dict().items()})
        counts.append(learner.metrics.peek(("default_policy", "num_microbatches")))
    assert counts[0] == 1 and counts[1] >= 4
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=1e-4, atol=1e-5)


def test_episodes_to_token_batch_sizes_by_the_response_mask_and_keeps_the_loss_masks_holes():
    import numpy as np
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    from rllib_rpp.reinforce_pp.connectors import EpisodesToTokenBatch

    def episode(length, loss_mask, weight=1.0):
        obs = {"input_ids": np.array([0, 1, 5, 6]), "attention_mask": np.array([0, 1, 1, 1])}
        response_mask, trained = np.zeros(6, np.float32), np.zeros(6, np.float32)
        response_mask[:length], trained[: len(loss_mask)] = 1, loss_mask
        ep = SingleAgentEpisode(observations=[obs, obs], actions=[np.arange(6) + 10], rewards=[1.0],
                                terminated=True, len_lookback_buffer=0,
                                extra_model_outputs={S.RESPONSE_MASK: [response_mask], S.LOSS_MASK: [trained],
                                                     S.SAMPLER_LOGPROBS: [np.zeros(6, np.float32)]})
        ep.custom_data.update({S.SCORE: 1.0, S.LOSS_WEIGHT: weight})
        return ep

    eps = [episode(4, [1, 0, 0, 0]), episode(2, [1, 1]), episode(3, [1, 1, 1], weight=0.0)]
    batch = EpisodesToTokenBatch()(rl_module=None, batch={}, episodes=eps)[DEFAULT_MODULE_ID]
    assert batch[S.RESPONSE_IDS].shape[1] == 4  # the longest response, its trailing hole included
    assert batch[S.RESPONSE_MASK].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]  # rows out of the loss
    assert batch[S.LOSS_MASK].tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]  # still attend
    assert row_lengths(batch)[1].tolist() == [4, 2, 3]


def test_a_bf16_response_mask_keeps_every_token_of_responses_longer_than_256():
    # FSDP's mixed precision casts the forward's float inputs (the response mask) to bf16, where
    # 513 is not representable: lengths must be counted, not summed (GPU review #6).
    g = torch.Generator().manual_seed(11)
    R = 513
    batch = {S.PROMPT_IDS: torch.randint(4, 90, (2, 3), generator=g),
             S.PROMPT_MASK: torch.ones(2, 3, dtype=torch.long),
             S.RESPONSE_IDS: torch.randint(4, 90, (2, R), generator=g), S.RESPONSE_MASK: torch.ones(2, R)}
    batch[S.RESPONSE_MASK][1, 300:] = 0
    assert float(batch[S.RESPONSE_MASK].bfloat16().sum(-1).max()) != R  # the rounding this guards against
    lm = load_causal_lm("tiny-arith")
    with torch.no_grad():
        fp32, _ = response_logprobs(lm, batch, chunk_tokens=256)
        bf16_mask = {**batch, S.RESPONSE_MASK: batch[S.RESPONSE_MASK].bfloat16()}
        bf16, _ = response_logprobs(lm, bf16_mask, chunk_tokens=256)
    torch.testing.assert_close(bf16, fp32, rtol=0, atol=0)
    assert (fp32[0] != 0).all() and (fp32[1, :300] != 0).all() and (fp32[1, 300:] == 0).all()
