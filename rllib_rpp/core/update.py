"""One optimizer step over a mini-batch, split into micro-batches by a token budget (§5).

The mini-batch's global token and sequence counts (every micro-batch, every learner) are
all-reduced once; each micro-batch's loss is normalised by them, so the accumulated gradient
equals the gradient of the unsplit mini-batch. One optimizer step follows.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch

from rllib_rpp import functional as F
from rllib_rpp import schema as S
from rllib_rpp.core.loss import microbatch_loss
from rllib_rpp.core.microbatch import plan_microbatches, take_rows
from rllib_rpp.core.options import ALONE, Collectives, UpdateOptions

# How the per-micro-batch metrics combine: token-weighted means, maxima, sums.
_MEAN = ("clip_fraction", "dual_clip_fraction", "ratio_mean", "approx_kl_old", "logprob_mismatch_mean", "entropy")
_MAX = ("ratio_max", "logprob_mismatch_max")


def step_counts(mask: torch.Tensor, collectives: Collectives = ALONE) -> tuple[torch.Tensor, torch.Tensor]:
    """N_tokens and N_seqs of the optimizer step over every learner, divided by the world size: DDP
    averages gradients over learners, so each learner normalises by its share of the global count."""
    counts = collectives.all_reduce(torch.stack([mask.sum(), mask.new_tensor(float(mask.shape[0]))]))
    return counts[0] / collectives.world_size, counts[1] / collectives.world_size


def accumulate_gradients(forward: Callable[[dict], dict], batch: dict, opts: UpdateOptions, *, kl_coef: float,
                         max_tokens: int, collectives: Collectives = ALONE, autocast=nullcontext,
                         sampler_gap: bool = False, entropy: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward + loss + backward for every micro-batch of `batch` (gradients accumulate).

    forward(micro_batch) -> {"logprobs": [b, r], "entropy": [b, r] or None}. With several
    learners, `collectives` sums the counts over them, agrees on the largest micro-batch count
    of any learner (all run that many), and defers DDP's gradient all-reduce to the last
    micro-batch (`no_sync`). `sampler_gap`: also measure |log π_θ - log π_sampler| (on the first
    mini-batch of an update π_θ is π_old: the sampler mismatch, when π_old is not recomputed).
    `entropy`: report H(π_θ) of the forward passes (no π_old pass measured it).
    Returns the mini-batch loss (detached) and its metrics."""
    mask = batch[S.LOSS_MASK]
    num_tokens, num_seqs = step_counts(mask, collectives)
    microbatches = plan_microbatches(batch, max_tokens, collectives.agree_count)
    total = 0.0
    sums: dict[str, float] = {}
    local_tokens = max(float(mask.sum()), 1.0)
    nonfinite = 0
    for k, rows in enumerate(microbatches):
        micro = take_rows(batch, rows)
        with nullcontext() if k == len(microbatches) - 1 else collectives.no_sync():
            with autocast():
                out = forward(micro)
            loss, metrics = microbatch_loss(out["logprobs"], out["entropy"], micro, opts, kl_coef=kl_coef,
                                           num_tokens=num_tokens, num_seqs=num_seqs)
            # Backward even on a non-finite loss: it poisons the gradients of every learner
            # alike (DDP all-reduces them), so all of them refuse the step together.
            nonfinite += int(not torch.isfinite(loss))
            loss.backward()
        total = total + loss.detach()
        share = float(micro[S.LOSS_MASK].sum()) / local_tokens
        if entropy:  # H(π_θ) over this step's tokens (a metric; the loss has its own term)
            ent = out["entropy"].detach() * micro[S.LOSS_MASK]
            metrics = {**metrics, "entropy": ent.sum() / max(float(micro[S.LOSS_MASK].sum()), 1.0)}
        if sampler_gap:
            gap = (out["logprobs"].detach() - micro[S.SAMPLER_LOGPROBS]).abs() * micro[S.LOSS_MASK]
            metrics = {**metrics, "logprob_mismatch_mean": gap.sum() / max(float(micro[S.LOSS_MASK].sum()), 1.0),
                       "logprob_mismatch_max": gap.max()}
        for name, value in metrics.items():
            v = float(value)
            if name in _MAX:
                sums[name] = max(sums.get(name, v), v)
            elif name in _MEAN:
                sums[name] = sums.get(name, 0.0) + v * share
            else:
                sums[name] = sums.get(name, 0.0) + v
    sums.update(num_microbatches=float(len(microbatches)), nonfinite_losses=float(nonfinite))
    return total, sums


def clip_and_check(parameters: list[torch.nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """Clip the gradients' global norm (DTensor-aware, one collective when sharded) and refuse a
    step whose gradients are not finite: every learner sees the same norm, so all refuse."""
    grads = [p for p in parameters if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(grads, max_norm if max_norm else float("inf"), foreach=True)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    if not torch.isfinite(norm):
        for p in grads:
            p.grad = None
        raise FloatingPointError(
            f"the gradient norm is {float(norm)} (a NaN/inf loss or gradient on some learner); the optimizer step was "
            f"not taken, the weights are unchanged by this mini-batch")
    return norm


def check_finite_weights(parameters: list[torch.nn.Parameter], all_reduce: F.AllReduce | None = None) -> None:
    """One fused check that an update left every weight finite (before weights reach runners).
    Sharded weights: each learner checks its shards, one all-reduce decides for all."""
    local = [(p.to_local() if hasattr(p, "to_local") else p).detach() for p in parameters]
    total = torch.stack(torch._foreach_norm(local)).sum()
    bad = (~torch.isfinite(total)).double().reshape(1)
    if all_reduce is not None:
        bad = all_reduce(bad)
    if bad.item() > 0:
        raise FloatingPointError("the optimizer step made some weights NaN/inf; they were not sent to the env runners. "
                                 "Check lr, grad_clip and the precision settings")
