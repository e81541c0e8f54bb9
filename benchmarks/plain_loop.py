"""The floor: a minimal plain-PyTorch REINFORCE++ loop, no Ray, no framework.

Same work per iteration as the tiny example: one batched `generate` (prompts x samples), the
exact-match reward, the π_old and π_ref log-prob passes, advantages (k1 KL in the reward, global
whitening) and PPO-clip updates over `minibatches` mini-batches. Uses the package's pure math,
log-prob function and sampler, nothing of RLlib. `task="smollm2"`: the real shape instead (the
`smollm2` preset's model, reasoning-gym prompts through the chat template, its verifier as the
reward); `old_logprobs="sampler"`: π_old from the sampler, as the package's default takes it
there (no π_old pass); `dtype`: the compute dtype (bf16 autocast over fp32 weights, bf16 sampler);
`with_ray`: an idle Ray cluster up in the same process (a control for the package's runs).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time

import torch

from envs.tasks.arithmetic import arithmetic_prompts
from rllib_rpp import functional as F
from rllib_rpp.core.logprobs import response_logprobs
from rllib_rpp.samplers.base import SamplingParams
from rllib_rpp.samplers.hf import TransformersSampler, left_pad
from rllib_rpp.schema import TOKEN_COLUMNS
from rpp_hub.models import load_causal_lm, load_tokenizer


def cols(*columns):
    return dict(zip(TOKEN_COLUMNS, columns))


class PlainLoop:
    def __init__(self, *, num_prompts: int, samples_per_prompt: int, max_new_tokens: int, minibatches: int,
                 lr: float, kl_coef: float, model: str = "tiny-arith", seed: int = 0, ignore_eos: bool = False,
                 task: str = "arithmetic", old_logprobs: str = "recompute", dtype: str = "float32", **_):
        torch.manual_seed(seed)
        if task == "smollm2":
            from envs.prompts import encode_prompts, load_prompt_rows
            from rllib_rpp.app.presets import smollm2

            config = smollm2()
            model = config.model_config["model"]
            self.rows = load_prompt_rows(config.env_config["prompts"])
            self.tok = load_tokenizer(model)
            self.ids = [list(r.input_ids) for r in encode_prompts(self.rows, self.tok)]
        else:
            self.tok = load_tokenizer(model)
            self.rows = arithmetic_prompts("train")
            self.ids = [self.tok(r["prompt"])["input_ids"] for r in self.rows]
        self.task, self.old_from_sampler = task, old_logprobs == "sampler"
        self.autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16"
                         else contextlib.nullcontext())
        self.sampler = TransformersSampler(model, eos_token_id=self.tok.eos_token_id,
                                           pad_token_id=self.tok.pad_token_id, dtype=dtype)
        # fp32: one copy, the sampler generates with the trained weights; bf16: a bf16 copy, refreshed per step.
        self.policy = self.sampler.model if dtype == "float32" else load_causal_lm(model)
        self.ref = load_causal_lm(model).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=lr)
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
        texts = self.tok.batch_decode(gen.token_ids, skip_special_tokens=True)
        if self.task == "smollm2":
            from envs.tasks.reasoning_gym import verify

            rewards = torch.tensor(verify(texts, [self.rows[i]["task_entry"] for i in idx for _ in range(self.n)]))
        else:
            answers = [self.rows[i]["answer"] for i in idx for _ in range(self.n)]
            rewards = torch.tensor([float(t.strip() == a) for t, a in zip(texts, answers)])
        t2 = time.perf_counter()
        p_ids, p_mask = left_pad([self.ids[i] for i in idx for _ in range(self.n)], self.tok.pad_token_id)
        width = max(map(len, gen.token_ids))
        r_ids = torch.full((len(gen.token_ids), width), self.tok.pad_token_id)
        mask, sampled = torch.zeros(len(gen.token_ids), width), torch.zeros(len(gen.token_ids), width)
        for i, (t, lp) in enumerate(zip(gen.token_ids, gen.logprobs)):
            r_ids[i, : len(t)] = torch.tensor(t)
            mask[i, : len(t)] = 1
            sampled[i, : len(t)] = torch.tensor(lp)
        with torch.no_grad(), self.autocast:
            old = sampled if self.old_from_sampler else response_logprobs(self.policy, cols(p_ids, p_mask, r_ids,
                                                                                              mask))[0]
            ref, _ = response_logprobs(self.ref, cols(p_ids, p_mask, r_ids, mask))
        adv = F.compute_advantages(rewards, old, ref, mask, kl_coef=self.kl_coef).advantages
        t3 = time.perf_counter()
        self.policy.train()
        groups = torch.randperm(self.k)  # whole prompts per mini-batch, as the package's first epoch
        for part in (groups[:, None] * self.n + torch.arange(self.n)).flatten().chunk(self.mb):
            with self.autocast:
                lp, _ = response_logprobs(self.policy, cols(p_ids[part], p_mask[part], r_ids[part], mask[part]))
            loss = F.clipped_policy_loss(lp, old[part], adv[part], mask[part]).loss
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            self.opt.step()
        if self.policy is not self.sampler.model:  # the bf16 sampler gets the new weights
            self.sampler.load_weights({k: v.to(torch.bfloat16) for k, v in self.policy.state_dict().items()}, 0)
        t4 = time.perf_counter()
        for key, dt in zip(self.timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            self.timings[key] += dt
        return len(rewards), int(mask.sum())


def measure(args: dict) -> dict:
    if args.get("with_ray"):  # a control: the same loop with an idle Ray cluster up in this process
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
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
