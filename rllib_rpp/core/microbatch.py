"""Rows into micro-batches by a token budget, and the token columns of a set of rows.

A micro-batch's cost is its padded size: rows x (longest prompt + longest response), since
prompts are left- and responses right-padded. Rows are sorted by length so that rows of similar
length share a micro-batch (little padding). Learners that must run the same number of forward
passes (FSDP gathers weights in each) agree on a count and split further to reach it.
"""

from __future__ import annotations

import torch

from rllib_rpp import schema as S

MAX_PADDING = 0.25  # share of a micro-batch's tokens that may be padding (once it is worth a split)
# A pass's fixed cost (Python, kernel launches, one weight read per layer), in padded tokens: a
# micro-batch smaller than this is not split to save padding, since the extra pass costs more
# than the padding does. Measured on the tiny preset (2-core CPU): 128 rows x ~12 tokens in one
# pass took 35 ms against 61 ms when padding splits made 1.5 passes of it (and broke prompt groups).
PADDING_SPLIT_MIN_TOKENS = 4096


def row_lengths(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Real prompt and response tokens per row, [B] each."""
    return batch[S.PROMPT_MASK].sum(-1).long(), (batch[S.RESPONSE_MASK] > 0).sum(-1).long()


def split_by_tokens(prompt_len: torch.Tensor, response_len: torch.Tensor, max_tokens: int, *,
                    min_count: int = 1, max_padding: float = MAX_PADDING) -> list[torch.Tensor]:
    """The row indices of each micro-batch: padded size rows x (max P + max R) at most `max_tokens`
    (a row longer than the budget is a micro-batch of its own), longest rows first. A micro-batch
    that already holds PADDING_SPLIT_MIN_TOKENS padded tokens also ends before a row shorter than
    (1 - max_padding) of its longest row, so padding costs at most that share of its FLOPs. Then the micro-batches with
    the most rows are halved until there are at least `min_count` (<= number of rows)."""
    order = (prompt_len + response_len).argsort(descending=True, stable=True).tolist()
    p, r = prompt_len.tolist(), response_len.tolist()
    microbatches: list[list[int]] = []
    cur: list[int] = []
    max_p = max_r = 0
    for i in order:
        new_p, new_r = max(max_p, p[i]), max(max_r, r[i])
        over_budget = (len(cur) + 1) * (new_p + new_r) > max_tokens
        width = max_p + max_r
        much_shorter = len(cur) * width >= PADDING_SPLIT_MIN_TOKENS and p[i] + r[i] < (1 - max_padding) * width
        if cur and (over_budget or much_shorter):
            microbatches.append(cur)
            cur, new_p, new_r = [], p[i], r[i]
        cur.append(i)
        max_p, max_r = new_p, new_r
    if cur:
        microbatches.append(cur)
    while len(microbatches) < min(min_count, len(order)):
        k = max(range(len(microbatches)), key=lambda j: len(microbatches[j]))
        g = microbatches.pop(k)
        microbatches[k:k] = [g[: len(g) // 2], g[len(g) // 2 :]]
    return [torch.tensor(g, dtype=torch.long) for g in microbatches]


def plan_microbatches(batch: dict, max_tokens: int, agree_count=int) -> list[torch.Tensor]:
    """The micro-batch plan of a batch, decided once: `split_by_tokens` over its rows, with as many
    micro-batches as the learner that needs the most (`agree_count`: sharded and DDP learners run
    the same number of passes)."""
    prompt_len, response_len = row_lengths(batch)
    own = split_by_tokens(prompt_len, response_len, max_tokens)
    count = agree_count(len(own))
    return own if count <= len(own) else split_by_tokens(prompt_len, response_len, max_tokens, min_count=count)


def take_rows(batch: dict, rows: torch.Tensor) -> dict:
    """The batch's columns for `rows`, trimmed to their longest prompt and response."""
    rows = rows.to(batch[S.RESPONSE_MASK].device)
    out = {k: v[rows] for k, v in batch.items() if isinstance(v, torch.Tensor)}
    p = max(int(out[S.PROMPT_MASK].sum(-1).max()), 1)
    r = max(int((out[S.RESPONSE_MASK] > 0).sum(-1).max()), 1)
    for k in (S.PROMPT_IDS, S.PROMPT_MASK):
        out[k] = out[k][:, -p:]
    for k in S.PER_TOKEN_COLUMNS:
        if k in out:
            out[k] = out[k][:, :r]
    return out


def scatter_rows(parts: list[tuple[torch.Tensor, torch.Tensor]], num_rows: int, width: int) -> torch.Tensor:
    """[rows_i, w_i] values back into one [num_rows, width] tensor (0 where not written)."""
    ref = parts[0][1]
    out = ref.new_zeros((num_rows, width))
    for rows, values in parts:
        out[rows.to(out.device), : values.shape[1]] = values
    return out
