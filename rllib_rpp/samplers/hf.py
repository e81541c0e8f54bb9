"""Transformers sampler: one batched `generate` call for all prompts x samples (CPU default)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from transformers import GenerationConfig

from envs.models import load_causal_lm
from rllib_rpp.samplers.base import Generation, Sampler, SamplingParams


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, P] ids and attention mask, prompts aligned to the right (left padding)."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.as_tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask


class TransformersSampler(Sampler):
    def __init__(self, model: str, *, eos_token_id: int, pad_token_id: int, dtype: str = "float32",
                 device: str = "cpu", batch_size: int | None = None):
        self.model = load_causal_lm(model, dtype=dtype).to(device).eval()
        self.device, self.batch_size = device, batch_size
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Generation:
        rows = [p for p in prompts for _ in range(params.n)]
        step = self.batch_size or len(rows)
        out = Generation([], [], [])
        for i in range(0, len(rows), step):
            part = self._generate(rows[i : i + step], params)
            out.token_ids += part.token_ids
            out.logprobs += part.logprobs
            out.finished += part.finished
        return out

    def _generate(self, rows, params: SamplingParams) -> Generation:
        ids, mask = left_pad(rows, self.pad_token_id)
        cfg = GenerationConfig(
            do_sample=not params.greedy, temperature=params.temperature, top_p=params.top_p, top_k=0,
            max_new_tokens=params.max_new_tokens, eos_token_id=self.eos_token_id,
            min_new_tokens=params.max_new_tokens if params.ignore_eos else None,
            pad_token_id=self.pad_token_id, return_dict_in_generate=True, output_scores=not params.greedy,
        )
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  generation_config=cfg)
        seqs = out.sequences[:, ids.shape[1] :].cpu()
        is_eos = seqs == self.eos_token_id
        finished = is_eos.any(-1)
        full = torch.full_like(finished, seqs.shape[1], dtype=torch.long)
        lengths = torch.where(finished, is_eos.int().argmax(-1) + 1, full)
        if params.greedy:
            logprobs = torch.zeros(seqs.shape)
        else:  # scores are the processed (temperature / top-p) logits the token was drawn from
            scores = torch.stack(out.scores, dim=1).float().cpu()
            logprobs = scores.gather(-1, seqs.unsqueeze(-1)).squeeze(-1) - scores.logsumexp(-1)
        n = lengths.tolist()
        return Generation(
            token_ids=[s[:k] for s, k in zip(seqs.tolist(), n)],
            logprobs=[] if params.greedy else [lp[:k] for lp, k in zip(logprobs.tolist(), n)],
            finished=finished.tolist(),
        )

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        self.model.load_state_dict(state_dict, strict=True)
        self.weights_version = version
