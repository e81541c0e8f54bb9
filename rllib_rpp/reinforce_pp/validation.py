"""Validation of REINFORCE++ options: each option against its rule in the option table
(`rllib_rpp.options`: a finite number of the right type and range, one of a set, a name a registry
resolves; a string where a number belongs, `lr="1e-4"`, is refused naming the option), then the
rules that relate several options (`cross_option_errors`, env options included) and the warnings
for valid but risky combinations (`option_warnings`); `ReinforcePPConfig.validate` runs them.
"""

from __future__ import annotations

import dataclasses

from envs.text_env import SingleTurnTextEnv, TextEnvConfig
from rllib_rpp import options
from rllib_rpp.estimators import get_estimator
from rllib_rpp.options.rules import Rule, is_int
from rllib_rpp.policy_losses import get_policy_loss
from rllib_rpp.samplers.base import sampler_class

MANY_EPOCHS = 16  # option_warnings: more passes over one batch than any recipe uses
RULES: dict[str, Rule] = options.rules()
MODEL_RULES: dict[str, Rule] = options.rules(model_config=True)
_MODEL_DEFAULTS = {o.name: o.default for o in options.MODEL_OPTIONS}


def violations(obj, rules: dict[str, Rule], get=getattr) -> list[str]:
    """One message per rule that `obj` breaks: "<option>=<value> is invalid: expected <...>"."""
    out = []
    for name, (check, expected) in rules.items():
        value = get(obj, name, None)
        if not check(value):
            out.append(f"{name}={value!r} is invalid: expected {expected}")
    return out


def config_errors(config) -> list[str]:
    """Every rule a ReinforcePPConfig breaks: each option alone, then (when each is well-formed)
    the rules relating several."""
    errors = violations(config, RULES)
    mc = config._model_config if isinstance(config._model_config, dict) else {}
    model_errors = violations(mc, MODEL_RULES, get=lambda d, k, _: d.get(k, _MODEL_DEFAULTS[k]))
    errors += [f"model_config[{m.split('=', 1)[0]!r}]={m.split('=', 1)[1]}" for m in model_errors]
    model = mc.get("model")
    if not isinstance(model, str) or not model:
        errors.append(f"model_config['model'] must name the policy (HF id, path or 'tiny-arith'), got {model!r}")
    return errors or cross_option_errors(config)


def env_config_errors(config) -> list[str]:
    """Unknown options of the built-in text env, caught on the driver (a remote runner would fail
    far less clearly)."""
    env = config.env
    if not (isinstance(env, type) and issubclass(env, SingleTurnTextEnv)
            and env.__init__ is SingleTurnTextEnv.__init__):
        return []
    known = {f.name for f in dataclasses.fields(TextEnvConfig)}
    unknown = sorted(set(config.env_config or {}) - known)
    if not unknown:
        return []
    return [f"env_config has unknown option(s) {unknown}; the text env's options are {sorted(known)}"]


def option_warnings(config) -> list[str]:
    """Valid but risky combinations: trained as asked, with a warning."""
    warnings = []
    if config.num_epochs > MANY_EPOCHS:
        warnings.append(f"num_epochs={config.num_epochs}: every epoch is one more full pass of updates over the "
                        f"same batch (~{config.num_epochs}x the update time), and the later ones train far off-policy, "
                        f"where the clip masks most tokens; REINFORCE++ uses 1 (PPO-style setups 1-4, rarely > "
                        f"{MANY_EPOCHS})")
    if config.kl_placement_used == "loss" and config.kl_estimator_used == "k3":
        warnings.append("KL estimator k3 as a loss term gives a biased gradient; k2 is recommended")
    if config.dynamic_sampling and not get_estimator(config.advantage_estimator).needs_groups:
        warnings.append(f"dynamic_sampling with advantage_estimator={config.advantage_estimator!r} (no per-prompt "
                        f"baseline): a group whose samples share one reward still has a gradient here (global "
                        f"whitening gives it a nonzero advantage), and dynamic sampling drops it anyway; DAPO's "
                        f"filter is meant for group baselines (grpo, rloo, reinforce_pp_baseline)")
    loss = get_policy_loss(config.policy_loss)
    if loss.sequence_level_clip and max(config.clip_low, config.clip_high) > 0.01:
        warnings.append(f"policy_loss={config.policy_loss!r} clips a sequence-level ratio (the mean of the token "
                        f"log-ratios), whose range is ~1e-3 (GSPO: clip_low=3e-4, clip_high=4e-4); clip_low="
                        f"{config.clip_low:g}, clip_high={config.clip_high:g} look like a token-level range and will "
                        f"almost never clip")
    exact = sampler_class(config.sampler).runs_learner_code and config.dtypes["compute"] == "float32"
    if config.old_logprobs == "sampler" and not exact:
        warnings.append("old_logprobs='sampler' takes π_old from the sampler's log-probs: exact only when the sampler "
                        "runs the learner's weights in the learner's dtype (transformers sampler, fp32); watch "
                        "learners/default_policy/logprob_mismatch_*")
    return warnings


def cross_option_errors(config) -> list[str]:
    """Rules that relate several options of a ReinforcePPConfig."""
    errors = env_config_errors(config)
    if config.kl_in_reward and config.use_kl_loss:
        errors.append("kl_in_reward=True and use_kl_loss=True would count the KL penalty twice; choose one "
                      "(kl_placement='reward' or kl_placement='loss')")
    if config.kl_placement is not None and (config.kl_in_reward is not None or config.use_kl_loss is not None):
        errors.append(f"kl_placement={config.kl_placement!r} and the older kl_in_reward/use_kl_loss flags are both "
                      f"set; use kl_placement only")
    if config.dynamic_sampling and config.num_samples_per_prompt < 2:
        errors.append(f"dynamic_sampling drops groups whose samples all got the same reward; with "
                      f"num_samples_per_prompt={config.num_samples_per_prompt} every group has one sample: use >= 2")
    if config.overlong_buffer_len > config.max_new_tokens:
        errors.append(f"overlong_buffer_len={config.overlong_buffer_len} is longer than max_new_tokens="
                      f"{config.max_new_tokens}: the penalty ramps over the budget's last overlong_buffer_len tokens")
    if config.dual_clip is not None and not get_policy_loss(config.policy_loss).supports_dual_clip:
        errors.append(f"dual_clip={config.dual_clip!r} bounds PPO-clip's loss; policy_loss={config.policy_loss!r} has "
                      f"no dual clip: set dual_clip=None")
    if get_estimator(config.advantage_estimator).needs_groups and config.num_samples_per_prompt < 2:
        errors.append(f"advantage_estimator={config.advantage_estimator!r} subtracts a per-prompt baseline and "
                      f"needs num_samples_per_prompt >= 2, got {config.num_samples_per_prompt}")
    if config.learner_strategy == "fsdp" and (config.model_config or {}).get("lora"):
        errors.append("learner_strategy='fsdp' with LoRA is not supported: LoRA keeps one frozen base in the "
                      "compute dtype and tiny optimizer state (bf16: an 8B model fits one 80 GB GPU); use "
                      "learner_strategy='ddp'")
    if (config.sampler_kwargs or {}).get("enable_sleep_mode") and not sampler_class(config.sampler).can_sleep:
        errors.append(f"sampler_kwargs enable_sleep_mode=True: sampler {config.sampler!r} cannot free its memory "
                      f"between samples (can_sleep=False)")
    if config.max_rollout_staleness and not config.num_env_runners and not config.in_evaluation:
        errors.append(f"max_rollout_staleness={config.max_rollout_staleness} needs remote env runners "
                      f"(num_env_runners >= 1) to sample while the learners train")
    if config.old_logprobs == "sampler" and config.max_rollout_staleness:
        errors.append("old_logprobs='sampler' with max_rollout_staleness > 0: a batch sampled by older weights needs "
                      "π_old recomputed (old_logprobs='recompute')")
    if config.kl_target is not None and config.kl_coef == 0:
        errors.append("kl_target needs kl_coef > 0 (the adaptive controller scales β multiplicatively)")
    if config.greedy_eval_interval and config.greedy_eval_prompts is None:
        errors.append(f"greedy_eval_interval={config.greedy_eval_interval} needs held-out prompts: set "
                      f".evaluation(greedy_eval_prompts=...)")
    errors += layout_errors(config)
    if errors or not is_int(config.num_prompts_per_iteration):
        return errors
    if config.num_prompts_per_iteration < config.num_env_runners:
        errors.append(f"num_prompts_per_iteration={config.num_prompts_per_iteration} is fewer than the "
                      f"num_env_runners={config.num_env_runners}: some runners would sample nothing")
    total = config.num_prompts_per_iteration * config.num_samples_per_prompt
    per_learner = total // max(1, config.num_learners)
    if total % max(1, config.num_learners):
        errors.append(f"the batch of {total} completions does not split evenly over {config.num_learners} learners")
    elif config.minibatch_size is not None and per_learner % config.minibatch_size:
        errors.append(f"minibatch_size={config.minibatch_size} must divide the {per_learner} completions each "
                      f"learner gets per iteration")
    return errors


def layout_errors(config) -> list[str]:
    """GPU layouts that Ray, NCCL or vLLM would break on (GPU review #3, #9)."""
    errors = []
    runner, learner = config.num_gpus_per_env_runner, config.num_gpus_per_learner
    if config.num_env_runners and config.num_learners and 0 < runner < 1 and 0 < learner < 1:  # colocated
        if runner <= 0.5 or learner > 1 - runner + 1e-9:
            errors.append(
                f"num_gpus_per_env_runner={runner:g} and num_gpus_per_learner={learner:g}: a colocated layout needs "
                f"each runner to take more than half a GPU and each learner at most the rest, so that Ray (which "
                f"packs fractional GPUs) cannot put two runners or two learners on one GPU; e.g. 0.51 and 0.49")
        if config.weight_transfer == "nccl":
            errors.append("weight_transfer='nccl' with learners and runners sharing GPUs: NCCL refuses two ranks on "
                          "one GPU; use 'gloo' (the default for colocated layouts)")
    tp = (config.sampler_kwargs or {}).get("tensor_parallel_size", 1)
    if not is_int(tp) or tp < 1:
        errors.append(f"sampler_kwargs tensor_parallel_size={tp!r} must be an int >= 1")
    elif tp > 1 and runner and runner < tp:
        errors.append(f"sampler_kwargs tensor_parallel_size={tp} needs num_gpus_per_env_runner >= {tp}, got {runner:g}")
    return errors
