"""REINFORCE++ options on RLlib's config API: defaults and setters from the option table
(`rllib_rpp.options`), the decisions derived from them, and validation."""

from __future__ import annotations

import copy
import logging
from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from envs.text_env import SingleTurnTextEnv
from rllib_rpp import options
from rllib_rpp.env_runners.text_env_runner import TextEnvRunner
from rllib_rpp.estimators import get_estimator
from rllib_rpp.memory import estimate_config_memory, memory_warning, reward_memory_warning
from rllib_rpp.reinforce_pp import validation
from rllib_rpp.reinforce_pp.config_state import KeepsSetValues
from rllib_rpp.reinforce_pp.setters import section_setter
from rllib_rpp.reinforce_pp.torch.causal_lm_rl_module import CausalLMTorchRLModule
from rllib_rpp.reinforce_pp.torch.reinforce_pp_torch_learner import ReinforcePPTorchLearner
from rllib_rpp.samplers.base import sampler_class
from rpp_hub.registry import import_path

logger = logging.getLogger(__name__)
# The algorithm's module imports this one: the class is named by its path, imported on first use.
ALGORITHM_CLASS = "rllib_rpp.reinforce_pp.reinforce_pp:ReinforcePP"


class ReinforcePPConfig(KeepsSetValues, AlgorithmConfig):
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
        # RLlib settings this algorithm fixes.
        self.env = SingleTurnTextEnv
        self.env_runner_cls = TextEnvRunner
        self.num_env_runners = 0
        self.normalize_actions = False
        self.clip_actions = False
        self.add_default_connectors_to_learner_pipeline = False
        # Every option's default, from the option table (RLlib's own included: REINFORCE++ defaults).
        for option in options.OPTIONS:
            setattr(self, option.name, copy.deepcopy(option.default))
        self._model_config = {"model": options.default("model"), "dtype": options.default("dtype")}

    training = override(AlgorithmConfig)(section_setter(
        "training", "Sets the REINFORCE++ training options (and RLlib's: lr, grad_clip, gamma, num_epochs, "
        "minibatch_size [completions per learner], shuffle_batch_per_epoch, ...).", AlgorithmConfig.training))
    generation = section_setter("generation", "Sets how env runners generate.")
    evaluation = override(AlgorithmConfig)(section_setter(
        "evaluation", "Sets the greedy held-out evaluation (and RLlib's evaluation options).",
        AlgorithmConfig.evaluation))
    rewards = section_setter("rewards", "Sets where and how the reward step runs.")

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
    def sharded(self) -> bool:
        """Whether the learners shard the policy and the reference (FSDP2 over several learners), decided once."""
        return self.learner_strategy == "fsdp" and self.num_learners > 1

    @property
    def kl_estimator_used(self) -> str:
        return self.kl_estimator or ("k2" if self.kl_placement_used == "loss" else "k1")

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "entropy_coef": self.entropy_coef,
                # No π_old pass: the training forward measures the entropy instead.
                "entropy_in_forward": self.old_logprobs_used == "sampler",
                "logprob_chunk_tokens": self.logprob_chunk_tokens, "sharded": self.sharded}

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
