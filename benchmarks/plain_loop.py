"""The floor: a minimal plain-PyTorch REINFORCE++ loop, no Ray, no framework.

Same work per iteration as the tiny example: one batched `generate` (prompts x samples), the
exact-match reward, the π_old and π_ref log-prob passes, advantages (k1 KL in the reward, global
whitening) and PPO-clip updates over `minibatches` mini-batches. Uses the package's pure math
and log-prob function, nothing of RLlib.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from envs.models import load_causal_lm, load_tokenizer
from envs.tasks.arithmetic import arithmetic_prompts
from rllib_rpp import functional as F
from rllib_rpp.core.logprobs import response_logprobs
from rllib_rpp.samplers.base import SamplingParams
from rllib_rpp.samplers.hf import TransformersSampler, left_pad
from rllib_rpp.schema import TOKEN_COLUMNS


def cols(*columns):
    return dict(zip(TOKEN_COLUMNS, columns))


class PlainLoop:
    def __init__(self, *, num_prompts: int, samples_per_prompt: int, max_new_tokens: int, minibatches: int,
                 lr: float, kl_coef: float, model: str = "tiny-arith", seed: int = 0, ignore_eos: bool = False,
                 **_):
        torch.manual_seed(seed)
        self.tok = load_tokenizer(model)
        self.sampler = TransformersSampler(model, eos_token_id=self.tok.eos_token_id,
                                           pad_token_id=self.tok.pad_token_id)
        self.policy = self.sampler.model  # one copy: the sampler generates with the trained weights
        self.ref = load_causal_lm(model).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.rows = arithmetic_prompts("train")
        self.ids = [self.tok(r["prompt"])["input_ids"] for r in self.rows]
        self.k, self.n, self.mb, self.kl_coef = num_prompts, samples_per_prompt, minibatches, kl_coef
        self.params = SamplingParams(n=samples_per_prompt, max_new_tokens=max_new_tokens, ignore_eos=ignore_eos)
        self.cursor = 0
        self.timings = {"generate": 0.0, "reward": 0.0, "logprobs": 0.0, "update": 0.0}

    def step(self) -> int:
        t0 = time.perf_counter()
        idx = [(self.cursor + i) % len(self.rows) for i in range(self.k)]
        self.cursor += self.k
        self.policy.eval()
        gen = self.sampler.generate([self.ids[i] for i in idx], self.params)
        t1 = time.perf_counter()
        answers = [self.rows[i]["answer"] for i in idx for _ in range(self.n)]
        texts = self.tok.batch_decode(gen.token_ids, skip_special_tokens=True)
        rewards = torch.tensor([float(t.strip() == a) for t, a in zip(texts, answers)])
        t2 = time.perf_counter()
        p_ids, p_mask = left_pad([self.ids[i] for i in idx for _ in range(self.n)], self.tok.pad_token_id)
        width = max(map(len, gen.token_ids))
        r_ids = torch.full((len(gen.token_ids), width), self.tok.pad_token_id)
        mask = torch.zeros(len(gen.token_ids), width)
        for i, t in enumerate(gen.token_ids):
            r_ids[i, : len(t)] = torch.tensor(t)
            mask[i, : len(t)] = 1
        with torch.no_grad():
            old, _ = response_logprobs(self.policy, cols(p_ids, p_mask, r_ids, mask))
            ref, _ = response_logprobs(self.ref, cols(p_ids, p_mask, r_ids, mask))
        adv = F.compute_advantages(rewards, old, ref, mask, kl_coef=self.kl_coef).advantages
        t3 = time.perf_counter()
        self.policy.train()
        for part in torch.randperm(len(rewards)).chunk(self.mb):
            lp, _ = response_logprobs(self.policy, cols(p_ids[part], p_mask[part], r_ids[part], mask[part]))
            loss = F.clipped_policy_loss(lp, old[part], adv[part], mask[part]).loss
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            self.opt.step()
        t4 = time.perf_counter()
        for key, dt in zip(self.timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            self.timings[key] += dt
        return len(rewards), int(mask.sum())


def measure(args: dict) -> dict:
    loop = PlainLoop(**args)
    for _ in range(args.get("warmup", 3)):
        loop.step()
    loop.timings = dict.fromkeys(loop.timings, 0.0)
    completions = tokens = 0
    t = time.perf_counter()
    for _ in range(args["iterations"]):
        c, n = loop.step()
        completions, tokens = completions + c, tokens + n
    dt = time.perf_counter() - t
    return {"seconds": dt, "completions_per_s": completions / dt, "tokens_per_s": tokens / dt,
            "timings": {k: v / args["iterations"] for k, v in loop.timings.items()}}


if __name__ == "__main__":
    print("RESULT " + json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
