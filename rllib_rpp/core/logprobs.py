"""log π(a_t | s_t) of response tokens, from hidden states through the output layer in chunks.

Input rows are [left-padded prompt | right-padded response]. Position ids count real tokens only,
so a padded row gives the log-probs of the unpadded sequence. The output layer (V columns) runs on
at most `chunk_tokens` valid response tokens at a time, so the [tokens, V] logits never exist for
more than a chunk. With gradients on, each chunk is checkpointed: its logits are recomputed in
backward instead of stored (peak O(chunk x V)).

Rows that share a prompt (a group's samples) share its computation: the backbone runs once over
each distinct prompt, its KV cache is repeated for the rows that have it, and the responses run
on top (gradients flow through the shared prompt's keys and values). The numbers are those of
one forward over [prompt | response] up to float rounding; with n samples per prompt and prompts
longer than responses this is up to n times less work. Layers checkpointed by transformers drop
the cache, so gradient checkpointing keeps the one-pass forward.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from rllib_rpp import schema as S

DEFAULT_CHUNK_TOKENS = 1024


def trim_batch(batch: dict) -> dict:
    """The four token columns without all-padding columns (prompts left-, responses right-padded).
    Lengths are counted, never summed in the masks' dtype: FSDP's mixed precision hands the forward
    a bf16 mask, whose sum rounds lengths above 256."""
    p = max(int((batch[S.PROMPT_MASK] > 0).sum(-1).max()), 1) if batch[S.PROMPT_MASK].numel() else 1
    r = max(int((batch[S.RESPONSE_MASK] > 0).sum(-1).max()), 1) if batch[S.RESPONSE_MASK].numel() else 1
    return {S.PROMPT_IDS: batch[S.PROMPT_IDS][:, -p:], S.PROMPT_MASK: batch[S.PROMPT_MASK][:, -p:],
            S.RESPONSE_IDS: batch[S.RESPONSE_IDS][:, :r], S.RESPONSE_MASK: batch[S.RESPONSE_MASK][:, :r]}


def distinct_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row of the first occurrence of each distinct prompt [U], which distinct prompt each row has [B])."""
    key = prompt_ids.masked_fill(prompt_mask == 0, -1)  # left-padded to one width: equal rows = equal prompts
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    rows = torch.arange(len(inverse), device=inverse.device)
    first = torch.full((int(inverse.max()) + 1 if len(inverse) else 0,), len(inverse), device=inverse.device,
                       dtype=torch.long).scatter_reduce(0, inverse, rows, reduce="amin")
    return first, inverse


def _hidden_with_shared_prompts(backbone, prompt_ids, prompt_mask, response_ids, response_mask, distinct, inverse):
    """[B, R, H] hidden states that predict each response token: the backbone over each distinct
    prompt once ([U, P]), its cache repeated to the rows ([B, ...]), then over the responses."""
    p_mask = prompt_mask[distinct]
    p_pos = (p_mask.cumsum(-1) - 1).clamp(min=0)
    prompt_out = backbone(input_ids=prompt_ids[distinct], attention_mask=p_mask, position_ids=p_pos, use_cache=True)
    cache = prompt_out.past_key_values
    cache.batch_select_indices(inverse)  # [U, ...] -> [B, ...]: an index, so gradients reach the prompt
    R = response_ids.shape[1]
    r_pos = p_pos[inverse, -1:] + 1 + torch.arange(R, device=response_ids.device)  # after each row's prompt
    attn = torch.cat([prompt_mask, response_mask.long()], dim=1)
    out = backbone(input_ids=response_ids, attention_mask=attn, position_ids=r_pos, past_key_values=cache,
                   use_cache=True).last_hidden_state
    # The last prompt token (the prompt pass) and each response token but the last predict the response.
    return torch.cat([prompt_out.last_hidden_state[inverse, -1:], out[:, :-1]], dim=1)


def causal_lm_model(lm):
    """The transformers model inside a peft wrapper (or `lm` itself)."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def causal_lm_parts(lm):
    """(backbone, output layer, logit post-processing) of a Hugging Face causal LM (or a peft
    wrapper of one): logits = post(head(backbone(...).last_hidden_state))."""
    model = causal_lm_model(lm)
    cfg = model.config
    softcap = getattr(cfg, "final_logit_softcapping", None)
    scale = getattr(cfg, "logit_scale", None)

    def post(logits):
        if scale is not None:
            logits = logits * scale
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    return model.base_model, model.get_output_embeddings(), post


def _chunk_logprobs(hidden, targets, weight, bias, temperature, with_entropy, post):
    """[n, H] hidden states -> log-prob of each target [n] (and entropy [n]), logits in fp32."""
    logits = torch.nn.functional.linear(hidden, weight, bias)
    logits = post(logits)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature  # [n, V], >= fp32
    logz = logits.logsumexp(-1)
    logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logz
    if not with_entropy:
        return logprobs, None
    entropy = logz - (torch.softmax(logits, -1) * logits).sum(-1)  # H = logZ - Σ p·z
    return logprobs, entropy


def response_logprobs(lm, batch: dict, *, temperature: float = 1.0, with_entropy: bool = False,
                      chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(a_t | s_t) [B, R] (0 at padding) and optionally the entropy [B, R] of π(·|s_t).

    R is the batch's response width (the output is padded back to it). Exact temperature:
    log-softmax of logits / temperature, in fp32."""
    width = batch[S.RESPONSE_IDS].shape[1]
    t = trim_batch(batch)
    prompt_ids, prompt_mask, response_ids, response_mask = (t[k] for k in S.TOKEN_COLUMNS)
    R = response_ids.shape[1]
    backbone, head, post = causal_lm_parts(lm)
    distinct, inverse = distinct_prompts(prompt_ids, prompt_mask)
    if len(distinct) < len(inverse) and not getattr(causal_lm_model(lm), "is_gradient_checkpointing", False):
        hidden = _hidden_with_shared_prompts(backbone, prompt_ids, prompt_mask, response_ids, response_mask,
                                             distinct, inverse)
    else:
        ids = torch.cat([prompt_ids, response_ids], dim=1)
        attn = torch.cat([prompt_mask, response_mask.long()], dim=1)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        hidden = backbone(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).last_hidden_state
        # The last prompt token and each response token but the last predict the response: [B, R, H].
        hidden = hidden[:, -R - 1 : -1]
    valid = response_mask > 0
    h, targets = hidden[valid], response_ids[valid]  # [N, H], [N]
    lp_parts, ent_parts = [], []
    for i in range(0, h.shape[0], chunk_tokens):
        args = (h[i : i + chunk_tokens], targets[i : i + chunk_tokens], head.weight, head.bias, temperature,
                with_entropy, post)
        if torch.is_grad_enabled():
            lp, ent = checkpoint(_chunk_logprobs, *args, use_reentrant=False)
        else:
            lp, ent = _chunk_logprobs(*args)
        lp_parts.append(lp)
        ent_parts.append(ent)
    logprobs = _unflatten(lp_parts, valid, width)
    if not lp_parts and torch.is_grad_enabled():
        # No response token here (e.g. every row masked): stay connected to every weight, so a
        # backward (which DDP/FSDP learners must all run) gives zero gradients, not an error.
        logprobs = logprobs + 0.0 * (hidden.sum() + head.weight.sum())
    return logprobs, (_unflatten(ent_parts, valid, width) if with_entropy else None)


def _unflatten(parts: list[torch.Tensor], valid: torch.Tensor, width: int) -> torch.Tensor:
    """Per-token values [N] back to [B, width], 0 at padding (differentiable)."""
    values = torch.cat(parts) if parts else torch.zeros(0, device=valid.device)
    out = torch.zeros(valid.shape, dtype=values.dtype, device=valid.device).masked_scatter(valid, values)
    return torch.nn.functional.pad(out, (0, width - valid.shape[1]))


class LogprobModule(torch.nn.Module):
    """A causal LM behind a module call: forward(micro-batch) -> {"logprobs", "entropy"}. Lets a
    sharded reference model be entered through its root (FSDP gathers weights in the call)."""

    def __init__(self, lm, *, temperature: float = 1.0, chunk_tokens: int = DEFAULT_CHUNK_TOKENS):
        super().__init__()
        self.lm, self.temperature, self.chunk_tokens = lm, temperature, chunk_tokens

    def forward(self, batch: dict, with_entropy: bool = False) -> dict:
        lp, ent = response_logprobs(self.lm, batch, temperature=self.temperature, with_entropy=with_entropy,
                                    chunk_tokens=self.chunk_tokens)
        return {"logprobs": lp, "entropy": ent}
