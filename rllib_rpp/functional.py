"""REINFORCE++ math, once: small pure torch functions (no Ray) to hold next to the paper.

Tensors are [B, T] over response tokens, right-padded, with a 0/1 `mask` (1 = action token: the
loss mask, which may have holes where the response holds tokens the policy did not choose).
Sequence-level tensors are [B]. "§N" is a section of `docs/algorithm.md` (the paper's own
sections are written "paper §N").

Pipeline of one iteration (driver, then learners):
    r          raw scalar reward per sample (reward step)
    r̂          = process_rewards(r)                 §4: normalise -> clip -> scale
    s          = sequence_scores(r̂, groups)         §6: the estimator's baseline (estimators.py)
    KL_t       = token_kl(log π_old, log π_ref)     §1
    r_t        = shape_rewards(s, KL, mask, β)      §1: -β KL_t, plus s on the last token
    G_t        = discounted_returns(r_t, mask, γ)   §2
    Â_t        = whiten(G_t, mask)                  §2: global over the whole batch
    L          = clipped_policy_loss(...)           §3
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from rllib_rpp.estimators import REINFORCE_PP, Estimator, sequence_scores

# Sums a tensor over every learner (torch.distributed.all_reduce), or nothing for one process.
AllReduce = Callable[[torch.Tensor], torch.Tensor]
# δ = log π - log π_ref [B, T] -> KL_t [B, T] (kl_k1, ...; by name: `rllib_rpp.kl_estimators`).
KLEstimator = Callable[[torch.Tensor], torch.Tensor]
# [B, T] values and mask -> a scalar, given the step's counts (token_mean, ...; `rllib_rpp.loss_aggregations`).
Aggregation = Callable[..., torch.Tensor]


def no_reduce(x: torch.Tensor) -> torch.Tensor:
    return x


# ---------------------------------------------------------------------------------------------
# §1 Token-level KL
# ---------------------------------------------------------------------------------------------
def kl_k1(delta: torch.Tensor) -> torch.Tensor:
    """k1 = δ (unbiased, any sign)."""
    return delta


def kl_k2(delta: torch.Tensor) -> torch.Tensor:
    """k2 = δ²/2 (the loss placement's default)."""
    return 0.5 * delta.square()


def kl_k3(delta: torch.Tensor) -> torch.Tensor:
    """k3 = exp(-δ) - 1 + δ (unbiased, ≥ 0)."""
    return torch.expm1(-delta) + delta


def token_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = kl_k1,
             clamp: float = 10.0) -> torch.Tensor:
    """Per-token KL estimate from δ_t = log π(a_t|s_t) - log π_ref(a_t|s_t) (`estimator`: kl_k1, kl_k2,
    kl_k3), clamped to [-clamp, clamp]."""
    return estimator(logprobs - ref_logprobs).clamp(-clamp, clamp)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index T_b of the last action token of each row (0 for an empty row)."""
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return (positions * (mask > 0)).amax(dim=-1)


def shape_rewards(rewards: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> torch.Tensor:
    """r_t = -β·KL_t + 1[t = T]·r̂   (masked: 0 at padding)."""
    token_rewards = -kl_coef * kl * mask
    last = last_token_index(mask).unsqueeze(-1)
    return token_rewards.scatter_add(-1, last, rewards.to(token_rewards.dtype).unsqueeze(-1))


# ---------------------------------------------------------------------------------------------
# §2 Returns and global whitening
# ---------------------------------------------------------------------------------------------
def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = Σ_{i >= t, mask_i} γ^{k(t, i)} r_i, right to left, with k(t, i) the number of action
    tokens after t up to i; 0 outside the mask. Tokens outside the mask are not time steps: padding
    after the response, and holes inside it (tokens the policy did not choose, e.g. tool output)
    neither earn rewards nor discount them."""
    if gamma == 1.0:  # a reverse cumulative sum
        return (token_rewards * mask).flip(-1).cumsum(-1).flip(-1) * mask
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for t in reversed(range(token_rewards.shape[1])):
        action = mask[:, t] > 0
        running = torch.where(action, (token_rewards[:, t] + gamma * running) * mask[:, t], running)
        returns[:, t] = running * action
    return returns


def masked_mean_var(values: torch.Tensor, mask: torch.Tensor,
                    all_reduce: AllReduce = no_reduce) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance (ddof=0) over valid entries of every learner, in float64."""
    x, m = values.double(), mask.double()
    sums = all_reduce(torch.stack([(x * m).sum(), m.sum()]))
    count = sums[1].clamp(min=1.0)
    mean = sums[0] / count
    var = all_reduce((((x - mean) * m) ** 2).sum().reshape(1))[0] / count
    return mean, var


def whiten(values: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, scale: bool = True,
           eps: float = 1e-8, all_reduce: AllReduce = no_reduce) -> torch.Tensor:
    """Â = (A - μ) / (σ + eps), μ and σ over all valid tokens of the whole batch (population σ).

    `scale=False` subtracts the mean only; `shift_mean=False` keeps the mean (scales only).
    All-equal values give exactly-zero-up-to-rounding Â, never NaN. Padding stays 0."""
    mean, var = masked_mean_var(values, mask, all_reduce)
    out = values.double() - mean
    if scale:
        out = out / (var.sqrt() + eps)
    if not shift_mean:
        out = out + mean
    return (out * mask).to(values.dtype)


# ---------------------------------------------------------------------------------------------
# §4 Reward processing (the §6 sequence baselines are in estimators.py)
# ---------------------------------------------------------------------------------------------
class RunningMoments:
    """Running mean/variance of all rewards seen (Chan et al. parallel update), for `running`
    reward normalisation. Its state is three floats, saved with checkpoints."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0.0, 0.0, 0.0

    def update(self, x: torch.Tensor) -> None:
        x = x.double()
        n, mean = float(x.numel()), x.mean().item()
        m2 = ((x - mean) ** 2).sum().item()
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return (self.m2 / self.count) ** 0.5 if self.count else 1.0

    def get_state(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def set_state(self, state: dict) -> None:
        self.count, self.mean, self.m2 = state["count"], state["mean"], state["m2"]


def overlong_penalty(lengths: torch.Tensor, max_new_tokens: int, buffer_len: int, penalty: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment, [B] (<= 0), added to the reward:

        R_len(L) = -penalty · clamp((L - (L_max - L_buf)) / L_buf, 0, 1)

    0 up to L_max - L_buf tokens, then falling linearly to -penalty at L_max = max_new_tokens."""
    if not 0 < buffer_len <= max_new_tokens:
        raise ValueError(f"overlong_buffer_len={buffer_len!r} must be in 1..max_new_tokens ({max_new_tokens})")
    excess = (lengths.double() - (max_new_tokens - buffer_len)) / buffer_len
    return -penalty * excess.clamp(0.0, 1.0)


def process_rewards(rewards: torch.Tensor, *, normalize: str | None = None,
                    running: RunningMoments | None = None, clip_range: tuple[float, float] | None = (-10.0, 10.0),
                    scale: float = 1.0, eps: float = 1e-8) -> torch.Tensor:
    """r̂ = scale · clip((r - μ) / (σ + eps)), each step optional (§4, in this order).

    normalize: None; "batch" (μ, σ of this batch); "running" (of every reward seen so far,
    this batch included: `running` is updated in place)."""
    r = rewards.double()
    if normalize == "batch":
        mean, var = masked_mean_var(r, torch.ones_like(r))
        r = (r - mean) / (var.sqrt() + eps)
    elif normalize == "running":
        if running is None:
            raise ValueError("normalize='running' needs a RunningMoments")
        running.update(r)
        r = (r - running.mean) / (running.std + eps)
    elif normalize is not None:
        raise ValueError(f"unknown reward normalisation {normalize!r}; expected None, 'batch' or 'running'")
    if clip_range is not None:
        r = r.clamp(clip_range[0], clip_range[1])
    return (r * scale).to(rewards.dtype)


class Advantages(NamedTuple):
    advantages: torch.Tensor  # [B, T] Â_t, 0 at padding
    returns: torch.Tensor  # [B, T] G_t before whitening
    kl: torch.Tensor  # [B, T] KL_t used in the reward (0 when kl_coef = 0)


def token_advantages(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                     mask: torch.Tensor, *, whiten_globally: bool = True, kl_coef: float = 0.0,
                     kl_estimator: KLEstimator = kl_k1, gamma: float = 1.0, std_normalize: bool = True,
                     all_reduce: AllReduce = no_reduce) -> Advantages:
    """Token-level half of compute_advantages, given the sequence scores s (§1, §2).

    Runs on each learner's shard; `all_reduce` makes the whitening statistics global.
    `whiten_globally` is the estimator's `whitened` (False: grpo, rloo)."""
    kl = token_kl(logprobs, ref_logprobs, kl_estimator) * mask
    returns = discounted_returns(shape_rewards(scores, kl, mask, kl_coef), mask, gamma)
    if whiten_globally:
        adv = whiten(returns, mask, scale=std_normalize, all_reduce=all_reduce)
    else:  # grpo (normalised per group) / rloo (leave-one-out baseline): no global whitening
        adv = returns * mask
    return Advantages(adv, returns, kl)


def compute_advantages(rewards: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                       mask: torch.Tensor, *, estimator: Estimator = REINFORCE_PP, kl_coef: float = 0.0,
                       kl_estimator: KLEstimator = kl_k1, gamma: float = 1.0, group_ids: torch.Tensor | None = None,
                       std_normalize: bool = True, all_reduce: AllReduce = no_reduce) -> Advantages:
    """Â for one whole batch: sequence_scores (the baseline of `estimator`, a table entry) then token_advantages.

    `rewards` are the processed r̂ (§4). `logprobs` are π_old's (recomputed by the learner, or the
    sampler's with old_logprobs="sampler").
    Pass kl_coef = 0 when KL is a loss term instead (never both)."""
    scores = sequence_scores(rewards, group_ids, estimator)
    return token_advantages(scores, logprobs, ref_logprobs, mask, whiten_globally=estimator.whitened, kl_coef=kl_coef,
                            kl_estimator=kl_estimator, gamma=gamma, std_normalize=std_normalize,
                            all_reduce=all_reduce)


# ---------------------------------------------------------------------------------------------
# §3 Clipped policy loss
# ---------------------------------------------------------------------------------------------
def _seq_mean(per_seq: torch.Tensor, mask: torch.Tensor, num_seqs) -> torch.Tensor:
    return per_seq.sum() / max(mask.shape[0] if num_seqs is None else num_seqs, 1)


def token_mean(values: torch.Tensor, mask: torch.Tensor, *, num_tokens=None, num_seqs=None,
               token_budget=None) -> torch.Tensor:
    """Σ M·L / N_tokens."""
    count = mask.sum() if num_tokens is None else num_tokens
    return (values * mask).sum() / max(count, 1)  # an all-masked batch gives 0, not NaN


def seq_mean_token_mean(values: torch.Tensor, mask: torch.Tensor, *, num_tokens=None, num_seqs=None,
                        token_budget=None) -> torch.Tensor:
    """Σ_b (Σ_t M·L / Σ_t M) / N_seqs."""
    return _seq_mean((values * mask).sum(-1) / mask.sum(-1).clamp(min=1), mask, num_seqs)


def seq_mean_token_sum(values: torch.Tensor, mask: torch.Tensor, *, num_tokens=None, num_seqs=None,
                       token_budget=None) -> torch.Tensor:
    """Σ_b Σ_t M·L / N_seqs."""
    return _seq_mean((values * mask).sum(-1), mask, num_seqs)


def seq_mean_token_sum_norm(values: torch.Tensor, mask: torch.Tensor, *, num_tokens=None, num_seqs=None,
                            token_budget=None) -> torch.Tensor:
    """Σ_b Σ_t M·L / (N_seqs · T_budget)  (Dr.GRPO: T_budget = max_new_tokens, a constant instead of each
    response's length, so any split of the batch sums to the same loss)."""
    if not token_budget or token_budget < 1:
        raise ValueError(f"loss_agg_mode 'seq-mean-token-sum-norm' divides by the response budget; got "
                         f"token_budget={token_budget!r}, expected max_new_tokens (a positive int)")
    return _seq_mean((values * mask).sum(-1) / token_budget, mask, num_seqs)


def aggregate_loss(values: torch.Tensor, mask: torch.Tensor, mode: Aggregation = token_mean, *,
                   num_tokens: float | torch.Tensor | None = None,
                   num_seqs: float | torch.Tensor | None = None, token_budget: int | None = None) -> torch.Tensor:
    """Reduce a [B, T] per-token loss to a scalar by `mode` (token_mean, seq_mean_token_mean,
    seq_mean_token_sum, seq_mean_token_sum_norm). N_tokens / N_seqs default to this batch's counts;
    pass the optimizer step's global counts when a step spans several micro-batches or learners."""
    return mode(values, mask, num_tokens=num_tokens, num_seqs=num_seqs, token_budget=token_budget)


def truncated_is_weights(old_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor,
                         cap: float = 2.0) -> torch.Tensor:
    """Token-level truncated importance weights min(π_old / π_sampler, cap) (TIS), detached:
    corrects for the sampler's log-probs differing from the learner's."""
    return torch.exp(old_logprobs - sampler_logprobs).clamp(max=cap).detach()


def masked_is_weights(old_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, low: float,
                      high: float) -> torch.Tensor:
    """1 where low <= π_old / π_sampler <= high, else 0 (ICEPOP-style masking), detached: tokens
    too far off the sampler's distribution leave the loss instead of being reweighted."""
    ratio = torch.exp(old_logprobs - sampler_logprobs)
    return ((ratio >= low) & (ratio <= high)).to(old_logprobs.dtype).detach()


class PolicyLoss(NamedTuple):
    loss: torch.Tensor
    clip_fraction: torch.Tensor
    dual_clip_fraction: torch.Tensor
    ratio_mean: torch.Tensor
    ratio_max: torch.Tensor
    approx_kl: torch.Tensor  # k3 estimate of KL(π_old || π_θ) on these tokens


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, *, clip_low: float = 0.2, clip_high: float = 0.2,
                        dual_clip: float | None = None, loss_agg_mode: Aggregation = token_mean,
                        num_tokens=None, num_seqs=None, is_weights: torch.Tensor | None = None,
                        token_budget: int | None = None, log_ratio_clamp: float = 20.0) -> PolicyLoss:
    """L_t = -min(ρ_t Â_t, clip(ρ_t, 1 - ε_low, 1 + ε_high) Â_t),  ρ_t = exp(log π_θ - log π_old).

    Dual clip (c > 1): for Â_t < 0, L_t = min(L_t, -c·Â_t). Optional per-token `is_weights`
    multiply L_t (truncated importance sampling). Aggregated by `aggregate_loss`."""
    log_ratio = (logprobs - old_logprobs).clamp(-log_ratio_clamp, log_ratio_clamp)
    ratio = torch.exp(log_ratio)
    surr = ratio * advantages
    surr_clipped = ratio.clamp(1 - clip_low, 1 + clip_high) * advantages
    losses = -torch.minimum(surr, surr_clipped)
    clipped = (surr_clipped < surr).float()
    dual = torch.zeros_like(losses)
    if dual_clip is not None:
        dual_bound = -dual_clip * advantages
        dual = ((advantages < 0) & (losses > dual_bound)).float()
        losses = torch.where(advantages < 0, torch.minimum(losses, dual_bound), losses)
    return _finish(losses, mask, is_weights, ratio, log_ratio, clipped, dual, loss_agg_mode,
                   num_tokens=num_tokens, num_seqs=num_seqs, token_budget=token_budget)


def _finish(losses, mask, is_weights, ratio, log_ratio, clipped, dual, loss_agg_mode, **agg) -> PolicyLoss:
    """Weight by `is_weights`, aggregate, and measure the ratios (token means over `mask`)."""
    if is_weights is not None:
        losses = losses * is_weights
    loss = aggregate_loss(losses, mask, loss_agg_mode, **agg)
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        valid = mask > 0
        stats = (
            (clipped * mask).sum() / n,
            (dual * mask).sum() / n,
            (ratio * mask).sum() / n,
            ratio[valid].max() if valid.any() else ratio.new_tensor(1.0),
            ((torch.expm1(log_ratio) - log_ratio) * mask).sum() / n,
        )
    return PolicyLoss(loss, *stats)


def gspo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                     mask: torch.Tensor, *, clip_low: float = 3e-4, clip_high: float = 4e-4,
                     loss_agg_mode: Aggregation = seq_mean_token_mean, num_tokens=None, num_seqs=None,
                     is_weights: torch.Tensor | None = None, token_budget: int | None = None,
                     log_ratio_clamp: float = 20.0, **unused) -> PolicyLoss:
    """GSPO (Zheng et al. 2025), token variant: one importance ratio per sequence.

        s_i     = exp( Σ_t M·(log π_θ - log π_old) / Σ_t M )            sequence ratio, [B]
        s_{i,t} = sg(s_i) · π_θ(y_t) / sg(π_θ(y_t))                     value s_i, gradient of token t
        L_{i,t} = -min(s_{i,t} Â_{i,t}, clip(s_{i,t}, 1 - ε_low, 1 + ε_high) Â_{i,t})

    With one advantage per sequence (Â_{i,t} = Â_i) and seq-mean-token-mean this is GSPO's
    sequence loss -min(s_i Â_i, clip(s_i) Â_i) exactly, gradient included; REINFORCE++'s advantages
    differ per token (the KL shaping), which the token variant keeps. ε is a sequence-level
    range (GSPO: 3e-4 / 4e-4), not PPO's 0.2. Sequences are never split across micro-batches, so
    s_i is always whole."""
    n = mask.sum(-1).clamp(min=1)
    seq_log_ratio = (((logprobs - old_logprobs) * mask).sum(-1) / n).clamp(-log_ratio_clamp, log_ratio_clamp)
    log_ratio = seq_log_ratio.detach()[:, None] + logprobs - logprobs.detach()  # [B, T], value log s_i
    ratio = torch.exp(log_ratio)
    surr = ratio * advantages
    surr_clipped = ratio.clamp(1 - clip_low, 1 + clip_high) * advantages
    losses = -torch.minimum(surr, surr_clipped)
    clipped = (surr_clipped < surr).float()
    return _finish(losses, mask, is_weights, ratio.detach(), log_ratio.detach(), clipped, torch.zeros_like(losses),
                   loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, token_budget=token_budget)


def cispo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                      mask: torch.Tensor, *, clip_low: float = 0.2, clip_high: float = 0.28,
                      loss_agg_mode: Aggregation = token_mean, num_tokens=None, num_seqs=None,
                      is_weights: torch.Tensor | None = None, token_budget: int | None = None,
                      log_ratio_clamp: float = 20.0, **unused) -> PolicyLoss:
    """CISPO (MiniMax-M1, 2025): clip the importance weight, never the token's gradient.

        L_t = -sg(clip(ρ_t, 1 - ε_low, 1 + ε_high)) · Â_t · log π_θ(y_t),   ρ_t = π_θ / π_old

    Every token keeps its REINFORCE gradient Â_t ∇log π_θ, weighted by the clipped (stop-gradient)
    ratio; PPO-clip instead drops the gradient of tokens whose ratio left the range. At ρ = 1 the
    two gradients are equal."""
    log_ratio = (logprobs - old_logprobs).clamp(-log_ratio_clamp, log_ratio_clamp)
    ratio = torch.exp(log_ratio)
    weight = ratio.clamp(1 - clip_low, 1 + clip_high).detach()
    losses = -weight * advantages * logprobs
    clipped = ((ratio < 1 - clip_low) | (ratio > 1 + clip_high)).float()
    return _finish(losses, mask, is_weights, ratio.detach(), log_ratio.detach(), clipped, torch.zeros_like(losses),
                   loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, token_budget=token_budget)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(z) - Σ softmax(z)·z, per position, from whole logits (the reference formula;
    the learner's entropy comes from `core.logprobs`' chunked pass)."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def adaptive_kl_coef(kl_coef: float, observed_kl: float, *, target: float, horizon: float,
                     n_samples: int) -> float:
    """β ← β · (1 + clip(KL/target - 1, -0.2, 0.2) · n_samples / horizon)  (Ziegler et al.)."""
    error = min(max(observed_kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n_samples / horizon)
