"""REINFORCE++ options on RLlib's config API (§ = docs/algorithm.md)."""

from __future__ import annotations

import logging
from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from envs.text_env import SingleTurnTextEnv
from rllib_rpp.env_runners.text_env_runner import TextEnvRunner
from rllib_rpp.estimators import get_estimator
from rllib_rpp.memory import estimate_config_memory, memory_warning, reward_memory_warning
from rllib_rpp.registry import import_path
from rllib_rpp.reinforce_pp import validation
from rllib_rpp.reinforce_pp.config_state import KeepsSetValues
from rllib_rpp.reinforce_pp.reward_options import RewardOptions
from rllib_rpp.reinforce_pp.torch.causal_lm_rl_module import CausalLMTorchRLModule
from rllib_rpp.reinforce_pp.torch.reinforce_pp_torch_learner import ReinforcePPTorchLearner
from rllib_rpp.samplers.base import sampler_class

logger = logging.getLogger(__name__)
# The algorithm's module imports this one: the class is named by its path, imported on first use.
ALGORITHM_CLASS = "rllib_rpp.reinforce_pp.reinforce_pp:ReinforcePP"


class ReinforcePPConfig(KeepsSetValues, RewardOptions, AlgorithmConfig):
    """Configuration for REINFORCE++.

    .. code-block:: python

        from rllib_rpp import ReinforcePPConfig

        config = (
            ReinforcePPConfig()
            .environment(env_config={"prompts": "arithmetic", "reward_funcs": ["exact_match"]})
            .rl_module(model_config={"model": "tiny-arith"})
            .generation(max_new_tokens=5, temperature=1.0)
            .training(lr=1e-4, kl_coef=0.01, num_samples_per_prompt=4, num_prompts_per_iteration=64)
        )
        algo = config.build_algo()
        print(algo.train()["env_runners"]["episode_return_mean"])
    """

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or import_path(ALGORITHM_CLASS))
        # RLlib settings, with REINFORCE++ defaults (paper §4.2 where it gives one).
        self.env = SingleTurnTextEnv
        self.env_runner_cls = TextEnvRunner
        self.num_env_runners = 0
        self.normalize_actions = False
        self.clip_actions = False
        self.add_default_connectors_to_learner_pipeline = False
        # model_config: "model", "dtype" (compute and rollout), "param_dtype" (master weights and
        # optimizer state), "ref_dtype", "gradient_checkpointing", "lora", "ref_model".
        self._model_config = {"model": "tiny-arith", "dtype": "float32"}
        self.lr = 1e-6
        self.gamma = 1.0
        self.grad_clip = 1.0
        self.grad_clip_by = "global_norm"
        self.num_epochs = 1
        self.minibatch_size = 128
        self.shuffle_batch_per_epoch = True

        # KL against the frozen reference policy (§1).
        self.kl_coef = 0.01
        self.kl_estimator = None
        self.kl_placement = None
        self.kl_in_reward = None
        self.use_kl_loss = None
        self.kl_target = None
        self.kl_horizon = 10_000
        # Rewards (§4) and advantages (§2, §6).
        self.reward_normalization = None
        self.reward_clip = (-10.0, 10.0)
        self.reward_scale = 1.0
        self.overlong_buffer_len = 0
        self.overlong_penalty = 1.0
        self.advantage_estimator = "reinforce_pp"
        self.advantage_std_norm = True
        # Policy loss (§3).
        self.policy_loss = "ppo_clip"
        self.clip_low = 0.2
        self.clip_high = 0.2
        self.dual_clip = None
        self.loss_agg_mode = "token-mean"
        self.entropy_coef = 0.0
        self.tis_cap = None
        self.nonfinite_logprobs = "error"
        self.old_logprobs = "auto"
        # Batch shape.
        self.num_samples_per_prompt = 4
        self.num_prompts_per_iteration = 64
        self.dynamic_sampling = False
        self.max_sampling_rounds = 3
        # Learner memory: tokens per forward/backward (prompt + response, padded) and per chunk of
        # the output layer. With 8192 tokens a 1.5B model's update needs ~34 GB with checkpointing
        # (~52 GB without); one 8B replica needs ~157 GB even with it: FSDP or LoRA (rllib_rpp.memory).
        self.max_tokens_per_microbatch = 8192
        self.learner_strategy = "ddp"
        self.max_rollout_staleness = 0
        self.is_mask_range = None
        self.release_memory_between_updates = False
        self.logprob_chunk_tokens = 1024
        self.truncated_response = "keep"
        self.truncated_reward = -1.0
        self.weight_sync_timeout_s = 600.0
        # Generation.
        self.sampler = "transformers"
        self.sampler_kwargs = {}
        self.max_new_tokens = 16
        self.temperature = 1.0
        self.top_p = 1.0
        self.ignore_eos = False
        self.weight_transfer = "auto"
        # Greedy evaluation on held-out prompts, reported under "greedy_eval".
        self.greedy_eval_prompts = None
        self.greedy_eval_interval = 0
        self._init_reward_options()

    @override(AlgorithmConfig)
    def training(
        self,
        *,
        kl_coef: float = NotProvided,
        kl_estimator: str | None = NotProvided,
        kl_placement: str | None = NotProvided,
        kl_in_reward: bool | None = NotProvided,
        use_kl_loss: bool | None = NotProvided,
        kl_target: float | None = NotProvided,
        kl_horizon: float = NotProvided,
        reward_normalization: str | None = NotProvided,
        reward_clip: tuple[float, float] | None = NotProvided,
        reward_scale: float = NotProvided,
        overlong_buffer_len: int = NotProvided,
        overlong_penalty: float = NotProvided,
        advantage_estimator: str = NotProvided,
        advantage_std_norm: bool = NotProvided,
        policy_loss: str = NotProvided,
        clip_low: float = NotProvided,
        clip_high: float = NotProvided,
        dual_clip: float | None = NotProvided,
        loss_agg_mode: str = NotProvided,
        entropy_coef: float = NotProvided,
        tis_cap: float | None = NotProvided,
        nonfinite_logprobs: str = NotProvided,
        old_logprobs: str = NotProvided,
        num_samples_per_prompt: int = NotProvided,
        num_prompts_per_iteration: int = NotProvided,
        dynamic_sampling: bool = NotProvided,
        max_sampling_rounds: int = NotProvided,
        max_tokens_per_microbatch: int = NotProvided,
        learner_strategy: str = NotProvided,
        max_rollout_staleness: int = NotProvided,
        is_mask_range: tuple[float, float] | None = NotProvided,
        release_memory_between_updates: bool = NotProvided,
        logprob_chunk_tokens: int = NotProvided,
        truncated_response: str = NotProvided,
        truncated_reward: float = NotProvided,
        weight_sync_timeout_s: float = NotProvided,
        **kwargs,
    ) -> ReinforcePPConfig:
        """Sets the REINFORCE++ training options (and RLlib's: lr, grad_clip, gamma, num_epochs,
        minibatch_size [completions per learner], shuffle_batch_per_epoch, ...).

        Args:
            kl_coef: β, the KL penalty coefficient (paper: 0.01 general, 0.001 math). With
                `kl_target` set, the starting value of the adaptive β.
            kl_estimator: "k1" | "k2" | "k3"; None picks k1 for KL in the reward, k2 for a loss.
            kl_placement: Where β·KL goes (§1): "reward" (token rewards r_t = -β·KL_t + ...),
                "loss" (β·KL(π_θ || π_ref) added to the loss) or "none". None: decided by the
                two flags below, else the estimator's default (estimators.ESTIMATORS). The
                resolved value is `config.kl_placement_used`; kl_coef=0 always means "none".
            kl_in_reward: Older switch for kl_placement="reward" (False: not in the reward, so a
                loss term unless use_kl_loss=False).
            use_kl_loss: Older switch for kl_placement="loss" (False: no loss term, so in the
                reward unless the estimator's default is the loss, or kl_in_reward=False).
            kl_target: Per-sequence KL target of the adaptive controller; None keeps β fixed.
            kl_horizon: Horizon (in samples) of the adaptive controller.
            reward_normalization: None, "batch" (z-score over the iteration's rewards) or
                "running" (z-score with the running mean/std of all rewards so far).
            reward_clip: (low, high) applied after normalisation; None disables.
            reward_scale: Factor applied last.
            overlong_buffer_len: DAPO's soft overlong penalty (0: off): a response's reward loses
                up to `overlong_penalty`, linearly over its last `overlong_buffer_len` tokens before
                max_new_tokens. Added before `truncated_response` acts and before normalisation.
            overlong_penalty: The penalty at max_new_tokens (DAPO: 1.0).
            advantage_estimator: "reinforce_pp" (default), "reinforce_pp_baseline", "grpo", "rloo", a
                name added with `register_estimator` (this process only), or a "module:name" path
                to an `Estimator` (imported by every process, remote learners included).
            advantage_std_norm: Divide by the global std (True) or subtract the mean only.
            policy_loss: "ppo_clip" (default, the paper's), "gspo" (one clipped ratio per sequence;
                ε ~ 3e-4/4e-4), "cispo" (clipped stop-gradient IS weight on every token), a name
                added with `register_policy_loss`, or a "module:name" path to a `PolicyLossEntry`.
            clip_low: ε_low of the clip (ratio >= 1 - ε_low; GSPO: of the sequence ratio).
            clip_high: ε_high of the clip (ratio <= 1 + ε_high).
            dual_clip: c > 1 bounds the loss of negative advantages at -c·Â; None disables.
            loss_agg_mode: "token-mean", "seq-mean-token-mean", "seq-mean-token-sum" or
                "seq-mean-token-sum-norm" (Dr.GRPO: divided by max_new_tokens, not by lengths).
            entropy_coef: Entropy bonus coefficient (0: entropy is only logged; NaN with
                old_logprobs="sampler").
            tis_cap: Truncated importance-sampling cap for sampler/learner mismatch; None off.
            nonfinite_logprobs: NaN/inf in a response's log-probs: "error" (default, nothing is
                updated) or "mask" (the response is left out and counted).
            old_logprobs: Where π_old comes from: "recompute" (a no-grad pass of the learner's
                weights), "sampler" (the sampler's log-probs: one pass cheaper) or "auto" (default:
                "sampler" where it is exact: the transformers sampler, fp32, on-policy, no LoRA,
                tis_cap, is_mask_range or entropy bonus; equal to a recompute up to rounding; else
                "recompute"; the choice is `config.old_logprobs_used`). Without the π_old pass the
                entropy comes from the training forward, the sampler gap from the first step.
            num_samples_per_prompt: Completions per prompt (group size).
            num_prompts_per_iteration: Prompts per iteration, over all env runners.
            dynamic_sampling: DAPO: drop prompt groups whose samples all got the same reward (no
                gradient with a per-prompt baseline) and sample more prompts until the iteration
                holds num_prompts_per_iteration informative groups or `max_sampling_rounds`
                samples were drawn; a short batch trains with smaller mini-batches (same steps).
                Metrics under reinforce_pp/dynamic_sampling/.
            max_sampling_rounds: Samples drawn per iteration at most with dynamic_sampling.
            max_tokens_per_microbatch: Token budget of one forward/backward: each mini-batch
                (one optimizer step) is split into micro-batches of at most this many padded
                tokens (prompt + response, rows sorted by length) whose gradients accumulate,
                normalised by the whole step's counts; the π_old / π_ref passes use it too.
            learner_strategy: With several learners: "ddp" (every learner holds the whole model,
                gradients all-reduced) or "fsdp" (FSDP2: weights, gradients, optimizer state and
                the reference sharded over the learners; state gathered collectively).
            max_rollout_staleness: 0 (default): sample, train, sync, one after the other. K >= 1
                (needs remote env runners): runners generate the next batch with the newest
                weights they have while the learners train on the current one (one step off
                policy); a batch more than K updates old is dropped. Correct the sampler gap with
                `tis_cap` and/or `is_mask_range`.
            is_mask_range: (low, high): tokens whose π_old / π_sampler ratio falls outside it leave
                the loss (ICEPOP-style masking; multiplies with the TIS weights). None: off.
            release_memory_between_updates: After each update the learner moves Adam's state to
                host memory and empties the CUDA cache, and takes the state back at the next
                update: for learners sharing their GPU with a vLLM runner (colocated layout).
            logprob_chunk_tokens: Response tokens per pass through the output layer: the
                [tokens, vocabulary] logits exist for one chunk at a time (recomputed in backward).
            truncated_response: Responses that hit max_new_tokens without EOS: "keep",
                "penalize" (reward := truncated_reward) or "mask" (left out of the loss).
            truncated_reward: The reward of a truncated response under "penalize".
            weight_sync_timeout_s: How long to wait for remote runners to take new weights.
        """
        super().training(**kwargs)
        for name, value in list(locals().items()):
            if name not in ("self", "kwargs", "__class__") and value is not NotProvided:
                setattr(self, name, value)
        return self

    def generation(
        self,
        *,
        sampler: str = NotProvided,
        sampler_kwargs: dict | None = NotProvided,
        max_new_tokens: int = NotProvided,
        temperature: float = NotProvided,
        top_p: float = NotProvided,
        ignore_eos: bool = NotProvided,
        weight_transfer: str = NotProvided,
    ) -> ReinforcePPConfig:
        """Sets how env runners generate.

        Args:
            sampler: "transformers" (default: our own KV-cache decode loop over the whole batch), "vllm",
                a name added with `rllib_rpp.samplers.register_sampler`, or a "module:Class" path.
            sampler_kwargs: Extra settings for the sampler (vLLM: kv_cache_memory_bytes,
                gpu_memory_utilization, max_model_len, enforce_eager, seed, device, ...).
            max_new_tokens: Response budget (also the env's action length).
            temperature: Sampling temperature; the learner's log-probs use logits / temperature.
            top_p: Nucleus sampling mass (keep 1.0 for unbiased policy-gradient samples).
            ignore_eos: Always generate max_new_tokens tokens (for cost benchmarks).
            weight_transfer: How new weights reach remote vLLM runners: "auto" (default: "nccl" when
                learners and runners each have whole GPUs, else "gloo"), "nccl" or "gloo" (one
                broadcast from learner rank 0 through vLLM's weight-transfer engines), or
                "object_store" (through the driver and Ray's object store; always the path for
                samplers without an engine, e.g. transformers; a runner in the learner's process
                gets the tensors directly).
        """
        for name, value in list(locals().items()):
            if name != "self" and value is not NotProvided:
                setattr(self, name, value)
        return self

    @override(AlgorithmConfig)
    def evaluation(self, *, greedy_eval_prompts=NotProvided, greedy_eval_interval: int = NotProvided,
                   **kwargs) -> ReinforcePPConfig:
        """Sets evaluation options (and RLlib's).

        Args:
            greedy_eval_prompts: Held-out prompt source (any env prompt source, e.g.
                "arithmetic-eval"), completed greedily and rewarded by the env's reward step.
            greedy_eval_interval: Evaluate on the first iteration and then every this many (0: only
                on request, `algo.evaluate_greedy()`); the latest evaluation is in every result
                under `result["greedy_eval"]` (`at_iteration` says when it was made).
        """
        super().evaluation(**kwargs)
        if greedy_eval_prompts is not NotProvided:
            self.greedy_eval_prompts = greedy_eval_prompts
        if greedy_eval_interval is not NotProvided:
            self.greedy_eval_interval = greedy_eval_interval
        return self

    # -- derived settings ----------------------------------------------------------------
    @property
    def kl_placement_used(self) -> str:
        """Where the KL penalty goes, decided once: "reward" | "loss" | "none" (§1)."""
        if not self.kl_coef:
            return "none"
        if self.kl_placement is not None:
            return self.kl_placement
        if self.kl_in_reward:
            return "reward"
        if self.use_kl_loss:
            return "loss"
        default = get_estimator(self.advantage_estimator).default_kl_placement
        if self.kl_in_reward is False:
            return "none" if self.use_kl_loss is False else "loss"
        if self.use_kl_loss is False:
            return "reward" if default == "reward" else "none"
        return default

    @property
    def weight_transfer_used(self) -> str | None:
        """The weight-transfer engine of remote runners whose sampler has one ("gloo" | "nccl"), None
        for the object-store path."""
        engines = sampler_class(self.sampler).weight_transfer_engines
        if not engines or not self.num_env_runners or self.weight_transfer == "object_store":
            return None
        if self.weight_transfer != "auto":
            return self.weight_transfer
        whole_gpus = self.num_gpus_per_env_runner >= 1 and self.num_gpus_per_learner >= 1
        return "nccl" if whole_gpus and "nccl" in engines else "gloo"

    @property
    def dtypes(self) -> dict[str, str]:
        """{"param": master weights and optimizer state, "compute": forward passes and rollouts,
        "ref": the reference model}: model_config's param_dtype (float32), dtype, ref_dtype (dtype)."""
        mc = self._model_config if isinstance(self._model_config, dict) else {}
        compute = mc.get("dtype") or "float32"
        return {"param": mc.get("param_dtype") or "float32", "compute": compute, "ref": mc.get("ref_dtype") or compute}

    def memory_estimate(self):
        """Estimated learner memory per device (`rllib_rpp.memory.MemoryEstimate`) from the model's
        config (no weights loaded) and the batch options; None when the config is unavailable."""
        return estimate_config_memory(self)

    @property
    def old_logprobs_used(self) -> str:
        """Where π_old comes from, decided once: "recompute" | "sampler" (see `training(old_logprobs=)`)."""
        if self.old_logprobs != "auto":
            return self.old_logprobs
        exact = (sampler_class(self.sampler).runs_learner_code and self.dtypes["compute"] == "float32"
                 and not self.max_rollout_staleness and not (self._model_config or {}).get("lora")
                 and self.tis_cap is None and self.is_mask_range is None and not self.entropy_coef)
        return "sampler" if exact else "recompute"

    @property
    def kl_estimator_used(self) -> str:
        return self.kl_estimator or ("k2" if self.kl_placement_used == "loss" else "k1")

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "entropy_coef": self.entropy_coef,
                # No π_old pass: the training forward measures the entropy instead.
                "entropy_in_forward": self.old_logprobs_used == "sampler",
                "logprob_chunk_tokens": self.logprob_chunk_tokens, "learner_strategy": self.learner_strategy}

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=CausalLMTorchRLModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        return ReinforcePPTorchLearner

    @override(AlgorithmConfig)
    def build_learner_group(self, **kwargs):
        # RLlib reads the first weights from learner 0 alone right after this: sharded learners
        # gather them together first.
        group = super().build_learner_group(**kwargs)
        if self.learner_strategy == "fsdp" and self.num_learners > 1:
            for r in group.foreach_learner(lambda learner: learner.stage_full_state(optimizer=False)).result_or_errors:
                r.get()
        return group

    # -- validation ----------------------------------------------------------------------
    @override(AlgorithmConfig)
    def validate(self, warn: bool = True) -> None:  # warn=False: errors only (the CLI, before any build)
        # Ours first: RLlib's own checks misreport some bad values (e.g. lr="1e-4").
        if errors := validation.config_errors(self):
            self._value_error("; ".join(errors))
        total = self.num_prompts_per_iteration * self.num_samples_per_prompt
        self.train_batch_size_per_learner = total // max(1, self.num_learners)
        super().validate()
        for warning in [*validation.option_warnings(self), reward_memory_warning(self), memory_warning(self)]:
            if warning is not None and warn:
                logger.warning(warning)
