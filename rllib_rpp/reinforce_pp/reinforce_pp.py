"""REINFORCE++ (Hu et al., 2025) on RLlib's new API stack: config and algorithm.

One iteration (`training_step`):
1. sample: every env runner generates `num_prompts_per_iteration / num_env_runners` prompts x
   `num_samples_per_prompt` completions in one batched call and scores them (reward step);
2. on the driver, over the WHOLE batch: truncation policy, reward processing (normalise ->
   clip -> scale) and the estimator's per-prompt baseline -> one score per sequence;
3. learners: π_old and π_ref log-probs, token-level KL shaping, returns, globally whitened
   advantages (all-reduced across learners), then `num_epochs` passes of PPO-clip mini-batch
   updates; β adapts if a KL target is set;
4. the new weights go to every env runner before the next sample.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

from rllib_rpp import functional as F
from rllib_rpp.reinforce_pp.connectors import LOSS_WEIGHT, SCORE
from rllib_rpp.samplers.base import SAMPLERS

logger = logging.getLogger(__name__)

TRUNCATION_POLICIES = ("keep", "penalize", "mask")
REWARD_NORMALIZATIONS = (None, "batch", "running")
# KL placement each estimator defaults to (spec §1, §6): k1 in the reward for REINFORCE++ and
# RLOO; a k2 loss term for the baseline variant and GRPO.
_KL_IN_REWARD_DEFAULT = {"reinforce_pp": True, "rloo": True, "reinforce_pp_baseline": False, "grpo": False}


class ReinforcePPConfig(AlgorithmConfig):
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
        super().__init__(algo_class=algo_class or ReinforcePP)
        from envs.text_env import SingleTurnTextEnv
        from rllib_rpp.env_runners.text_env_runner import TextEnvRunner

        # RLlib settings, with REINFORCE++ defaults (paper §4.2 where it gives one).
        self.env = SingleTurnTextEnv
        self.env_runner_cls = TextEnvRunner
        self.num_env_runners = 0
        self.normalize_actions = False
        self.clip_actions = False
        self.add_default_connectors_to_learner_pipeline = False
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
        self.kl_in_reward = None
        self.use_kl_loss = None
        self.kl_target = None
        self.kl_horizon = 10_000
        # Rewards (§4) and advantages (§2, §6).
        self.reward_normalization = None
        self.reward_clip = (-10.0, 10.0)
        self.reward_scale = 1.0
        self.advantage_estimator = "reinforce_pp"
        self.advantage_std_norm = True
        # Policy loss (§3).
        self.clip_low = 0.2
        self.clip_high = 0.2
        self.dual_clip = None
        self.loss_agg_mode = "token-mean"
        self.entropy_coef = 0.0
        self.tis_cap = None
        self.nonfinite_logprobs = "error"
        # Batch shape.
        self.num_samples_per_prompt = 4
        self.num_prompts_per_iteration = 64
        self.logprob_batch_size = 256
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
        # Greedy evaluation on held-out prompts, reported under "greedy_eval".
        self.greedy_eval_prompts = None
        self.greedy_eval_interval = 0

    def training(
        self,
        *,
        kl_coef: float = NotProvided,
        kl_estimator: str | None = NotProvided,
        kl_in_reward: bool | None = NotProvided,
        use_kl_loss: bool | None = NotProvided,
        kl_target: float | None = NotProvided,
        kl_horizon: float = NotProvided,
        reward_normalization: str | None = NotProvided,
        reward_clip: tuple[float, float] | None = NotProvided,
        reward_scale: float = NotProvided,
        advantage_estimator: str = NotProvided,
        advantage_std_norm: bool = NotProvided,
        clip_low: float = NotProvided,
        clip_high: float = NotProvided,
        dual_clip: float | None = NotProvided,
        loss_agg_mode: str = NotProvided,
        entropy_coef: float = NotProvided,
        tis_cap: float | None = NotProvided,
        nonfinite_logprobs: str = NotProvided,
        num_samples_per_prompt: int = NotProvided,
        num_prompts_per_iteration: int = NotProvided,
        logprob_batch_size: int = NotProvided,
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
            kl_in_reward: Shape token rewards with -β·KL_t (§1). None: the estimator's default
                (True for reinforce_pp and rloo).
            use_kl_loss: Add β·KL(π_θ || π_ref) to the loss instead (default for
                reinforce_pp_baseline and grpo). Refused together with kl_in_reward=True.
            kl_target: Per-sequence KL target of the adaptive controller; None keeps β fixed.
            kl_horizon: Horizon (in samples) of the adaptive controller.
            reward_normalization: None, "batch" (z-score over the iteration's rewards) or
                "running" (z-score with the running mean/std of all rewards so far).
            reward_clip: (low, high) applied after normalisation; None disables.
            reward_scale: Factor applied last.
            advantage_estimator: "reinforce_pp" (default), "reinforce_pp_baseline", "grpo", "rloo".
            advantage_std_norm: Divide by the global std (True) or subtract the mean only.
            clip_low: ε_low of the PPO clip (ratio >= 1 - ε_low).
            clip_high: ε_high of the PPO clip (ratio <= 1 + ε_high).
            dual_clip: c > 1 bounds the loss of negative advantages at -c·Â; None disables.
            loss_agg_mode: "token-mean", "seq-mean-token-mean" or "seq-mean-token-sum".
            entropy_coef: Entropy bonus coefficient (0: entropy is only logged).
            tis_cap: Truncated importance-sampling cap for sampler/learner mismatch; None off.
            nonfinite_logprobs: NaN/inf in a response's log-probs: "error" (default, nothing is
                updated) or "mask" (the response is left out and counted).
            num_samples_per_prompt: Completions per prompt (group size).
            num_prompts_per_iteration: Prompts per iteration, over all env runners.
            logprob_batch_size: Rows per forward pass of the π_old / π_ref log-prob passes.
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
    ) -> ReinforcePPConfig:
        """Sets how env runners generate.

        Args:
            sampler: "transformers" (batched `generate`, CPU default) or "vllm".
            sampler_kwargs: Extra settings for the sampler (vLLM: kv_cache_memory_bytes,
                gpu_memory_utilization, max_model_len, enforce_eager, seed, device, ...).
            max_new_tokens: Response budget (also the env's action length).
            temperature: Sampling temperature; the learner's log-probs use logits / temperature.
            top_p: Nucleus sampling mass (keep 1.0 for unbiased policy-gradient samples).
            ignore_eos: Always generate max_new_tokens tokens (for cost benchmarks).
        """
        for name, value in list(locals().items()):
            if name != "self" and value is not NotProvided:
                setattr(self, name, value)
        return self

    def evaluation(self, *, greedy_eval_prompts=NotProvided, greedy_eval_interval: int = NotProvided,
                   **kwargs) -> ReinforcePPConfig:
        """Sets evaluation options (and RLlib's).

        Args:
            greedy_eval_prompts: Held-out prompt source (any env prompt source, e.g.
                "arithmetic-eval"), completed greedily and scored by the env's reward step.
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
    def uses_kl_in_reward(self) -> bool:
        if self.kl_in_reward is not None:
            return bool(self.kl_in_reward)
        if self.use_kl_loss:
            return False
        return _KL_IN_REWARD_DEFAULT.get(self.advantage_estimator, True)

    @property
    def uses_kl_loss(self) -> bool:
        return not self.uses_kl_in_reward and self.use_kl_loss is not False and self.kl_coef > 0

    @property
    def kl_estimator_used(self) -> str:
        return self.kl_estimator or ("k1" if self.uses_kl_in_reward else "k2")

    @property
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "entropy_coef": self.entropy_coef}

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from rllib_rpp.reinforce_pp.torch.causal_lm_rl_module import CausalLMTorchRLModule

        return RLModuleSpec(module_class=CausalLMTorchRLModule)

    def get_default_learner_class(self):
        from rllib_rpp.reinforce_pp.torch.reinforce_pp_torch_learner import ReinforcePPTorchLearner

        return ReinforcePPTorchLearner

    # -- validation ----------------------------------------------------------------------
    def validate(self) -> None:
        total = self.num_prompts_per_iteration * self.num_samples_per_prompt
        self.train_batch_size_per_learner = total // max(1, self.num_learners)
        super().validate()

        def bad(option, value, expected):
            self._value_error(f"{option}={value!r} is invalid: expected {expected}")

        if self.advantage_estimator not in F.ADVANTAGE_ESTIMATORS:
            bad("advantage_estimator", self.advantage_estimator, f"one of {F.ADVANTAGE_ESTIMATORS}")
        if self.kl_estimator not in (None, *F.KL_ESTIMATORS):
            bad("kl_estimator", self.kl_estimator, f"None or one of {F.KL_ESTIMATORS}")
        if self.kl_in_reward and self.use_kl_loss:
            self._value_error("kl_in_reward=True and use_kl_loss=True would count the KL penalty twice; "
                              "choose one (reward shaping: kl_in_reward=True, loss term: use_kl_loss=True)")
        if self.advantage_estimator in F.GROUP_ESTIMATORS and self.num_samples_per_prompt < 2:
            self._value_error(f"advantage_estimator={self.advantage_estimator!r} subtracts a per-prompt "
                              f"baseline and needs num_samples_per_prompt >= 2, got {self.num_samples_per_prompt}")
        if not isinstance(self.kl_coef, (int, float)) or self.kl_coef < 0:
            bad("kl_coef", self.kl_coef, "a number >= 0")
        if self.kl_target is not None and not self.kl_target > 0:
            bad("kl_target", self.kl_target, "None or > 0")
        if self.kl_target is not None and self.kl_coef == 0:
            self._value_error("kl_target needs kl_coef > 0 (the adaptive controller scales β multiplicatively)")
        if not self.kl_horizon > 0:
            bad("kl_horizon", self.kl_horizon, "> 0")
        if self.uses_kl_loss and self.kl_estimator_used == "k3":
            logger.warning("KL estimator k3 as a loss term gives a biased gradient; k2 is recommended")
        if self.reward_normalization not in REWARD_NORMALIZATIONS:
            bad("reward_normalization", self.reward_normalization, f"one of {REWARD_NORMALIZATIONS}")
        if self.reward_clip is not None and not (len(self.reward_clip) == 2 and self.reward_clip[0] < self.reward_clip[1]):
            bad("reward_clip", self.reward_clip, "None or (low, high) with low < high")
        if not 0 < self.clip_low < 1:
            bad("clip_low", self.clip_low, "0 < clip_low < 1")
        if not self.clip_high > 0:
            bad("clip_high", self.clip_high, "> 0")
        if self.dual_clip is not None and not self.dual_clip > 1:
            bad("dual_clip", self.dual_clip, "None or > 1")
        if self.loss_agg_mode not in F.LOSS_AGG_MODES:
            bad("loss_agg_mode", self.loss_agg_mode, f"one of {F.LOSS_AGG_MODES}")
        if self.tis_cap is not None and not self.tis_cap > 0:
            bad("tis_cap", self.tis_cap, "None or > 0")
        if self.nonfinite_logprobs not in ("error", "mask"):
            bad("nonfinite_logprobs", self.nonfinite_logprobs, "'error' or 'mask'")
        if self.truncated_response not in TRUNCATION_POLICIES:
            bad("truncated_response", self.truncated_response, f"one of {TRUNCATION_POLICIES}")
        if not 0 < self.gamma <= 1:
            bad("gamma", self.gamma, "0 < gamma <= 1")
        for name in ("num_samples_per_prompt", "num_prompts_per_iteration", "max_new_tokens", "logprob_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                bad(name, value, "a positive integer")
        if self.num_prompts_per_iteration % max(1, self.num_env_runners):
            self._value_error(f"num_prompts_per_iteration={self.num_prompts_per_iteration} must be divisible "
                              f"by num_env_runners={self.num_env_runners}")
        per_learner = total // max(1, self.num_learners)
        if total % max(1, self.num_learners):
            self._value_error(f"the batch of {total} completions does not split evenly over {self.num_learners} learners")
        if self.minibatch_size is not None and (self.minibatch_size < 1 or per_learner % self.minibatch_size):
            self._value_error(f"minibatch_size={self.minibatch_size} must divide the {per_learner} completions "
                              f"each learner gets per iteration")
        if self.sampler not in SAMPLERS:
            bad("sampler", self.sampler, f"one of {SAMPLERS}")
        if not self.temperature > 0:
            bad("temperature", self.temperature, "> 0")
        if not 0 < self.top_p <= 1:
            bad("top_p", self.top_p, "0 < top_p <= 1")
        model = self._model_config.get("model") if isinstance(self._model_config, dict) else None
        if not isinstance(model, str) or not model:
            self._value_error(f"model_config['model'] must name the policy (HF id, path or 'tiny-arith'), got {model!r}")


class ReinforcePP(Algorithm):
    """REINFORCE++: critic-free PPO-style policy optimisation for language models."""

    @classmethod
    def get_default_config(cls) -> ReinforcePPConfig:
        return ReinforcePPConfig()

    def setup(self, config) -> None:
        super().setup(config)
        self.reward_moments = F.RunningMoments()
        self._shuffle_rng = np.random.default_rng(self.config.seed)
        self._last_eval = None

    def training_step(self) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, runner_metrics = self._sample()
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)
        if not episodes:
            return
        t1 = time.perf_counter()
        self._score(episodes)
        if cfg.shuffle_batch_per_epoch:  # RLlib reshuffles between epochs; shuffle the first too
            episodes = [episodes[i] for i in self._shuffle_rng.permutation(len(episodes))]
        t2 = time.perf_counter()
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            results = self.learner_group.update(
                episodes=episodes,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                    (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)},
                num_epochs=cfg.num_epochs,
                minibatch_size=cfg.minibatch_size,
                shuffle_batch_per_epoch=cfg.shuffle_batch_per_epoch,
            )
        self.metrics.aggregate(results, key=LEARNER_RESULTS)
        t3 = time.perf_counter()
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self._sync_weights()
        t4 = time.perf_counter()
        # This iteration's phases (RLlib's own timers are smoothed averages).
        self.metrics.log_dict({"sample_s": t1 - t0, "score_s": t2 - t1, "update_s": t3 - t2, "sync_s": t4 - t3,
                               "completions_per_s": len(episodes) / (t4 - t0)},
                              key=("reinforce_pp", "iteration"), window=1)
        if cfg.greedy_eval_interval:
            # Evaluate on the first iteration and every `greedy_eval_interval`; report the latest
            # evaluation every iteration (Tune schedulers need the metric in every result).
            if self._last_eval is None or (self.iteration + 1) % cfg.greedy_eval_interval == 0:
                self._last_eval = {**self.evaluate_greedy(), "at_iteration": self.iteration + 1}
            self.metrics.log_dict(self._last_eval, key="greedy_eval", window=1)

    def _sync_weights(self) -> None:
        """New weights to every env runner before the next sample."""
        group = self.env_runner_group
        if group.num_remote_env_runners() == 0 and self.learner_group.is_local:
            # Runner and learner share this process: hand the tensors over directly
            # (RLlib's sync_weights would pickle them through the object store first).
            state = self.learner_group.get_state(
                components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}/{DEFAULT_MODULE_ID}",
                inference_only=True)[COMPONENT_LEARNER]
            self.env_runner.set_state(state)
        else:
            group.sync_weights(from_worker_or_learner_group=self.learner_group, policies=[DEFAULT_MODULE_ID],
                               inference_only=True, timeout_seconds=self.config.weight_sync_timeout_s)

    def _sample(self):
        group = self.env_runner_group
        remote = group.num_remote_env_runners()
        k = self.config.num_prompts_per_iteration // max(1, remote)
        out = group.foreach_env_runner(
            lambda runner: (runner.sample(num_prompts=k), runner.get_metrics()),
            local_env_runner=remote == 0,
        )
        return [e for eps, _ in out for e in eps], [m for _, m in out]

    def _score(self, episodes) -> None:
        """Driver step over the whole batch: truncation policy, §4 processing, §6 baselines."""
        from rllib_rpp.env_runners.text_env_runner import GROUP_ID, TRUNCATED

        cfg = self.config
        raw = torch.tensor([e.get_rewards(0) for e in episodes], dtype=torch.float64)
        truncated = torch.tensor([e.custom_data[TRUNCATED] for e in episodes])
        if cfg.truncated_response == "penalize":
            raw = torch.where(truncated, torch.full_like(raw, cfg.truncated_reward), raw)
        processed = F.process_rewards(raw, normalize=cfg.reward_normalization, running=self.reward_moments,
                                      clip_range=cfg.reward_clip, scale=cfg.reward_scale)
        groups = torch.tensor([e.custom_data[GROUP_ID] for e in episodes])
        scores = F.sequence_scores(processed, groups, cfg.advantage_estimator)
        masked = cfg.truncated_response == "mask"
        for e, s, t in zip(episodes, scores.tolist(), truncated.tolist()):
            e.custom_data[SCORE] = s
            e.custom_data[LOSS_WEIGHT] = 0.0 if (masked and t) else 1.0
        self.metrics.log_dict({"reward_processed_mean": processed.mean().item(),
                               "score_std": scores.std(unbiased=False).item(),
                               "truncated_fraction": truncated.double().mean().item()},
                              key="reinforce_pp", window=1)

    # -- user API ------------------------------------------------------------------------
    def evaluate_greedy(self, prompts=None) -> dict[str, float]:
        """Greedy completions of held-out prompts (default: config.greedy_eval_prompts) with
        the current weights, scored by the env's reward step. For an exact-match reward,
        `reward_mean` is the accuracy."""
        from envs.prompts import load_prompt_rows

        source = prompts if prompts is not None else self.config.greedy_eval_prompts
        if source is None:
            raise ValueError("no evaluation prompts: pass `prompts` or set "
                             "config.evaluation(greedy_eval_prompts=...)")
        rows = load_prompt_rows(source, prompt_key=self.config.env_config.get("prompt_key", "prompt"))
        group = self.env_runner_group
        remote = group.healthy_env_runner_ids()
        out = group.foreach_env_runner(lambda runner: runner.evaluate_greedy(rows),
                                       remote_worker_ids=remote[:1], local_env_runner=not remote)
        return out[0]

    def get_policy_state_dict(self) -> dict[str, torch.Tensor]:
        """A snapshot (copies) of the trained policy's weights under Hugging Face names."""
        from rllib_rpp.env_runners.text_env_runner import strip_module_prefix

        state = self.learner_group.get_state(
            components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}/{DEFAULT_MODULE_ID}")
        module_state = state[COMPONENT_LEARNER][COMPONENT_RL_MODULE][DEFAULT_MODULE_ID]
        return {k: torch.as_tensor(v).clone() for k, v in strip_module_prefix(module_state).items()}

    def export_policy(self, path: str | Path) -> Path:
        """Write the trained policy and its tokenizer with `save_pretrained`: loadable by
        transformers (`AutoModelForCausalLM.from_pretrained(path)`) and vLLM (`LLM(path)`)."""
        from envs.models import load_causal_lm, load_tokenizer

        mc = self.config.model_config
        model = load_causal_lm(mc["model"], dtype=mc.get("dtype", "float32"))
        model.load_state_dict(self.get_policy_state_dict(), strict=True)
        path = Path(path)
        model.save_pretrained(path)
        load_tokenizer(self.config.env_config.get("model", mc["model"])).save_pretrained(path)
        return path

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        state["reinforce_pp"] = {"reward_moments": self.reward_moments.get_state(),
                                 "shuffle_rng": self._shuffle_rng.bit_generator.state}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if "reinforce_pp" in state:
            self.reward_moments.set_state(state["reinforce_pp"]["reward_moments"])
            self._shuffle_rng.bit_generator.state = state["reinforce_pp"]["shuffle_rng"]
        # Runners must sample with the restored weights, not the ones they were built with.
        self._sync_weights()

    def restore_env_runners(self, env_runner_group) -> list[int]:
        """After RLlib restarts a failed env runner, give it the current weights."""
        restored = env_runner_group.probe_unhealthy_env_runners() if self.config.is_online else []
        if restored:
            env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group,
                                          policies=[DEFAULT_MODULE_ID], to_worker_indices=restored,
                                          inference_only=True, timeout_seconds=self.config.weight_sync_timeout_s)
        return restored


__all__ = ["ReinforcePP", "ReinforcePPConfig"]
