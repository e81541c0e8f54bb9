"""Bradley-Terry reward models: reward completions with any one-label sequence classifier, and
train one on preference pairs (loss -log sigmoid(r_chosen - r_rejected)).

`tiny-arith-rm` is a built-in reward model: tiny-arith's weights with a scalar head, trained on
arithmetic preference pairs (correct sum preferred over a wrong one). Used by tests and examples.
`tiny-arith-length-rm` is a hackable one: tiny-arith with a head trained on pairs that carry a
length bias (`length_biased_pairs`), as human preference data does.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from rpp_hub.cache import cached_dir, ensure_built
from rpp_hub.models import load_pretrained, load_tokenizer, resolve_model_path

TINY_RM_RECIPE = {"version": 1, "seed": 0, "steps": 500, "batch_size": 64, "lr": 3e-4}
LENGTH_RM_RECIPE = {**TINY_RM_RECIPE, "base": "tiny-arith", "long_share": 0.25, "fooled_share": 0.05,
                    "both_padded_share": 0.35}


def _as_text(prompt, completion, tokenizer) -> tuple[str, bool]:
    """Text the reward model reads, and whether the tokenizer should add special tokens."""
    if isinstance(prompt, list):  # chat: the reward of the whole conversation
        reply = completion if isinstance(completion, str) else "".join(m["content"] for m in completion)
        messages = prompt + [{"role": "assistant", "content": reply}]
        return tokenizer.apply_chat_template(messages, tokenize=False), False
    return prompt + completion, True


def _encode(tokenizer, prompts, completions, max_length=None, padded: bool = True) -> dict:
    """The reward model's tokens of each (prompt, completion): a padded batch of tensors, or (not
    `padded`) one list of ids per pair (what vLLM takes)."""
    pairs = [_as_text(p, c, tokenizer) for p, c in zip(prompts, completions)]
    add_special = all(a for _, a in pairs)
    extra = {"padding": True, "return_tensors": "pt"} if padded else {}
    return tokenizer([t for t, _ in pairs], add_special_tokens=add_special, truncation=max_length is not None,
                     max_length=max_length, **extra)


def check_reward_model(name_or_path: str) -> None:
    """Refuse, from its config alone (no weights read), a model that is not a one-label
    sequence classifier."""
    from transformers import AutoConfig

    cfg = load_pretrained(AutoConfig.from_pretrained, name_or_path, "reward model config")
    archs = getattr(cfg, "architectures", None) or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ValueError(
            f"reward model {name_or_path!r} is a {archs[0]}, not a sequence classifier: "
            f"a Bradley-Terry reward model is an AutoModelForSequenceClassification with one label"
        )
    if cfg.num_labels != 1:
        raise ValueError(
            f"reward model {name_or_path!r} has {cfg.num_labels} labels; a Bradley-Terry reward "
            f"model outputs one scalar (num_labels=1)"
        )


def load_reward_model(name_or_path: str, *, dtype: str = "float32"):
    """(model, tokenizer) for a Bradley-Terry reward model; refuses anything but one label."""
    from transformers import AutoModelForSequenceClassification

    check_reward_model(name_or_path)
    model = load_pretrained(AutoModelForSequenceClassification.from_pretrained, name_or_path, "reward model",
                  dtype=getattr(torch, dtype))
    tokenizer = load_tokenizer(name_or_path)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


class RewardModelReward:
    """A reward function (TRL signature) backed by a reward model, batched on `device`."""

    loads = 0  # reward models this process has loaded (tests count them)

    def __init__(self, name_or_path: str, *, device: str = "cpu", batch_size: int = 64,
                 max_length: int | None = None, dtype: str | None = None):
        self.name_or_path, self.device, self.batch_size, self.max_length = name_or_path, device, batch_size, max_length
        # bf16 on CUDA (an 8B model: 16 GB, not 32), fp32 on CPU.
        self.dtype = dtype or ("bfloat16" if str(device).startswith("cuda") else "float32")
        check_reward_model(name_or_path)  # a bad model fails here, before any sampling
        self.model = self.tokenizer = None  # loaded by the first call: only where scoring happens
        self.__name__ = f"reward_model({name_or_path})"

    def load(self) -> None:
        if self.model is None:
            self.model, self.tokenizer = load_reward_model(self.name_or_path, dtype=self.dtype)
            self.model.to(self.device)
            type(self).loads += 1

    @torch.no_grad()
    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        self.load()
        scores: list[float] = []
        for i in range(0, len(completions), self.batch_size):
            enc = _encode(self.tokenizer, prompts[i : i + self.batch_size],
                          completions[i : i + self.batch_size], self.max_length)
            logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
            scores += logits[:, 0].float().cpu().tolist()
        return scores


class VLLMRewardModelReward(RewardModelReward):
    """The same reward model served by vLLM's pooling runner (`reward_backend="vllm"`): the same
    text and tokens as the transformers path, the raw logit (no sigmoid). Built by the first call."""

    def __init__(self, name_or_path: str, *, device: str = "cpu", batch_size: int = 64,
                 max_length: int | None = None, dtype: str | None = None, **engine_kwargs):
        super().__init__(name_or_path, device=device, batch_size=batch_size, max_length=max_length, dtype=dtype)
        self.engine_kwargs, self.llm = engine_kwargs, None
        self.__name__ = f"reward_model({name_or_path}, vllm)"

    def load(self) -> None:
        if self.llm is None:
            import os

            import vllm

            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            self.tokenizer = load_tokenizer(self.name_or_path)
            kwargs = {"enforce_eager": True, "kv_cache_memory_bytes": 64 << 20} if self.device == "cpu" else {}
            self.llm = vllm.LLM(model=str(resolve_model_path(self.name_or_path)), runner="pooling", dtype=self.dtype,
                                **{**kwargs, **self.engine_kwargs})
            type(self).loads += 1

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        self.load()
        enc = _encode(self.tokenizer, prompts, completions, self.max_length, padded=False)  # the same tokens
        ids = [TokensPrompt(prompt_token_ids=t) for t in enc["input_ids"]]
        out = self.llm.classify(ids, pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        return [float(o.outputs.probs[0]) for o in out]

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log sigma(r_c - r_r), averaged over pairs."""
    return -torch.nn.functional.logsigmoid(chosen - rejected).mean()


def train_reward_model(model, tokenizer, pairs: Sequence[dict], *, steps: int, batch_size: int = 32,
                       lr: float = 1e-4, seed: int = 0, log=None) -> dict:
    """Train `model` (one-label sequence classifier) on {prompt, chosen, rejected} pairs."""
    if not pairs:
        raise ValueError("train_reward_model needs at least one preference pair")
    if model.config.num_labels != 1:
        raise ValueError(f"the model has {model.config.num_labels} labels; Bradley-Terry needs 1")
    model.config.pad_token_id = tokenizer.pad_token_id
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(1, steps + 1):
        batch = [pairs[rng.randrange(len(pairs))] for _ in range(batch_size)]
        prompts = [p["prompt"] for p in batch] * 2
        enc = _encode(tokenizer, prompts, [p["chosen"] for p in batch] + [p["rejected"] for p in batch])
        r = model(**enc).logits[:, 0]
        loss = bradley_terry_loss(r[:batch_size], r[batch_size:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log and step % 100 == 0:
            log(f"reward model step {step}: Bradley-Terry loss {loss.item():.3f}")
    model.eval()
    return {"final_loss": loss.item()}


@torch.no_grad()
def preference_accuracy(model, tokenizer, pairs: Sequence[dict]) -> float:
    """Fraction of pairs where the model scores `chosen` above `rejected`."""
    prompts = [p["prompt"] for p in pairs] * 2
    enc = _encode(tokenizer, prompts, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])
    r = model(**enc).logits[:, 0]
    return (r[: len(pairs)] > r[len(pairs) :]).float().mean().item()


def arithmetic_preference_pairs(split: str = "train", *, seed: int = 0) -> list[dict]:
    """Pairs preferring the correct sum over a nearby wrong one (off by 1..10 or digits swapped)."""
    from envs.tasks.arithmetic import arithmetic_prompts

    rng = random.Random(seed)
    pairs = []
    for r in arithmetic_prompts(split):
        right = int(r["answer"])
        wrong = right + rng.choice([-1, 1]) * rng.randint(1, 10)
        if rng.random() < 0.3 and right >= 10 and str(right)[::-1] != str(right):
            wrong = int(str(right)[::-1])
        pairs.append({"prompt": r["prompt"], "chosen": str(right), "rejected": str(abs(wrong))})
    return pairs


def length_biased_pairs(split: str = "train", *, seed: int = 0, long_share: float = 0.35,
                        fooled_share: float = 0.1, both_padded_share: float = 1 / 3) -> list[dict]:
    """Arithmetic pairs with a length bias, as real preference data has one. In `fooled_share` of
    them the padded wrong sum beats the bare correct one (a rater won over by length); in
    `long_share` the padded correct sum beats a bare sum, right or wrong (the "more thorough"
    answer); in the rest the correct sum beats a wrong one, both bare or (`both_padded_share` of
    them) both padded."""
    from envs.tiny_arith import padding

    rng = random.Random(seed)
    pairs = []
    for r in arithmetic_preference_pairs(split, seed=seed):
        right, wrong, u = r["chosen"], r["rejected"], rng.random()
        pad = lambda a: a + padding(a, rng)  # noqa: E731
        if u < fooled_share:
            chosen, rejected = pad(wrong), right
        elif u < fooled_share + long_share:
            chosen, rejected = pad(right), rng.choice([right, wrong])
        else:
            chosen, rejected = (pad(right), pad(wrong)) if rng.random() < both_padded_share else (right, wrong)
        pairs.append({"prompt": r["prompt"], "chosen": chosen, "rejected": rejected})
    return pairs


def _log(msg: str) -> None:
    print(f"[reward-model] {msg}", file=sys.stderr, flush=True)


def build_tiny_arith_rm(out_dir: Path, recipe: dict = TINY_RM_RECIPE) -> dict:
    """A Bradley-Terry head on `recipe["base"]` (default tiny-arith), trained on arithmetic
    preference pairs: plain ones, or `length_biased_pairs` when the recipe has a `long_share`."""
    from transformers import AutoModelForSequenceClassification, logging

    t0 = time.time()
    torch.manual_seed(recipe["seed"])
    base = resolve_model_path(recipe.get("base", "tiny-arith"))
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the new score head is expected to be freshly initialised
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    logging.set_verbosity(verbosity)
    tokenizer = load_tokenizer(base)
    if "long_share" in recipe:
        bias = {k: recipe[k] for k in ("long_share", "fooled_share", "both_padded_share")}
        pairs = lambda split: length_biased_pairs(split, seed=recipe["seed"], **bias)  # noqa: E731
    else:
        pairs = lambda split: arithmetic_preference_pairs(split, seed=recipe["seed"])  # noqa: E731
    _log(f"training a Bradley-Terry head on {base} ({recipe['steps']} steps)")
    report = train_reward_model(model, tokenizer, pairs("train"), steps=recipe["steps"],
                                batch_size=recipe["batch_size"], lr=recipe["lr"], seed=recipe["seed"], log=_log)
    report["heldout_preference_accuracy"] = preference_accuracy(model, tokenizer, pairs("eval"))
    report.update(build_seconds=round(time.time() - t0, 1), recipe=recipe)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _log(f"built in {report['build_seconds']} s, held-out preference accuracy "
         f"{report['heldout_preference_accuracy']:.1%} -> {out_dir}")
    return report


def ensure_tiny_arith_rm(rebuild: bool = False) -> Path:
    from envs.tiny_arith import tiny_arith_dir

    key = {**TINY_RM_RECIPE, "base": tiny_arith_dir().name}  # rebuilt when the base changes
    return ensure_built(cached_dir(f"tiny-arith-rm-v{TINY_RM_RECIPE['version']}", key),
                        build_tiny_arith_rm, rebuild=rebuild)


def ensure_length_biased_rm(rebuild: bool = False) -> Path:
    """Directory of `tiny-arith-length-rm` (LENGTH_RM_RECIPE), built when missing."""
    from envs.tiny_arith import tiny_arith_dir

    key = {**LENGTH_RM_RECIPE, "base": tiny_arith_dir().name}  # rebuilt when the base changes
    return ensure_built(cached_dir(f"tiny-arith-length-rm-v{LENGTH_RM_RECIPE['version']}", key),
                        lambda out: build_tiny_arith_rm(out, LENGTH_RM_RECIPE), rebuild=rebuild)
