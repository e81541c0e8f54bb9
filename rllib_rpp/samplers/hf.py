"""Transformers sampler: all prompts x samples decoded together with the model's KV cache (CPU
default). Its own decode loop keeps, per step, only the sampled token and its log-prob under the
processed distribution (temperature, top-p): never the [B, T, V] scores `generate` would stack."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from rllib_rpp.samplers.base import Generation, Sampler, SamplingParams
from rpp_hub.models import load_causal_lm


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, P] ids and attention mask, prompts aligned to the right (left padding)."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.as_tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask


def sample_tokens(logits: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token [B] and its log-prob [B] under the processed distribution: log-softmax of
    logits / temperature, restricted to the top-p nucleus (greedy: argmax, log-prob 0)."""
    if params.greedy:
        return logits.argmax(-1), torch.zeros(logits.shape[0], device=logits.device)
    logits = logits.float() / params.temperature
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the mass before it already reaches top_p (the first token always stays).
        drop = (probs.cumsum(-1) - probs) >= params.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    logp = logits.log_softmax(-1)
    token = torch.multinomial(logp.exp(), 1).squeeze(-1)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)


class TransformersSampler(Sampler):
    runs_learner_code = True  # the learner's transformers model: in fp32 its log-probs are the learner's

    def __init__(self, model: str, *, eos_token_id: int, pad_token_id: int, dtype: str = "float32",
                 device: str = "cpu", batch_size: int | None = None):
        self.model = load_causal_lm(model, dtype=dtype).to(device).eval()
        self.device, self.batch_size = device, batch_size
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Generation:
        if params.seed is None:
            return self._generate_all(prompts, params)
        # A seeded call draws from a generator of its own: the caller's stream is left as it was.
        cuda = [self.device] if str(self.device).startswith("cuda") else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(params.seed)
            return self._generate_all(prompts, params)

    def _generate_all(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Generation:
        step = max(1, (self.batch_size or len(prompts) * params.n) // params.n)  # prompts per decode batch
        out = Generation([], [], [])
        for i in range(0, len(prompts), step):
            part = self._generate(prompts[i : i + step], params)
            out.token_ids += part.token_ids
            out.logprobs += part.logprobs
            out.finished += part.finished
        return out

    def _generate(self, prompts, params: SamplingParams) -> Generation:
        """params.n samples of each prompt, rows in prompt order; each prompt is prefilled once and its
        KV cache repeated for its n rows (the numbers of n prefills, n times less work)."""
        ids, mask = (t.to(self.device) for t in left_pad(prompts, self.pad_token_id))
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[:, -1]
        if params.n > 1:
            cache.batch_repeat_interleave(params.n)
            logits, mask, pos = (x.repeat_interleave(params.n, dim=0) for x in (logits, mask, pos))
        B, T, next_pos = logits.shape[0], params.max_new_tokens, pos[:, -1:] + 1
        seqs = torch.full((B, T), self.pad_token_id, dtype=torch.long, device=self.device)
        lps = torch.zeros(B, T, device=self.device)
        live = torch.arange(B, device=self.device)  # the rows still in the decode batch
        ended = torch.zeros(B, dtype=torch.bool, device=self.device)  # of those rows
        for t in range(T):
            if params.ignore_eos:  # as generate's min_new_tokens: EOS is never drawn
                logits[:, self.eos_token_id] = float("-inf")
            token, logprob = sample_tokens(logits, params)
            token = token.masked_fill(ended, self.pad_token_id)
            seqs[live, t], lps[live, t] = token, logprob
            ended |= token == self.eos_token_id
            if ended.all() or t == T - 1:
                break
            if 4 * int(ended.sum()) >= len(live) and hasattr(cache, "batch_select_indices"):
                # A quarter of the batch is done: stop computing those rows (as vLLM does).
                keep = (~ended).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                live, mask, next_pos, token, ended = live[keep], mask[keep], next_pos[keep], token[keep], ended[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            logits = self.model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos,
                                past_key_values=cache, use_cache=True).logits[:, -1]
            next_pos = next_pos + 1
        seqs, lps = seqs[:, : t + 1].cpu(), lps[:, : t + 1].cpu()
        is_eos = seqs == self.eos_token_id
        done = is_eos.any(-1)
        full = torch.full_like(done, seqs.shape[1], dtype=torch.long)
        lengths = torch.where(done, is_eos.int().argmax(-1) + 1, full)
        n = lengths.tolist()
        return Generation(
            token_ids=[s[:k] for s, k in zip(seqs.tolist(), n)],
            logprobs=[] if params.greedy else [lp[:k] for lp, k in zip(lps.tolist(), n)],
            finished=done.tolist(),
        )

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        self.model.load_state_dict(state_dict, strict=True)
        self.weights_version = version
