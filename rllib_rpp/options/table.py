"""Every REINFORCE++ option, written once: the config method that sets it, its default, its rule and
its doc (§ = docs/algorithm.md). The config's defaults and setters, its validation, the options
objects the processes receive, the CLI's `--set` keys and README's tables are derived from here.

Options shared with the text env (`envs.text_env_config.TextEnvConfig`, which knows nothing of this
package) take their default from it, so each default is declared once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envs.reward_guard import is_error_policy
from envs.rewards import REWARD_BACKENDS
from envs.text_env_config import TextEnvConfig
from rllib_rpp.estimators import KL_PLACEMENTS, get_estimator
from rllib_rpp.kl_estimators import get_kl_estimator
from rllib_rpp.loss_aggregations import get_loss_aggregation
from rllib_rpp.options.rules import (
    POSITIVE_INT,
    Rule,
    boolean,
    is_int,
    number,
    one_of,
    pair,
    resolves,
    schedule_or_number,
)
from rllib_rpp.policy_losses import get_policy_loss
from rllib_rpp.samplers.base import sampler_class

SECTIONS = ("training", "generation", "evaluation", "rewards")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Option:
    name: str
    section: str  # the config method that sets it (SECTIONS), or "model_config" for `rl_module(model_config=)`
    default: Any
    rule: Rule | None  # None: checked where it is used (model_config's "model")
    doc: str
    rllib: bool = False  # RLlib's own option: RLlib's setter stores it; here only our default and rule


def _env(name: str) -> Any:
    """The text env's default of an option it shares with the config."""
    return TextEnvConfig.__dataclass_fields__[name].default


def _training(name, default, rule, doc, rllib=False) -> Option:
    return Option(name, "training", default, rule, doc, rllib)


OPTIONS: tuple[Option, ...] = (
    # RLlib's options, with REINFORCE++ defaults (paper §4.2), checked before RLlib's validation (it misreports some).
    _training("lr", 1e-6, (schedule_or_number, "a finite number > 0, or a schedule [[timestep, lr > 0], ...]"),
              "Learning rate (or RLlib's schedule).", rllib=True),
    _training("gamma", 1.0, number(0, 1, lo_open=True), "Discount of the token returns (§2).", rllib=True),
    _training("grad_clip", 1.0, number(0, lo_open=True, optional=True), "Global gradient-norm clip; None: off.",
              rllib=True),
    _training("grad_clip_by", "global_norm", one_of(("global_norm",)), "How gradients are clipped.", rllib=True),
    _training("num_epochs", 1, POSITIVE_INT, "Passes of mini-batch updates over each batch.", rllib=True),
    _training("minibatch_size", 128, number(1, integer=True, optional=True),
              "Completions per learner in one optimizer step; must divide each learner's share of the batch.",
              rllib=True),
    _training("shuffle_batch_per_epoch", True, boolean(), "Shuffle the prompt groups before each epoch.", rllib=True),
    # §1 KL against the frozen reference policy.
    _training("kl_coef", 0.01, number(0), "β, the KL penalty coefficient (paper: 0.01 general, 0.001 math); with "
              "`kl_target` set, the adaptive β's starting value."),
    _training("kl_estimator", None,
              resolves(lambda v: v is None or get_kl_estimator(v), "None, a registered KL estimator "
                       "(rllib_rpp.kl_estimators.KL_ESTIMATORS) or a 'module:name' path to a function of δ"),
              "`k1`, `k2` or `k3` (clamped to [-10, 10]), or a `\"module:name\"` path; None: k1 for KL in the reward, "
              "k2 as a loss term."),
    _training("kl_placement", None, one_of((None, *KL_PLACEMENTS)),
              "Where β·KL goes: `reward` (token rewards r_t = -β·KL_t + ...), `loss` (β·KL(π_θ ‖ π_ref) added to the "
              "loss) or `none`; None: decided by the two older flags below, else the estimator's default. The "
              "decision is `config.kl_placement_used`; kl_coef=0 always means `none`."),
    _training("kl_in_reward", None, boolean(optional=True), "Older switch for kl_placement=`reward` (False: not in "
              "the reward, so a loss term unless use_kl_loss=False)."),
    _training("use_kl_loss", None, boolean(optional=True), "Older switch for kl_placement=`loss` (False: no loss "
              "term, so in the reward unless the estimator's default is the loss, or kl_in_reward=False)."),
    _training("kl_target", None, number(0, lo_open=True, optional=True),
              "Per-sequence KL target of the adaptive β controller; None keeps β fixed."),
    _training("kl_horizon", 10_000, number(0, lo_open=True), "Horizon (in samples) of the adaptive β controller."),
    # §4 rewards.
    _training("reward_normalization", None, one_of((None, "batch", "running")),
              "None, `batch` (z-score over the iteration's rewards) or `running` (z-score with the running "
              "mean/std of every reward so far)."),
    _training("reward_clip", (-10.0, 10.0), (pair, "None or (low, high) with finite low < high"),
              "(low, high) applied after normalisation; None: off."),
    _training("reward_scale", 1.0, number(0, lo_open=True), "Factor applied last."),
    _training("overlong_buffer_len", 0, number(0, integer=True),
              "DAPO's soft overlong penalty (0: off): a response's reward loses up to `overlong_penalty`, linearly "
              "over its last `overlong_buffer_len` tokens before max_new_tokens; added before `truncated_response` "
              "acts and before normalisation."),
    _training("overlong_penalty", 1.0, number(0), "The overlong penalty at max_new_tokens (DAPO: 1.0)."),
    _training("truncated_response", "keep", one_of(("keep", "penalize", "mask")),
              "Responses that hit max_new_tokens without EOS: `keep`, `penalize` (reward := truncated_reward) or "
              "`mask` (left out of the loss); the fraction is logged."),
    _training("truncated_reward", -1.0, number(), "The reward of a truncated response under `penalize`."),
    # §2, §6 advantages.
    _training("advantage_estimator", "reinforce_pp",
              resolves(get_estimator, "a registered estimator name (rllib_rpp.estimators.ESTIMATORS) or a "
                                      "'module:name' path to an Estimator"),
              "`reinforce_pp`, `reinforce_pp_baseline`, `grpo`, `rloo` (the last three subtract a per-prompt "
              "baseline: ≥ 2 samples per prompt), a name added with `register_estimator` (this process only), or a "
              "`\"module:name\"` path to an `Estimator` (imported by every process, remote learners included)."),
    _training("advantage_std_norm", True, boolean(), "Divide by the global std (True) or subtract the mean only."),
    # §3 policy loss.
    _training("policy_loss", "ppo_clip",
              resolves(get_policy_loss, "a registered policy loss (rllib_rpp.policy_losses.POLICY_LOSSES) or a "
                                        "'module:name' path to a PolicyLossEntry"),
              "`ppo_clip` (the paper's), `gspo` (one clipped ratio per sequence, exp(mean_t log ρ_t); ε ≈ 3e-4 / "
              "4e-4), `cispo` (clipped stop-gradient IS weight on every token's log-prob), a name added with "
              "`register_policy_loss`, or a `\"module:name\"` path to a `PolicyLossEntry`."),
    _training("clip_low", 0.2, number(0, 1, lo_open=True, hi_open=True),
              "ε_low: ratio ≥ 1 - ε_low (of the sequence ratio with `gspo`, of the IS weight with `cispo`)."),
    _training("clip_high", 0.2, number(0, lo_open=True), "ε_high: ratio ≤ 1 + ε_high."),
    _training("dual_clip", None, number(1, lo_open=True, optional=True),
              "c > 1 bounds the loss of negative advantages at -c·Â (`ppo_clip` only); None: off."),
    _training("loss_agg_mode", "token-mean",
              resolves(get_loss_aggregation, "a registered loss aggregation (rllib_rpp.loss_aggregations."
                       "LOSS_AGGREGATIONS) or a 'module:name' path to one"),
              "`token-mean`, `seq-mean-token-mean`, `seq-mean-token-sum` or `seq-mean-token-sum-norm` (Dr.GRPO: "
              "each response's token sum divided by max_new_tokens, not by its length), or a `\"module:name\"` "
              "path; counts are global per optimizer step."),
    _training("entropy_coef", 0.0, number(), "Entropy bonus coefficient (0: the entropy is only logged)."),
    _training("tis_cap", None, number(0, lo_open=True, optional=True),
              "Truncated importance-sampling cap for the sampler/learner log-prob gap; None: off."),
    _training("is_mask_range", None, (lambda v: v is None or (pair(v) and 0 <= v[0] < 1 < v[1]),
                                      "None or (low, high) with 0 <= low < 1 < high"),
              "(low, high): tokens whose π_old / π_sampler ratio falls outside leave the loss (ICEPOP-style; "
              "multiplies the TIS weights); None: off."),
    _training("nonfinite_logprobs", "error", one_of(("error", "mask")),
              "NaN/inf in a response's log-probs: `error` (nothing is updated) or `mask` (the response leaves the "
              "loss, counted)."),
    _training("old_logprobs", "auto", one_of(("auto", "recompute", "sampler")),
              "Where π_old comes from: `recompute` (a no-grad pass of the learner's weights), `sampler` (the "
              "sampler's log-probs: one pass cheaper) or `auto`: `sampler` where that is exact (the transformers "
              "sampler, fp32, on-policy, no LoRA, tis_cap, is_mask_range or entropy bonus), else `recompute`; the "
              "decision is `config.old_logprobs_used`. Without the π_old pass the entropy comes from the training "
              "forward; the sampler gap is logged either way (`logprob_mismatch_*`)."),
    # Batch shape.
    _training("num_samples_per_prompt", 4, POSITIVE_INT, "Completions per prompt (the group size)."),
    _training("num_prompts_per_iteration", 64, POSITIVE_INT, "Prompts per iteration, over all env runners."),
    _training("dynamic_sampling", False, boolean(),
              "DAPO: drop prompt groups whose samples all got the same reward and sample more prompts until the "
              "iteration holds num_prompts_per_iteration informative groups or `max_sampling_rounds` samples were "
              "drawn (a short batch trains with smaller mini-batches, same steps; none: no update, with a warning); "
              "metrics under reinforce_pp/dynamic_sampling/; meant for group baselines."),
    _training("max_sampling_rounds", 3, POSITIVE_INT, "Samples drawn per iteration at most with dynamic_sampling."),
    _training("max_rollout_staleness", 0, number(0, integer=True),
              "0: sample, train, sync, one after the other. K ≥ 1 (remote env runners): runners generate the next "
              "batch with the newest weights they have while the learners train; a batch more than K updates old "
              "is dropped (correct the gap with tis_cap and/or is_mask_range)."),
    # Learner: memory, precision of the passes, several learners.
    _training("max_tokens_per_microbatch", 8192, POSITIVE_INT,
              "Token budget of one forward/backward (rows × (longest prompt + longest response), rows sorted by "
              "length): each mini-batch is split into such micro-batches whose gradients accumulate before its one "
              "optimizer step (normalised by the step's global counts, so the update equals the unsplit one); the "
              "π_old / π_ref passes use it too."),
    _training("logprob_chunk_tokens", 1024, POSITIVE_INT,
              "Response tokens per pass through the output layer: the [tokens, vocabulary] logits exist one chunk "
              "at a time (recomputed in backward)."),
    _training("learner_strategy", "ddp", one_of(("ddp", "fsdp")),
              "With several learners: `ddp` (a whole model each, gradients all-reduced) or `fsdp` (FSDP2: weights, "
              "gradients, optimizer state and the reference sharded over the learners)."),
    _training("release_memory_between_updates", False, boolean(),
              "After each update Adam's state goes to host memory and the CUDA cache is emptied, and comes back at "
              "the next update (learners sharing their GPU with a vLLM runner)."),
    _training("weight_sync_timeout_s", 600.0, number(0, lo_open=True),
              "Seconds to wait for remote runners to take new weights."),
    # Generation.
    Option("sampler", "generation", "transformers",
           resolves(sampler_class, "a registered sampler name (rllib_rpp.samplers.SAMPLERS) or a 'module:Class' "
                                   "path to a Sampler"),
           "`transformers` (a KV-cache decode loop over the whole batch), `vllm`, a name added with "
           "`rllib_rpp.samplers.register_sampler`, or a `\"module:Class\"` path."),
    Option("sampler_kwargs", "generation", {}, (lambda v: v is None or isinstance(v, dict), "None or a dict"),
           "Extra settings for the sampler (vLLM: kv_cache_memory_bytes, gpu_memory_utilization, max_model_len, "
           "enforce_eager, seed, device, tensor_parallel_size, enable_sleep_mode, ...)."),
    Option("max_new_tokens", "generation", _env("max_new_tokens"), POSITIVE_INT,
           "Response budget (also the env's action length)."),
    Option("temperature", "generation", 1.0, number(0, lo_open=True),
           "Sampling temperature; the learner's log-probs use logits / temperature."),
    Option("top_p", "generation", 1.0, number(0, 1, lo_open=True),
           "Nucleus sampling mass (keep 1.0 for unbiased policy-gradient samples)."),
    Option("ignore_eos", "generation", False, boolean(), "Always generate max_new_tokens tokens (cost benchmarks)."),
    Option("weight_transfer", "generation", "auto", one_of(("auto", "nccl", "gloo", "object_store")),
           "How new weights reach remote vLLM runners: `auto` (`nccl` when learners and runners each have whole "
           "GPUs, else `gloo`), `nccl` or `gloo` (one broadcast from learner rank 0 through vLLM's weight-transfer "
           "engines), or `object_store` (through the driver and Ray's object store: always the path for samplers "
           "without an engine; a runner in the learner's process gets the tensors directly)."),
    # Evaluation.
    Option("greedy_eval_prompts", "evaluation", None, None,
           "Held-out prompt source (any env prompt source, e.g. `arithmetic-eval`), completed greedily and "
           "rewarded by the env's reward step."),
    Option("greedy_eval_interval", "evaluation", 0, number(0, integer=True),
           "Evaluate on the first iteration and then every this many (0: only on request, "
           "`algo.evaluate_greedy()`); the latest evaluation is in every result under `result[\"greedy_eval\"]`."),
    # Rewards.
    Option("num_reward_workers", "rewards", 0, number(0, integer=True),
           "Ray actors that score for every env runner (each runner splits its batch over all of them); a reward "
           "model is loaded once per worker and never on the driver. 0: each env runner scores its own batch."),
    Option("num_cpus_per_reward_worker", "rewards", 1, number(0), "CPUs of each reward worker (fractions allowed)."),
    Option("num_gpus_per_reward_worker", "rewards", 0, number(0),
           "GPUs of each reward worker (fractions allowed; a reward model then runs on its GPU)."),
    Option("reward_timeout_s", "rewards", _env("reward_timeout_s"), number(0, lo_open=True, optional=True),
           "Seconds a reward call may take. Rule functions other than the trivially safe built-ins run in a child "
           "process that is killed past it; a reward server gets the same timeout. When a batch call times out or "
           "raises, the culprits are found by bisecting the batch (each part under the same timeout), so only "
           "they get `on_reward_error`. None: every reward "
           "function runs in the env's own process, with no timeout."),
    Option("on_reward_error", "rewards", _env("on_reward_error"),
           (is_error_policy, "'raise', 'skip' or a finite number (the reward a failing sample gets)"),
           "What a sample whose reward call timed out or raised gets: `raise` (the run stops, naming the sample), "
           "`skip` (it leaves the loss and is counted), or a number (its reward)."),
    Option("reward_dtype", "rewards", _env("reward_dtype"), one_of((None, *DTYPES)),
           "A reward model's dtype (None: bfloat16 on CUDA, float32 on CPU)."),
    Option("overlap_scoring", "rewards", False, boolean(),
           "With reward workers, each env runner generates its batch in two halves and the first is scored while "
           "the second is generated (not with a sleeping vLLM engine)."),
    Option("reward_backend", "rewards", _env("reward_backend"), one_of(REWARD_BACKENDS),
           "How a reward model is served: `transformers` or `vllm` (vLLM's pooling runner)."),
)

MODEL_OPTIONS: tuple[Option, ...] = (
    Option("model", "model_config", "tiny-arith", None,
           "HF id, local path, `tiny-arith`, `smollm2-135m-instruct`, or `random:<shape>` (a random-initialised "
           "model of a real shape, `rpp_hub.synthetic.SHAPES`, for memory/speed checks)."),
    Option("dtype", "model_config", "float32", one_of(DTYPES),
           "Compute dtype of the learner's forward passes (bf16 autocast over fp32 weights) and the dtype the env "
           "runners serve; weights are cast to it when sent."),
    # fp16 master weights would need loss scaling, which the learner does not do: the first update fails.
    Option("param_dtype", "model_config", "float32",
           (lambda v: v in (None, "float32", "bfloat16"), "None, 'float32' or 'bfloat16' (float16 master weights "
            "need loss scaling; use float16 as the compute 'dtype' instead)"),
           "Master weights and optimizer state (keep fp32: bf16 weights round lr ≈ 1e-6 updates away)."),
    Option("ref_dtype", "model_config", None, one_of((None, *DTYPES)), "The reference model's weights (None: dtype)."),
    Option("gradient_checkpointing", "model_config", False, boolean(optional=True),
           "Recompute each decoder layer in backward."),
    Option("lora", "model_config", None,
           (lambda v: v is None or (isinstance(v, dict) and is_int(v.get("r")) and v["r"] > 0
                                    and set(v) <= {"r", "alpha", "target_modules", "dropout"}),
            "None or {'r': int > 0, 'alpha': ..., 'target_modules': [...], 'dropout': ...}"),
           "`{\"r\": 16, \"alpha\": 32, \"target_modules\": [...]}`: train peft LoRA adapters only; π_ref is the "
           "base with adapters disabled; runners get merged weights; `export_policy` writes the merged model and "
           "`adapter/`."),
    Option("ref_model", "model_config", None, None, "A different reference model (None: `model`)."),
)
