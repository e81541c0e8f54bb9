"""Learner memory per device, estimated from the model's shape and the batch options (no Ray,
no weights loaded). Used by `ReinforcePPConfig.validate()` to warn before an obvious
out-of-memory, printed by `rllib-rpp train`, and checked against peak memory measured on CPU
(`tests/test_memory.py`, `benchmarks/memory.py`).

Parts, in bytes:
- weights: master weights (param_dtype); gradients and Adam's two moments of the trainable
  parameters (same dtype); the reference model (ref_dtype; none with LoRA); the autocast
  copies of the weights in the compute dtype (held during a forward/backward);
- activations of one micro-batch of T tokens, per layer and token about (8·h + 3·kv + 4·I) values
  in the compute dtype (norm inputs and outputs, q/k/v before and after rotary, attention
  output, the MLP's gate, activation, up and product) without checkpointing; with checkpointing
  the layer inputs (h values per layer and token) plus one layer recomputed in backward and its
  gradients. Attention is assumed memory-efficient (flash/SDPA kernels store no [T, T] attention probabilities);
- log-prob chunk: the [chunk, V] logits and four fp32 [chunk, V] buffers (upcast, scaled,
  exp for the log-sum-exp, and in backward the recomputed logits' softmax and gradient).
Everything sharded (FSDP) is divided by the number of shards. An estimate: good to ~±30 %.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

logger = logging.getLogger(__name__)
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GiB = 1 << 30


@dataclass(frozen=True)
class ModelShape:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    tie_word_embeddings: bool = False

    @classmethod
    def from_hf_config(cls, cfg) -> ModelShape:
        """From a transformers config object or its dict."""
        get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
        heads = get("num_attention_heads")
        return cls(vocab_size=get("vocab_size"), hidden_size=get("hidden_size"),
                   intermediate_size=get("intermediate_size"), num_layers=get("num_hidden_layers"),
                   num_heads=heads, num_kv_heads=get("num_key_value_heads") or heads,
                   tie_word_embeddings=bool(get("tie_word_embeddings", False)))

    @property
    def kv_dim(self) -> int:
        return self.hidden_size // self.num_heads * self.num_kv_heads

    @property
    def num_params(self) -> int:
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        attention = h * h * 2 + 2 * h * self.kv_dim + 2 * self.kv_dim + h  # q, o, k, v (+ q/k/v biases)
        mlp = 3 * h * i
        per_layer = attention + mlp + 2 * h  # two norms
        embeddings = v * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embeddings + h


@dataclass(frozen=True)
class MemoryEstimate:
    master_weights: int
    gradients: int
    optimizer: int
    reference: int
    compute_copies: int
    activations: int
    logprob_chunk: int

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def gib(self) -> dict[str, float]:
        out = {k: round(v / GiB, 3) for k, v in asdict(self).items()}
        out["total"] = round(self.total / GiB, 3)
        return out


def activation_bytes(shape: ModelShape, tokens: int, *, compute_dtype: str = "bfloat16",
                     gradient_checkpointing: bool = False, attention_rows: int = 0) -> int:
    """Activations kept for backward by one micro-batch of `tokens` tokens. `attention_rows`: rows
    whose [heads, T, T] attention probabilities are stored (the math attention kernel, e.g. on
    CPU; 0 for flash / memory-efficient kernels)."""
    h, kv, i, n = shape.hidden_size, shape.kv_dim, shape.intermediate_size, shape.num_layers
    b = BYTES[compute_dtype]
    attention_probs = attention_rows * shape.num_heads * (tokens // max(attention_rows, 1)) ** 2 * b
    per_layer = tokens * (8 * h + 3 * kv + 4 * i) * b + attention_probs
    if gradient_checkpointing:
        return tokens * n * h * b + 2 * per_layer
    return n * per_layer


def logprob_chunk_bytes(shape: ModelShape, chunk_tokens: int, *, compute_dtype: str = "bfloat16") -> int:
    """The [chunk, V] logits (compute dtype), their fp32 copy, softmax and gradient."""
    return chunk_tokens * shape.vocab_size * (BYTES[compute_dtype] + 4 * 4)


def estimate_learner_memory(shape: ModelShape, *, tokens_per_microbatch: int, param_dtype: str = "float32",
                            compute_dtype: str = "bfloat16", ref_dtype: str | None = None,
                            gradient_checkpointing: bool = False, chunk_tokens: int = 1024,
                            trainable_params: int | None = None, shards: int = 1,
                            attention_rows: int = 0) -> MemoryEstimate:
    """Peak learner memory per device for one micro-batch step (see the module docstring).

    trainable_params: None trains every weight; with LoRA, the adapter size (the policy's
    base weights then serve as the reference: no second model)."""
    n = shape.num_params
    trainable = n if trainable_params is None else trainable_params
    lora = trainable_params is not None
    p = BYTES[param_dtype]
    ref_dtype = ref_dtype or compute_dtype
    base = n * (BYTES[compute_dtype] if lora else p)  # a LoRA base is kept in the compute dtype
    master = (base + (trainable * p if lora else 0)) // shards
    copies = n * BYTES[compute_dtype] // shards if (compute_dtype != param_dtype and not lora) else 0
    return MemoryEstimate(
        master_weights=master,
        gradients=trainable * p // shards,
        optimizer=2 * trainable * p // shards,
        reference=0 if lora else n * BYTES[ref_dtype] // shards,
        compute_copies=copies,
        activations=activation_bytes(shape, tokens_per_microbatch, compute_dtype=compute_dtype,
                                     gradient_checkpointing=gradient_checkpointing, attention_rows=attention_rows),
        logprob_chunk=logprob_chunk_bytes(shape, min(chunk_tokens, tokens_per_microbatch), compute_dtype=compute_dtype),
    )


def estimate_config_memory(config) -> MemoryEstimate | None:
    """The learner's memory per device for a ReinforcePPConfig (model config only, no weights);
    None when the model's config cannot be read (e.g. an id that is not in the local cache)."""
    from rpp_hub.models import model_config_of

    mc = config._model_config if isinstance(config._model_config, dict) else {}
    try:
        hf_config = model_config_of(mc.get("model"))
    except Exception as e:  # noqa: BLE001 - no estimate is a valid answer
        logger.debug("no memory estimate for %r: %s", mc.get("model"), e)
        return None
    lora = mc.get("lora")
    shape = ModelShape.from_hf_config(hf_config)
    trainable = None
    if lora:  # r·(in + out) per adapted matrix: every linear layer of every decoder layer
        h, i, kv = shape.hidden_size, shape.intermediate_size, shape.kv_dim
        trainable = shape.num_layers * lora["r"] * (2 * (h + h) + 2 * (h + kv) + 3 * (h + i))
    d = config.dtypes
    return estimate_learner_memory(
        shape, tokens_per_microbatch=config.max_tokens_per_microbatch, param_dtype=d["param"],
        compute_dtype=d["compute"], ref_dtype=d["ref"], chunk_tokens=config.logprob_chunk_tokens,
        gradient_checkpointing=bool(mc.get("gradient_checkpointing")), trainable_params=trainable,
        shards=config.num_learners if config.sharded else 1)


def gpu_memory_bytes(default: int = 80 << 30) -> int:
    """GPU 0's memory read through NVML, `default` without it. Not through torch.cuda: that would
    create a CUDA context (~0.5 GB) in the driver, on a GPU Ray has given to an actor."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).total)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML (CPU machine, no driver): the default
        return default


def memory_warning(config) -> str | None:
    """A warning when the estimate passes 90 % of the device (the GPU, or host memory on CPU)."""
    est = estimate_config_memory(config)
    if est is None:
        return None
    if config.num_gpus_per_learner:
        budget, where = gpu_memory_bytes(), "GPU"
    else:
        budget, where = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host"
    if est.total <= 0.9 * budget:
        return None
    return (f"the learner needs about {est.total / (1 << 30):.1f} GiB per {where} ({est.gib()}), more than 90 % of "
            f"the {budget / (1 << 30):.0f} GiB available: lower max_tokens_per_microbatch or logprob_chunk_tokens, "
            f"set model_config gradient_checkpointing=True, dtype='bfloat16', or use LoRA")


def reward_model_bytes(config) -> int:
    """The weights of the reward models in `env_config["reward_funcs"]` (read from their configs,
    no weights loaded), in the dtype they load in (`reward_dtype`; default bf16 on a GPU reward
    worker, fp32 elsewhere). Functions, built-in names, "module:function" paths and URLs are 0."""
    from envs.rewards import BUILTIN_REWARDS
    from rpp_hub.models import model_config_of

    on_gpu = bool(config.num_reward_workers and config.num_gpus_per_reward_worker)
    dtype = config.reward_dtype or ("bfloat16" if on_gpu else "float32")
    total = 0
    for spec in (config.env_config or {}).get("reward_funcs") or []:
        if not isinstance(spec, str) or spec in BUILTIN_REWARDS or ":" in spec:
            continue
        try:
            shape = ModelShape.from_hf_config(model_config_of(spec))
        except Exception as e:  # noqa: BLE001 - an unreadable config: no estimate for it
            logger.debug("no memory estimate for reward model %r: %s", spec, e)
            continue
        total += shape.num_params * BYTES[dtype]
    return total


def reward_memory_warning(config) -> str | None:
    """A warning when a GPU reward worker's reward models pass 90 % of its share of a GPU."""
    share = config.num_gpus_per_reward_worker
    if not (config.num_reward_workers and share):
        return None
    need, budget = reward_model_bytes(config), gpu_memory_bytes() * share
    if need <= 0.9 * budget:
        return None
    return (f"the reward model(s) need about {need / (1 << 30):.1f} GiB of weights, more than 90 % of a reward "
            f"worker's {share:g} of a {gpu_memory_bytes() / (1 << 30):.0f} GiB GPU: raise "
            f"num_gpus_per_reward_worker (--reward-gpus) or set reward_dtype='bfloat16'")
