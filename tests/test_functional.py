"""rllib_rpp.functional against an independent float64 reference (plain Python loops)."""

import math
import os
import random

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import rllib_rpp.functional as F
from rllib_rpp.estimators import ESTIMATORS, get_estimator
from rllib_rpp.kl_estimators import KL_ESTIMATORS as KL
from rllib_rpp.loss_aggregations import LOSS_AGGREGATIONS as AGG


# ---------------------------------------------------------------------------------------------
# Independent reference: per-row Python over lists of floats.
# ---------------------------------------------------------------------------------------------
def ref_kl(lp, rlp, est):
    d = lp - rlp
    v = {"k1": d, "k2": d * d / 2, "k3": math.exp(-d) - 1 + d}[est]
    return min(max(v, -10.0), 10.0)


def ref_scores(r, groups, est, eps=1e-6):
    if est == "reinforce_pp":
        return list(r)
    members = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    out = []
    for i, g in enumerate(groups):
        vals = [r[j] for j in members[g]]
        n, mean = len(vals), sum(vals) / len(vals)
        if est == "reinforce_pp_baseline":
            out.append(r[i] - mean)
        elif est == "rloo":
            out.append(r[i] - (sum(vals) - r[i]) / (n - 1))
        else:
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
            out.append((r[i] - mean) / (std + eps))
    return out


def ref_advantages(r, lp, rlp, lens, *, est, beta, kl_est, gamma, groups, std_norm=True):
    s = ref_scores(r, groups, est)
    returns = []
    for b, n in enumerate(lens):
        tok = [-beta * ref_kl(lp[b][t], rlp[b][t], kl_est) for t in range(n)]
        tok[n - 1] += s[b]
        g, row = 0.0, [0.0] * n
        for t in reversed(range(n)):
            g = tok[t] + gamma * g
            row[t] = g
        returns.append(row)
    if est in ("reinforce_pp", "reinforce_pp_baseline"):
        flat = [x for row in returns for x in row]
        mu = sum(flat) / len(flat)
        sd = math.sqrt(sum((x - mu) ** 2 for x in flat) / len(flat))
        adv = [[(x - mu) / (sd + 1e-8) if std_norm else x - mu for x in row] for row in returns]
    else:
        adv = returns
    return adv, returns


def random_batch(seed, B=12, T=9, group_sizes=None, equal_rewards=False):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, T + 1, (B,), generator=g)
    lens[0], lens[1] = 1, T  # a single-token row and a truncated (full-length) row
    mask = (torch.arange(T)[None] < lens[:, None]).double()
    lp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    rlp = lp + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    r = (torch.full((B,), 0.7, dtype=torch.float64) if equal_rewards
         else torch.randn(B, generator=g, dtype=torch.float64))
    if group_sizes is None:
        group_sizes = [2, 3, 4, 3]
    assert sum(group_sizes) == B
    groups = torch.tensor([k * 7 + 100 for k, n in enumerate(group_sizes) for _ in range(n)])
    groups = groups[torch.randperm(B, generator=g)]  # group by id, never by position
    return r, lp * mask, rlp * mask, mask, lens, groups


def _rows(x, lens):
    return [x[b, :n].tolist() for b, n in enumerate(lens.tolist())]


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_token_kl_matches_reference_and_clamps(est):
    lp = torch.tensor([-1.0, -2.0, -0.1, 0.0, -30.0], dtype=torch.float64)
    rlp = torch.tensor([-1.5, -1.0, -0.1, -25.0, 0.0], dtype=torch.float64)
    got = F.token_kl(lp, rlp, KL[est])
    want = [ref_kl(a, b, est) for a, b in zip(lp.tolist(), rlp.tolist())]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    assert got.abs().max() <= 10.0
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'"):
        KL.resolve("k4")


def test_shape_rewards_puts_reward_on_last_action_token_only():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    kl = torch.ones(3, 4, dtype=torch.float64)
    out = F.shape_rewards(torch.tensor([5.0, 7.0, 9.0], dtype=torch.float64), kl, mask, 0.1)
    expect = torch.tensor([[-0.1, -0.1, 4.9, 0], [6.9, 0, 0, 0], [-0.1, -0.1, -0.1, 8.9]], dtype=torch.float64)
    torch.testing.assert_close(out, expect)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_discounted_returns_reset_at_padding(gamma):
    r, lp, rlp, mask, lens, _ = random_batch(0)
    tok = torch.randn_like(lp) * mask
    got = F.discounted_returns(tok, mask, gamma)
    for b, n in enumerate(lens.tolist()):
        g = 0.0
        for t in reversed(range(n)):
            g = tok[b, t].item() + gamma * g
            assert got[b, t].item() == pytest.approx(g, rel=1e-12, abs=1e-12)
    assert (got[mask == 0] == 0).all()


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_returns_and_advantages_with_holes_in_the_loss_mask(gamma):
    # Holes: tokens inside a response the policy did not choose (tool output). They are not time
    # steps: the score lands on the last action token, returns skip the holes, whitening ignores them.
    g = torch.Generator().manual_seed(3)
    B, T = 5, 9
    lens = torch.tensor([9, 7, 4, 9, 1])
    mask = (torch.arange(T) < lens[:, None]).double()
    mask[0, 2:4] = 0
    mask[1, 6] = 0  # the response ends with a hole: its last action token is position 5
    mask[3, 1] = mask[3, 5] = mask[3, 8] = 0
    lp, rlp = -torch.rand(B, T, generator=g, dtype=torch.float64), -torch.rand(B, T, generator=g, dtype=torch.float64)
    scores = torch.randn(B, generator=g, dtype=torch.float64)
    got = F.token_advantages(scores, lp, rlp, mask, kl_coef=0.1, gamma=gamma).advantages
    returns = {}
    for b in range(B):
        actions = [t for t in range(T) if mask[b, t] == 1]
        rewards = {t: -0.1 * ref_kl(lp[b, t].item(), rlp[b, t].item(), "k1") for t in actions}
        rewards[actions[-1]] += scores[b].item()
        running = 0.0
        for t in reversed(actions):
            running = rewards[t] + gamma * running
            returns[b, t] = running
    values = list(returns.values())
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    for (b, t), v in returns.items():
        assert got[b, t].item() == pytest.approx((v - mean) / (std + 1e-8), rel=1e-9, abs=1e-9)
    assert (got[mask == 0] == 0).all()


def test_whiten_is_global_population_and_safe_on_equal_values():
    _, lp, _, mask, _, _ = random_batch(1)
    w = F.whiten(lp, mask)
    valid = w[mask == 1]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-10)
    assert valid.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-6)
    assert (w[mask == 0] == 0).all()
    equal = F.whiten(torch.full((4, 5), 0.3, dtype=torch.float32), torch.ones(4, 5))
    assert torch.isfinite(equal).all() and equal.abs().max() < 1e-6
    one = F.whiten(torch.tensor([[2.5]]), torch.tensor([[1.0]]))
    assert one.item() == 0.0
    centered = F.whiten(lp, mask, scale=False)
    torch.testing.assert_close(centered[mask == 1], lp[mask == 1] - lp[mask == 1].mean())
    kept = F.whiten(lp, mask, shift_mean=False)
    # shift_mean=False keeps the mean (scales the spread only), as TRL's `whiten` does.
    assert kept[mask == 1].mean().item() == pytest.approx(lp[mask == 1].mean().item(), rel=1e-6)
    assert kept[mask == 1].std(unbiased=False).item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("est", tuple(ESTIMATORS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compute_advantages_matches_reference(est, seed):
    rng = random.Random(seed)
    beta, kl_est, gamma = rng.choice([0.0, 0.01, 0.5]), rng.choice(tuple(KL)), rng.choice([1.0, 0.95])
    r, lp, rlp, mask, lens, groups = random_batch(seed, B=14, group_sizes=[2, 5, 3, 4])
    got = F.compute_advantages(r, lp, rlp, mask, estimator=ESTIMATORS[est], kl_coef=beta, kl_estimator=KL[kl_est],
                               gamma=gamma, group_ids=groups)
    want_adv, want_ret = ref_advantages(r.tolist(), _rows(lp, lens), _rows(rlp, lens), lens.tolist(),
                                        est=est, beta=beta, kl_est=kl_est, gamma=gamma, groups=groups.tolist())
    for b, n in enumerate(lens.tolist()):
        np.testing.assert_allclose(got.advantages[b, :n].numpy(), want_adv[b], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got.returns[b, :n].numpy(), want_ret[b], rtol=1e-9, atol=1e-9)
    assert (got.advantages[mask == 0] == 0).all()


def test_mean_only_normalisation_matches_reference():
    r, lp, rlp, mask, lens, groups = random_batch(3)
    got = F.compute_advantages(r, lp, rlp, mask, kl_coef=0.05, std_normalize=False)
    want, _ = ref_advantages(r.tolist(), _rows(lp, lens), _rows(rlp, lens), lens.tolist(), est="reinforce_pp",
                             beta=0.05, kl_est="k1", gamma=1.0, groups=groups.tolist(), std_norm=False)
    for b, n in enumerate(lens.tolist()):
        np.testing.assert_allclose(got.advantages[b, :n].numpy(), want[b], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("est", tuple(ESTIMATORS))
def test_all_equal_rewards_and_no_kl_give_zero_advantages(est):
    r, lp, _, mask, _, groups = random_batch(4, equal_rewards=True)
    adv = F.compute_advantages(r, lp, lp, mask, estimator=ESTIMATORS[est], kl_coef=0.1, group_ids=groups).advantages
    assert torch.isfinite(adv).all() and adv.abs().max() < 1e-6


def test_group_estimators_refuse_singletons_and_missing_groups():
    r = torch.tensor([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="needs >= 2 samples per prompt; group 9 has 1"):
        F.sequence_scores(r, torch.tensor([4, 4, 9]), ESTIMATORS["grpo"])
    with pytest.raises(ValueError, match="needs group_ids"):
        F.sequence_scores(r, None, ESTIMATORS["rloo"])
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
        get_estimator("ppo")


def _shard_worker(rank, world, port, payload, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)

    def all_reduce(x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    scores, lp, rlp, mask = (t[rank::world] for t in payload)
    res = F.token_advantages(scores, lp, rlp, mask, kl_coef=0.05, all_reduce=all_reduce)
    out[rank] = res.advantages
    dist.destroy_process_group()


def test_whitening_over_two_learner_shards_equals_whole_batch():
    r, lp, rlp, mask, lens, groups = random_batch(5)
    mask[2:, 1:] = 0  # very uneven shard lengths: rank 0 gets the long rows
    scores = F.sequence_scores(r, groups, ESTIMATORS["reinforce_pp_baseline"])  # on the driver, whole batch
    whole = F.token_advantages(scores, lp, rlp, mask, kl_coef=0.05).advantages
    out = mp.Manager().dict()
    port = 29500 + random.Random().randrange(2000)
    mp.spawn(_shard_worker, args=(2, port, (scores, lp, rlp, mask), out), nprocs=2)
    for rank in range(2):
        torch.testing.assert_close(out[rank], whole[rank::2], rtol=1e-9, atol=1e-12)
    # The trap this avoids: per-shard whitening differs.
    local = F.token_advantages(scores[0::2], lp[0::2], rlp[0::2], mask[0::2], kl_coef=0.05).advantages
    assert not torch.allclose(local, whole[0::2])


# ---------------------------------------------------------------------------------------------
def ref_loss_terms(lp, old, adv, clip_low, clip_high, dual):
    ratio = math.exp(lp - old)
    s1, s2 = ratio * adv, min(max(ratio, 1 - clip_low), 1 + clip_high) * adv
    loss = -min(s1, s2)
    if dual is not None and adv < 0:
        loss = min(loss, -dual * adv)
    return loss, s2 < s1


@pytest.mark.parametrize("mode", tuple(AGG))
@pytest.mark.parametrize("dual", [None, 3.0])
def test_clipped_policy_loss_matches_reference(mode, dual):
    r, old, _, mask, lens, _ = random_batch(6)
    g = torch.Generator().manual_seed(1)
    lp = (old + torch.randn(old.shape, generator=g, dtype=torch.float64) * 0.5) * mask
    adv = torch.randn(old.shape, generator=g, dtype=torch.float64) * 2 * mask
    got = F.clipped_policy_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=dual,
                                loss_agg_mode=AGG[mode], token_budget=8)
    per_row, clipped, n = [], 0, 0
    for b, L in enumerate(lens.tolist()):
        terms = [ref_loss_terms(lp[b, t].item(), old[b, t].item(), adv[b, t].item(), 0.2, 0.28, dual) for t in range(L)]
        per_row.append([x for x, _ in terms])
        clipped += sum(c for _, c in terms)
        n += L
    if mode == "token-mean":
        want = sum(map(sum, per_row)) / n
    elif mode == "seq-mean-token-mean":
        want = sum(sum(row) / len(row) for row in per_row) / len(per_row)
    elif mode == "seq-mean-token-sum-norm":  # Dr.GRPO: the budget, not the lengths
        want = sum(map(sum, per_row)) / (len(per_row) * 8)
    else:
        want = sum(map(sum, per_row)) / len(per_row)
    assert got.loss.item() == pytest.approx(want, rel=1e-10)
    assert got.clip_fraction.item() == pytest.approx(clipped / n)
    ratios = [math.exp(lp[b, t] - old[b, t]) for b, L in enumerate(lens.tolist()) for t in range(L)]
    assert got.ratio_max.item() == pytest.approx(max(ratios))


def test_policy_gradient_at_ratio_one_is_minus_advantage_over_global_token_count():
    old = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float64)
    adv = torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.0, 0.0]], dtype=torch.float64)
    lp = old.clone().requires_grad_(True)
    # One micro-batch of an optimizer step whose global token count is 6.
    F.clipped_policy_loss(lp, old, adv, mask, num_tokens=6).loss.backward()
    torch.testing.assert_close(lp.grad, -adv * mask / 6)


def test_dual_clip_bounds_negative_advantage_loss():
    old = torch.zeros(1, 1, dtype=torch.float64)
    lp = torch.full((1, 1), 3.0, dtype=torch.float64)  # ratio e^3 ≈ 20
    adv = torch.full((1, 1), -1.0, dtype=torch.float64)
    mask = torch.ones(1, 1, dtype=torch.float64)
    plain = F.clipped_policy_loss(lp, old, adv, mask)
    dual = F.clipped_policy_loss(lp, old, adv, mask, dual_clip=3.0)
    assert plain.loss.item() == pytest.approx(math.exp(3.0))
    assert dual.loss.item() == pytest.approx(3.0) and dual.dual_clip_fraction.item() == 1.0


def test_is_weights_multiply_per_token_loss_and_are_truncated():
    old = torch.tensor([[-1.0, -1.0]])
    sampler = torch.tensor([[-1.0, -3.0]])
    w = F.truncated_is_weights(old, sampler, cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[1.0, 2.0]]))
    mask, adv = torch.ones(1, 2), torch.tensor([[1.0, 1.0]])
    res = F.clipped_policy_loss(old, old, adv, mask, is_weights=w)
    assert res.loss.item() == pytest.approx(-(1.0 + 2.0) / 2)


def test_process_rewards_normalise_clip_scale_and_running_moments():
    r = torch.tensor([1.0, 2.0, 3.0, 50.0], dtype=torch.float64)
    out = F.process_rewards(r, normalize="batch", clip_range=(-1.0, 1.0), scale=2.0)
    z = (r - r.mean()) / (r.std(unbiased=False) + 1e-8)
    torch.testing.assert_close(out, z.clamp(-1, 1) * 2)
    torch.testing.assert_close(F.process_rewards(r), r.clamp(-10, 10))
    running = F.RunningMoments()
    seen = []
    for chunk in (r[:3], r[3:], torch.tensor([-4.0, 0.5], dtype=torch.float64)):
        seen += chunk.tolist()
        got = F.process_rewards(chunk, normalize="running", running=running, clip_range=None)
        mu, sd = np.mean(seen), np.std(seen)
        np.testing.assert_allclose(got.numpy(), (chunk.numpy() - mu) / (sd + 1e-8), rtol=1e-9)
    state = running.get_state()
    other = F.RunningMoments()
    other.set_state(state)
    assert other.std == running.std and other.count == 6
    with pytest.raises(ValueError, match="unknown reward normalisation 'global'"):
        F.process_rewards(r, normalize="global")


def test_adaptive_kl_coef_moves_toward_target_within_bounds():
    assert F.adaptive_kl_coef(0.1, 2.0, target=1.0, horizon=100, n_samples=10) == pytest.approx(0.1 * 1.02)
    assert F.adaptive_kl_coef(0.1, 0.0, target=1.0, horizon=100, n_samples=10) == pytest.approx(0.1 * 0.98)
    assert F.adaptive_kl_coef(0.1, 1.0, target=1.0, horizon=100, n_samples=10) == pytest.approx(0.1)


def test_entropy_from_logits():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(F.entropy_from_logits(logits), torch.tensor([math.log(4), 0.0]), atol=1e-6, rtol=0)


def test_aggregate_loss_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown loss_agg_mode 'sum'"):
        AGG.resolve("sum")
