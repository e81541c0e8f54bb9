"""Once per update, over the learner's whole shard: π_ref and π_old log-probs (π_old recomputed,
or the sampler's with old_logprobs="sampler"), then Â (§1, §2) and the importance weights (§3).

Runs before the shard is split into mini-batches, so every mini-batch and epoch shares one π_old
and the whitening sees the whole batch (its sums are all-reduced over learners through
`Collectives`). The passes run in token-budget micro-batches (`core.microbatch`).
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from functools import partial

import torch

from rllib_rpp import functional as F
from rllib_rpp import schema as S
from rllib_rpp.core.microbatch import plan_microbatches, scatter_rows, take_rows
from rllib_rpp.core.options import ALONE, Collectives, UpdateOptions
from rllib_rpp.estimators import get_estimator
from rllib_rpp.kl_estimators import get_kl_estimator

# The sampler's column first: when π_old is its copy (old_logprobs="sampler"/"auto"), a tie in the
# counts names where the NaN came from.
_CHECKED = (S.SAMPLER_LOGPROBS, S.OLD_LOGPROBS, S.REF_LOGPROBS)


@contextmanager
def eval_mode(module):
    """Evaluation mode for the duration of a pass (no dropout), restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def forward_logprobs(model, micro: dict, with_entropy: bool):
    """(log-probs, entropy) of a micro-batch. `model` is a log-prob module, the one interface the
    core sees: its call returns {"logprobs", "entropy"} (the RLModule, a `LogprobModule` around a
    causal LM, or their FSDP-sharded roots, which gather their weights inside the call)."""
    out = model(micro, with_entropy=with_entropy)
    return out["logprobs"], out["entropy"]


@torch.no_grad()
def logprob_pass(model, batch: dict, microbatches: list[torch.Tensor], opts: UpdateOptions, *,
                 with_entropy: bool = False):
    """log π(a_t|s_t) [B, R] (and entropy) of every row, one token-budget micro-batch at a time."""
    device = batch[S.RESPONSE_IDS].device
    lps, ents = [], []
    with eval_mode(model):
        for rows in microbatches:
            micro = take_rows({k: batch[k] for k in S.TOKEN_COLUMNS}, rows)
            with opts.autocast(device.type):
                lp, ent = forward_logprobs(model, micro, with_entropy)
            lps.append((rows, lp))
            ents.append((rows, ent))
    B, width = batch[S.RESPONSE_IDS].shape
    return scatter_rows(lps, B, width), (scatter_rows(ents, B, width) if with_entropy else None)


def _clock(device: torch.device) -> float:
    """The time once the device's queued work is done (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@torch.no_grad()
def prepare_batch(policy, ref, batch: dict, opts: UpdateOptions, *, kl_coef: float, collectives: Collectives = ALONE,
                  ref_context=nullcontext) -> dict[str, float]:
    """Write OLD_LOGPROBS, REF_LOGPROBS, ENTROPY, ADVANTAGES (and IS_WEIGHTS with tis_cap and/or
    is_mask_range) into `batch`; return the batch statistics (global over learners) and the pass
    timings.

    `policy` and `ref` (the frozen reference) are log-prob modules (see `forward_logprobs`);
    `ref_context()` is entered around the reference pass (a LoRA policy with its adapters
    disabled is its own reference). With several learners, `collectives` sums the statistics
    over them and agrees on the number of micro-batches (sharded learners run the same number
    of passes)."""
    all_reduce = collectives.all_reduce
    microbatches = plan_microbatches(batch, opts.max_tokens_per_microbatch, collectives.agree_count)
    clock = partial(_clock, batch[S.PROMPT_IDS].device)
    t0 = clock()
    if opts.old_logprobs == "sampler":  # exact when the sampler runs these weights in this dtype: no pass
        batch[S.OLD_LOGPROBS] = batch[S.SAMPLER_LOGPROBS].clone()
        batch[S.ENTROPY] = torch.full_like(batch[S.OLD_LOGPROBS], float("nan"))  # not computed
    else:
        batch[S.OLD_LOGPROBS], batch[S.ENTROPY] = logprob_pass(policy, batch, microbatches, opts, with_entropy=True)
    t1 = clock()
    with ref_context():
        batch[S.REF_LOGPROBS], _ = logprob_pass(ref, batch, microbatches, opts)
    t2 = clock()
    dropped = drop_nonfinite(batch, opts.nonfinite_logprobs, all_reduce)
    mask = batch[S.LOSS_MASK]
    res = F.token_advantages(
        batch[S.SCORES], batch[S.OLD_LOGPROBS], batch[S.REF_LOGPROBS], mask,
        whiten_globally=get_estimator(opts.advantage_estimator).whitened,
        kl_coef=kl_coef if opts.kl_placement == "reward" else 0.0, kl_estimator=get_kl_estimator(opts.kl_estimator),
        gamma=opts.gamma, std_normalize=opts.advantage_std_norm, all_reduce=all_reduce,
    )
    batch[S.ADVANTAGES] = res.advantages
    weights = importance_weights(batch, opts)
    if weights is not None:
        batch[S.IS_WEIGHTS] = weights
    stats = batch_statistics(batch, get_kl_estimator(opts.kl_estimator), all_reduce)
    if opts.is_mask_range is not None:
        kept = all_reduce(torch.stack([(weights > 0).double().mul(mask).sum(), mask.double().sum()]))
        stats["is_masked_fraction"] = float(1 - kept[0] / kept[1].clamp(min=1))
    stats.update(nonfinite_responses=dropped, old_logprobs_s=t1 - t0, ref_logprobs_s=t2 - t1,
                 advantages_s=clock() - t2)
    return stats


def importance_weights(batch: dict, opts: UpdateOptions) -> torch.Tensor | None:
    """Per-token corrections for the sampler/learner gap (§3): TIS weights min(π_old/π_sampler,
    tis_cap), times the ICEPOP-style 0/1 mask of `is_mask_range`; None when both are off."""
    old, sampler = batch[S.OLD_LOGPROBS], batch[S.SAMPLER_LOGPROBS]
    weights = None
    if opts.tis_cap is not None:
        weights = F.truncated_is_weights(old, sampler, opts.tis_cap)
    if opts.is_mask_range is not None:
        mask = F.masked_is_weights(old, sampler, *opts.is_mask_range)
        weights = mask if weights is None else weights * mask
    return weights


def drop_nonfinite(batch: dict, policy: str, all_reduce: F.AllReduce = F.no_reduce) -> int:
    """NaN/inf log-probs never reach the loss. "error": every learner raises together (the
    counts are all-reduced first, so no learner is left waiting in a collective); "mask": those
    responses leave the loss. Returns the number of responses dropped on this learner."""
    mask = batch[S.LOSS_MASK] > 0
    bad_rows = {k: (~torch.isfinite(batch[k]) & mask).any(-1) for k in _CHECKED}
    local = torch.tensor([float(rows.sum()) for rows in bad_rows.values()] + [float(mask.shape[0])],
                         dtype=torch.float64, device=mask.device)
    counts = all_reduce(local)
    if policy == "error" and counts[:-1].sum() > 0:
        key = _CHECKED[int(counts[:-1].argmax())]
        where = bad_rows[key].nonzero()
        first = f"; first on this learner: row {int(where[0])}" if len(where) else ""
        raise FloatingPointError(
            f"{key} contain NaN/inf in {int(counts[_CHECKED.index(key)])} of {int(counts[-1])} responses{first}; "
            f"no update was applied. Check the model weights and dtype, or set nonfinite_logprobs='mask' to "
            f"leave such responses out (they are counted)")
    bad = torch.stack(list(bad_rows.values())).any(0)
    if bad.any():
        batch[S.LOSS_MASK] = batch[S.LOSS_MASK] * (~bad).unsqueeze(-1)
        for k in _CHECKED:
            batch[k] = torch.nan_to_num(batch[k], nan=0.0, posinf=0.0, neginf=0.0)
    return int(bad.sum())


def batch_statistics(batch: dict, kl_estimator: F.KLEstimator,
                     all_reduce: F.AllReduce = F.no_reduce) -> dict[str, float]:
    """KL to π_ref, entropy, sampler mismatch and advantage statistics over every learner's loss tokens."""
    mask = batch[S.LOSS_MASK]
    old, ref = batch[S.OLD_LOGPROBS], batch[S.REF_LOGPROBS]
    kl = F.token_kl(old, ref, kl_estimator) * mask
    k1 = (old - ref) * mask
    gap = (batch[S.SAMPLER_LOGPROBS] - old).abs() * mask
    adv = batch[S.ADVANTAGES][mask > 0]
    sums = all_reduce(torch.stack([
        kl.sum(), k1.sum(), mask.sum(), mask.new_tensor(float(mask.shape[0])), gap.sum(),
        (batch[S.ENTROPY] * mask).sum(), adv.sum(), adv.square().sum(),
    ]).double())
    n_tok, n_seq = sums[2].clamp(min=1), sums[3].clamp(min=1)
    adv_mean = sums[6] / n_tok
    stats = {
        "kl_ref_per_token": sums[0] / n_tok,
        "kl_ref_per_seq": sums[0] / n_seq,
        "kl_ref_k1_per_token": sums[1] / n_tok,
        "kl_ref_k1_per_seq": sums[1] / n_seq,  # the same estimator whatever is penalised: comparable
        "entropy": sums[5] / n_tok,
        "logprob_mismatch_mean": sums[4] / n_tok,
        "logprob_mismatch_max": gap.max() if gap.numel() else gap.new_tensor(0.0),
        "advantage_mean": adv_mean,
        "advantage_std": (sums[7] / n_tok - adv_mean**2).clamp(min=0).sqrt(),
        "advantage_min": adv.min() if adv.numel() else 0.0,
        "advantage_max": adv.max() if adv.numel() else 0.0,
        "response_tokens": sums[2],
        "num_seqs": sums[3],
    }
    return {k: float(v) for k, v in stats.items()}
