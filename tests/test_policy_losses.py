"""The policy-loss table (GSPO, CISPO beside PPO-clip) and Dr.GRPO's aggregation, against float64
references written token by token; the table's registration and validation."""

from __future__ import annotations

import math

import pytest
import torch

from rllib_rpp import functional as F
from rllib_rpp.loss_aggregations import LOSS_AGGREGATIONS as AGG
from rllib_rpp.policy_losses import POLICY_LOSSES, PolicyLossEntry, get_policy_loss, register_policy_loss

MODES = tuple(AGG)
BUDGET = 8


def batch(seed=0, B=7, T=BUDGET, spread=0.05, per_sequence_advantage=False):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, T + 1, (B,), generator=g)
    lens[0], lens[1] = 1, T
    mask = (torch.arange(T)[None] < lens[:, None]).double()
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3 * mask
    lp = (old + torch.randn(B, T, generator=g, dtype=torch.float64) * spread) * mask
    adv = torch.randn(B, 1 if per_sequence_advantage else T, generator=g, dtype=torch.float64).expand(B, T) * mask
    return lp.requires_grad_(), old, adv.contiguous(), mask, lens.tolist()


def weights(lens, mode):
    """d(aggregate)/d(token loss) for each row: the aggregation written out."""
    n, B = sum(lens), len(lens)
    return [{"token-mean": 1 / n, "seq-mean-token-mean": 1 / (L * B), "seq-mean-token-sum": 1 / B,
             "seq-mean-token-sum-norm": 1 / (B * BUDGET)}[mode] for L in lens]


def clip(x, lo, hi):
    return min(max(x, lo), hi)


@pytest.mark.parametrize("mode", MODES)
def test_gspo_matches_a_sequence_by_sequence_reference(mode):
    lp, old, adv, mask, lens = batch(seed=1)
    eps_lo, eps_hi = 0.01, 0.015  # a sequence-level range some of these sequences leave
    got = F.gspo_policy_loss(lp, old, adv, mask, clip_low=eps_lo, clip_high=eps_hi, loss_agg_mode=AGG[mode],
                             token_budget=BUDGET)
    got.loss.backward()
    want_loss, want_grad, clipped = 0.0, torch.zeros_like(old), 0
    for b, (L, w) in enumerate(zip(lens, weights(lens, mode))):
        s = math.exp(sum(lp[b, t].item() - old[b, t].item() for t in range(L)) / L)
        for t in range(L):
            a = adv[b, t].item()
            unclipped, clipped_term = s * a, clip(s, 1 - eps_lo, 1 + eps_hi) * a
            want_loss += -min(unclipped, clipped_term) * w
            # d/d log π_t of s_{i,t} is s_i (the token variant): the gradient flows unless clipped.
            want_grad[b, t] = 0.0 if clipped_term < unclipped else -s * a * w
            clipped += clipped_term < unclipped
    assert got.loss.item() == pytest.approx(want_loss, rel=1e-10)
    torch.testing.assert_close(lp.grad, want_grad, rtol=1e-10, atol=1e-14)
    assert got.clip_fraction.item() == pytest.approx(clipped / sum(lens))
    assert 0 < clipped < sum(lens)


def test_gspo_with_one_advantage_per_sequence_is_gspos_sequence_loss_gradient_included():
    lp, old, adv, mask, lens = batch(seed=2, per_sequence_advantage=True)
    got = F.gspo_policy_loss(lp, old, adv, mask, clip_low=0.01, clip_high=0.01,
                             loss_agg_mode=AGG["seq-mean-token-mean"])
    (grad_token,) = torch.autograd.grad(got.loss, lp)
    # GSPO as written: J = mean_i min(s_i Â_i, clip(s_i) Â_i), s_i = exp(mean_t log ρ_t), gradient through s_i.
    s = torch.exp(((lp - old) * mask).sum(-1) / mask.sum(-1))
    a = adv[:, 0]
    seq_loss = -torch.minimum(s * a, s.clamp(0.99, 1.01) * a).mean()
    (grad_seq,) = torch.autograd.grad(seq_loss, lp)
    assert got.loss.item() == pytest.approx(seq_loss.item(), rel=1e-12)
    torch.testing.assert_close(grad_token, grad_seq, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("mode", MODES)
def test_cispo_weights_every_tokens_gradient_by_the_clipped_ratio(mode):
    lp, old, adv, mask, lens = batch(seed=3, spread=0.4)
    got = F.cispo_policy_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.28, loss_agg_mode=AGG[mode],
                              token_budget=BUDGET)
    got.loss.backward()
    want_loss, want_grad, outside = 0.0, torch.zeros_like(old), 0
    for b, (L, w) in enumerate(zip(lens, weights(lens, mode))):
        for t in range(L):
            rho = math.exp(lp[b, t].item() - old[b, t].item())
            c = clip(rho, 0.8, 1.28)
            want_loss += -c * adv[b, t].item() * lp[b, t].item() * w
            want_grad[b, t] = -c * adv[b, t].item() * w  # never zero: CISPO keeps every token's gradient
            outside += c != rho
    assert got.loss.item() == pytest.approx(want_loss, rel=1e-10)
    torch.testing.assert_close(lp.grad, want_grad, rtol=1e-10, atol=1e-14)
    assert outside > 0 and got.clip_fraction.item() == pytest.approx(outside / sum(lens))


def test_at_ratio_one_cispo_gspo_and_ppo_clip_have_the_same_gradient():
    lp, old, adv, mask, _ = batch(seed=4, spread=0.0)
    grads = []
    for fn in (F.clipped_policy_loss, F.gspo_policy_loss, F.cispo_policy_loss):
        (g,) = torch.autograd.grad(fn(lp, old, adv, mask, loss_agg_mode=AGG["token-mean"]).loss, lp)
        grads.append(g)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grads[2], grads[0], rtol=1e-12, atol=1e-15)


def test_dr_grpo_aggregation_divides_by_the_budget_and_needs_it():
    values, mask = torch.ones(3, 4, dtype=torch.float64), torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0.]])
    norm = AGG["seq-mean-token-sum-norm"]
    assert F.aggregate_loss(values, mask, norm, token_budget=4).item() == pytest.approx(7 / 12)
    # Split into two micro-batches with the step's global count: the pieces sum to the whole.
    parts = [F.aggregate_loss(values[r], mask[r], norm, num_seqs=3, token_budget=4)
             for r in ([0], [1, 2])]
    assert sum(p.item() for p in parts) == pytest.approx(7 / 12)
    with pytest.raises(ValueError, match="token_budget=None"):
        F.aggregate_loss(values, mask, norm)


def test_a_new_policy_loss_is_one_table_entry_and_the_config_checks_the_name():
    from rllib_rpp.app.presets import tiny_arith

    def plain_pg(logprobs, old_logprobs, advantages, mask, **kw):  # -Â log π: REINFORCE without a ratio
        return F.cispo_policy_loss(logprobs, logprobs.detach(), advantages, mask, **kw)

    try:
        register_policy_loss(PolicyLossEntry("plain_pg", plain_pg, description="-Â log π"))
        assert get_policy_loss("plain_pg").fn is plain_pg
        tiny_arith().training(policy_loss="plain_pg").validate()
    finally:
        POLICY_LOSSES.unregister("plain_pg")
    with pytest.raises(ValueError, match="policy_loss='nope' is invalid"):
        tiny_arith().training(policy_loss="nope").validate()
    with pytest.raises(ValueError, match="policy_loss='gspo' has no dual clip"):
        tiny_arith().training(policy_loss="gspo", clip_low=3e-4, clip_high=4e-4, dual_clip=3.0).validate()
    with pytest.raises(ValueError, match="names .*not a rllib_rpp.policy_losses.PolicyLossEntry"):
        get_policy_loss("rllib_rpp.functional:gspo_policy_loss")


def test_gspo_with_a_token_level_clip_range_warns(caplog):
    from rllib_rpp.app.presets import tiny_arith

    with caplog.at_level("WARNING"):
        tiny_arith().training(policy_loss="gspo").validate()  # clip 0.2: the token-level default
    assert "sequence-level ratio" in caplog.text and "clip_low=0.2" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        tiny_arith().training(policy_loss="gspo", clip_low=3e-4, clip_high=4e-4).validate()
    assert "sequence-level ratio" not in caplog.text
