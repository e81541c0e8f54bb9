"""REINFORCE++ (Hu et al., 2025) on RLlib's new API stack: the algorithm (§ = docs/algorithm.md).

One iteration (`training_step`):
1. sample: every env runner generates its share of `num_prompts_per_iteration` prompts x
   `num_samples_per_prompt` completions in one batched call and rewards them (reward step);
   with `max_rollout_staleness` >= 1, runners generate the next batch while the learners train
   on this one (async rollouts, `rollouts.py`);
2. on the driver, over the WHOLE batch: truncation policy, reward processing (§4) and the
   estimator's per-prompt baseline (§6) -> one score per sequence (`core.scoring`), then the
   completions are ordered into token-balanced learner shards (`core.balance`);
3. learners: π_ref and π_old log-probs (π_old recomputed, or the sampler's), token-level KL
   shaping, returns, globally whitened advantages (`core.batch`), then `num_epochs` passes of
   PPO-clip mini-batch updates, each run as token-budget micro-batches with accumulated
   gradients (`core.update`, `core.loss`); β adapts if a KL target is set;
4. the new weights go to every env runner before the next sample (async: when the runners hand
   in their batch): directly, by the vLLM engines' broadcast (`weight_sync.py`), or through
   Ray's object store.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)
from ray.tune import PlacementGroupFactory
from ray.tune.registry import register_trainable

from envs.prompts import load_prompt_rows
from rllib_rpp import functional as F
from rllib_rpp import schema as S
from rllib_rpp.checkpoints import resolve_for_restore, save_atomically
from rllib_rpp.core.balance import balanced_order
from rllib_rpp.core.scoring import score_batch
from rllib_rpp.env_runners.reward_workers import start_reward_workers, stop_reward_workers
from rllib_rpp.heap import freeze_built_objects, thaw
from rllib_rpp.reinforce_pp.curriculum_driver import CurriculumDriver
from rllib_rpp.reinforce_pp.dynamic_sampling import fill_batch, trim_for_update
from rllib_rpp.reinforce_pp.errors import LearnersTimedOut, raise_user_errors, returning_user_errors
from rllib_rpp.reinforce_pp.no_update import NoUpdateNotice, all_skipped, no_informative_group
from rllib_rpp.reinforce_pp.reinforce_pp_config import ReinforcePPConfig
from rllib_rpp.reinforce_pp.rollouts import AsyncRollouts, sample_sync
from rllib_rpp.weight_sync.driver import EngineWeightSync
from rpp_hub.models import load_causal_lm, load_tokenizer

logger = logging.getLogger(__name__)
_POLICY = f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}/{DEFAULT_MODULE_ID}"


def check_cluster_resources(algo_class, config) -> None:
    """Refuse a layout that asks for more CPUs/GPUs than the Ray cluster has at all (otherwise
    the actors wait for resources that never come), naming both."""
    import ray

    if not ray.is_initialized():
        ray.init()
    need = algo_class.default_resource_request(config).required_resources
    have = ray.cluster_resources()
    short = [f"{need[k]:g} {k}s (the cluster has {have.get(k, 0):g})" for k in ("CPU", "GPU")
             if need.get(k, 0) > have.get(k, 0) + 1e-9]
    if short:
        raise ValueError(
            f"this layout needs {' and '.join(short)}: num_env_runners={config.num_env_runners} x "
            f"{config.num_cpus_per_env_runner} CPU / {config.num_gpus_per_env_runner} GPU, num_learners="
            f"{config.num_learners} x {config.num_gpus_per_learner} GPU, plus the driver. Lower them, or start Ray "
            f"with more resources")


def _tokens(episode) -> int:
    """Prompt + response tokens of a one-step text episode."""
    obs = episode.get_observations(0)
    return int(obs["attention_mask"].sum() + episode.get_extra_model_outputs(S.RESPONSE_MASK, 0).sum())


class ReinforcePP(Algorithm):
    """REINFORCE++: critic-free PPO-style policy optimisation for language models."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> ReinforcePPConfig:
        return ReinforcePPConfig()

    @override(Algorithm)
    def setup(self, config) -> None:
        check_cluster_resources(self, config)  # before RLlib creates actors that would wait forever
        super().setup(config)
        self._empty_iterations = 0
        self._learner_version = self._pushed_version = 0  # updates done / pushed to the runners
        self._async = AsyncRollouts(self) if self.config.max_rollout_staleness else None
        engine = self.config.weight_transfer_used
        self._engine_sync = EngineWeightSync(self, engine) if engine else None
        self.reward_moments = F.RunningMoments()
        self._shuffle_rng = np.random.default_rng(self.config.seed)
        self.run_info: dict[str, Any] = {}  # the driver's: run dir, tracker run ids, training time
        self._last_eval = None
        self._no_update = NoUpdateNotice()  # iterations with nothing to learn from say so
        self.curriculum = CurriculumDriver(self)  # a task mixture's difficulty levels (none: does nothing)
        self.reward_workers = start_reward_workers(self.config) if self.config.num_reward_workers else []
        if self.reward_workers:
            self._give_reward_workers()
        freeze_built_objects()  # the local runner's and learner's models live as long as this algorithm

    def _give_reward_workers(self, ids=None) -> None:
        workers = self.reward_workers
        self.env_runner_group.foreach_env_runner(lambda runner: runner.set_reward_workers(workers),
                                                 remote_worker_ids=ids, local_env_runner=ids is None)

    @override(Algorithm)
    def stop(self) -> None:
        super().stop()
        thaw()
        if getattr(self, "reward_workers", None):  # their reward processes first: nothing is left running
            stop_reward_workers(self.reward_workers)
            self.reward_workers = []

    @classmethod
    @override(Algorithm)
    def default_resource_request(cls, config):
        # RLlib's bundles, plus one per reward worker (Tune reserves them in the trial's group).
        factory = super().default_resource_request(config)
        cfg = cls.get_default_config().update_from_dict(config) if isinstance(config, dict) else config
        extra = [{"CPU": cfg.num_cpus_per_reward_worker, "GPU": cfg.num_gpus_per_reward_worker}
                 for _ in range(cfg.num_reward_workers)]
        return PlacementGroupFactory(factory.bundles + extra, strategy=factory.strategy) if extra else factory

    @override(Algorithm)
    def training_step(self) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            if cfg.dynamic_sampling:
                episodes, runner_metrics, stats = fill_batch(self._draw, cfg.num_prompts_per_iteration,
                                                             cfg.max_sampling_rounds)
                self.metrics.log_dict(stats, key=("reinforce_pp", "dynamic_sampling"), window=1)
            else:
                episodes, runner_metrics = self._draw(cfg.num_prompts_per_iteration, new_weights_next=True)
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)
        self.curriculum.after_sample(episodes, self.iteration + 1)
        minibatch_size = cfg.minibatch_size
        if cfg.dynamic_sampling and episodes:  # fewer groups: smaller mini-batches, the same steps
            full = cfg.num_prompts_per_iteration * cfg.num_samples_per_prompt // max(1, cfg.num_learners)
            steps = full // (cfg.minibatch_size or full)
            episodes, minibatch_size = trim_for_update(episodes, learners=max(1, cfg.num_learners), steps=steps)
        if not episodes and (not cfg.dynamic_sampling or not runner_metrics):
            return self._fail_without_runners()
        if why := (all_skipped(episodes) if episodes else no_informative_group(stats)):
            self.metrics.log_value(("reinforce_pp", "iteration", "updated"), 0.0, window=1)
            return self._no_update(self.iteration + 1, why)
        self._empty_iterations = 0
        t1 = time.perf_counter()
        self._score(episodes)
        if cfg.shuffle_batch_per_epoch:  # RLlib reshuffles rows between epochs; the first epoch is shuffled here,
            # a prompt's samples kept together so that a mini-batch computes each prompt once (`core.logprobs`).
            groups = [e.custom_data[S.GROUP_ID] for e in episodes]
            rank = dict(zip(dict.fromkeys(groups), self._shuffle_rng.permutation(len(set(groups))).tolist()))
            episodes = [episodes[i] for i in sorted(range(len(episodes)), key=lambda i: (rank[groups[i]], i))]
        if cfg.num_learners > 1:  # equal completions and about equal tokens per learner
            episodes = [episodes[i] for i in balanced_order([_tokens(e) for e in episodes], cfg.num_learners)]
        t2 = time.perf_counter()
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            results = self.learner_group.update(
                episodes=episodes,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                    (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)},
                num_epochs=cfg.num_epochs,
                minibatch_size=minibatch_size,
                shuffle_batch_per_epoch=cfg.shuffle_batch_per_epoch,
            )
        self.metrics.aggregate(results, key=LEARNER_RESULTS)
        self._learner_version += 1
        t3 = time.perf_counter()
        if self._async is None:  # async: pushed when the runners hand in their next batch
            with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
                self._push_newer_weights()
        t4 = time.perf_counter()
        # This iteration's phases (RLlib's own timers are smoothed averages).
        self.metrics.log_dict({"sample_s": t1 - t0, "score_s": t2 - t1, "update_s": t3 - t2, "sync_s": t4 - t3,
                               "completions_per_s": len(episodes) / (t4 - t0), "updated": 1.0},
                              key=("reinforce_pp", "iteration"), window=1)
        if cfg.greedy_eval_interval:
            # Evaluate on the first iteration and every `greedy_eval_interval`; report the latest
            # evaluation every iteration (Tune schedulers need the metric in every result).
            if self._last_eval is None or (self.iteration + 1) % cfg.greedy_eval_interval == 0:
                self._last_eval = {**self.evaluate_greedy(), "at_iteration": self.iteration + 1}
            self.metrics.log_dict(self._last_eval, key="greedy_eval", window=1)

    def _draw(self, num_prompts: int, new_weights_next: bool = False) -> tuple[list, list]:
        """One batch of rollouts: a synchronous sample of `num_prompts` prompts, or (async) the
        batch in flight, a whole iteration's (too stale a batch comes back empty)."""
        if self._async is None:
            return sample_sync(self, num_prompts, new_weights_next=new_weights_next)
        episodes, runner_metrics, stats = self._async.next_batch(
            self._learner_version, self.config.max_rollout_staleness, self._push_newer_weights)
        self.metrics.log_dict(stats, key=("reinforce_pp", "async"), window=1)
        return episodes, runner_metrics

    def _push_newer_weights(self) -> None:
        if self._learner_version > self._pushed_version:
            self._sync_weights()
            self._pushed_version = self._learner_version

    def _fail_without_runners(self) -> None:
        """An iteration sampled nothing: runners failed and were ignored. Stop once none is left
        (or after 10 empty iterations in a row) instead of reporting NaN metrics forever."""
        self._empty_iterations += 1
        group = self.env_runner_group
        total = group.num_remote_env_runners()
        if total and (group.num_healthy_remote_workers() == 0 or self._empty_iterations >= 10):
            hint = ("they failed again after being restarted: see the env runners' logs"
                    if self.config.restart_failed_env_runners else "with ignore_env_runner_failures failed runners "
                    "stay down; set .fault_tolerance(restart_failed_env_runners=True) to restart them")
            raise RuntimeError(
                f"no env runner is sampling: {total - group.num_healthy_remote_workers()} of {total} failed and "
                f"{self._empty_iterations} iteration(s) in a row sampled nothing; {hint}")

    def _sync_weights(self) -> None:
        """New weights to every env runner before the next sample."""
        group = self.env_runner_group
        if group.num_remote_env_runners() == 0 and self.learner_group.is_local:
            # Runner and learner share this process: hand the tensors over directly
            # (RLlib's sync_weights would pickle them through the object store first).
            state = self.learner_group.get_state(components=_POLICY, inference_only=True)[COMPONENT_LEARNER]
            self.env_runner.set_state(state)
        elif self._engine_sync is not None:  # one broadcast from learner rank 0 (vLLM's engines)
            self._engine_sync.sync(self._learner_version, fallback=self._sync_through_object_store)
        else:
            self._sync_through_object_store()

    def _sync_through_object_store(self) -> None:
        self._stage_learner_state(optimizer=False)
        self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group,
                                           policies=[DEFAULT_MODULE_ID], inference_only=True,
                                           timeout_seconds=self.config.weight_sync_timeout_s)

    def _stage_learner_state(self, optimizer: bool) -> None:
        """Sharded learners gather their full state together before RLlib reads it from learner 0."""
        if self.config.sharded:
            self._on_learners(lambda learner: learner.stage_full_state(optimizer=optimizer))

    @override(Algorithm)
    def restore_env_runners(self, env_runner_group) -> list[int]:
        """After RLlib restarts a failed env runner, give it the current weights."""
        restored = env_runner_group.probe_unhealthy_env_runners() if self.config.is_online else []
        if restored:
            if self.reward_workers:
                self._give_reward_workers(restored)
            self.curriculum.push(restored)
            if self._engine_sync is not None:  # the next sync forms the group again, restored runners in it
                self._engine_sync.reset()
            self._stage_learner_state(optimizer=False)
            env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group,
                                          policies=[DEFAULT_MODULE_ID], to_worker_indices=restored,
                                          inference_only=True, timeout_seconds=self.config.weight_sync_timeout_s)
        return restored

    def evaluate_greedy(self, prompts=None) -> dict[str, float]:
        """Greedy completions of held-out prompts (default: config.greedy_eval_prompts) with
        the current weights, rewarded by the env's reward step. For an exact-match reward,
        `reward_mean` is the accuracy."""
        source = self.curriculum.eval_source(prompts if prompts is not None else self.config.greedy_eval_prompts)
        if source is None:
            raise ValueError("no evaluation prompts: pass `prompts` or set "
                             "config.evaluation(greedy_eval_prompts=...)")
        rows = load_prompt_rows(source, prompt_key=self.config.env_config.get("prompt_key", "prompt"))
        group = self.env_runner_group
        remote = group.healthy_env_runner_ids()
        out = group.foreach_env_runner(returning_user_errors(lambda runner: runner.evaluate_greedy(rows)),
                                       remote_worker_ids=remote[:1], local_env_runner=not remote)
        return raise_user_errors(out)[0]

    def _on_learners(self, fn, timeout_s: float | None = None):
        """fn(learner) on every learner at once (state may be spread over them); the answer of the
        first learner that gave one (collective calls answer on rank 0 only). With `timeout_s`, a
        learner that has not answered by then raises LearnersTimedOut (its call stays queued)."""
        group = self.learner_group
        if group.is_local:
            return fn(group._learner)
        answers = group.foreach_learner(fn, timeout_seconds=timeout_s).result_or_errors
        if len(answers) < self.config.num_learners:
            raise LearnersTimedOut(f"{self.config.num_learners - len(answers)} of {self.config.num_learners} learners "
                                   f"did not answer within {timeout_s:g} s")
        results = [r.get() for r in answers]
        return next((r for r in results if r), results[0])

    def get_policy_state_dict(self) -> dict[str, torch.Tensor]:
        """A snapshot (copies) of the trained policy's master weights under Hugging Face names
        (LoRA adapters merged)."""
        return {k: v.clone() for k, v in self._on_learners(lambda learner: learner.policy_state_dict()).items()}

    def export_policy(self, path: str | Path) -> Path:
        """Write the trained policy (master weights, LoRA merged) and its tokenizer with
        `save_pretrained`: loadable by transformers (`AutoModelForCausalLM.from_pretrained(path)`)
        and vLLM (`LLM(path)`). With LoRA the adapter alone goes to `path/adapter` (peft)."""
        mc = self.config.model_config
        model = load_causal_lm(mc["model"], dtype=self.config.dtypes["param"])
        model.load_state_dict(self.get_policy_state_dict(), strict=True)
        path = Path(path).absolute()
        model.save_pretrained(path)
        load_tokenizer(self.config.env_config.get("model", mc["model"])).save_pretrained(path)
        if mc.get("lora"):
            self._on_learners(lambda learner: learner.save_adapter(path / "adapter"))
        return path

    def _score(self, episodes) -> None:
        """Driver step over the whole batch: truncation policy, §4 processing, §6 baselines."""
        cfg = self.config
        truncated = torch.tensor([e.custom_data[S.TRUNCATED] for e in episodes])
        scored = score_batch(
            torch.tensor([e.get_rewards(0) for e in episodes], dtype=torch.float64), truncated,
            torch.tensor([e.custom_data[S.GROUP_ID] for e in episodes]), estimator=cfg.advantage_estimator,
            truncated_response=cfg.truncated_response, truncated_reward=cfg.truncated_reward,
            normalize=cfg.reward_normalization, running=self.reward_moments, clip_range=cfg.reward_clip,
            scale=cfg.reward_scale,
            skipped=torch.tensor([bool(e.custom_data.get(S.REWARD_SKIPPED, False)) for e in episodes]),
            lengths=torch.tensor([int(e.get_extra_model_outputs(S.RESPONSE_MASK, 0).sum()) for e in episodes]),
            overlong=((cfg.max_new_tokens, cfg.overlong_buffer_len, cfg.overlong_penalty)
                      if cfg.overlong_buffer_len else None))
        for e, s, w in zip(episodes, scored.scores.tolist(), scored.loss_weights.tolist()):
            e.custom_data[S.SCORE] = s
            e.custom_data[S.LOSS_WEIGHT] = w
        self.metrics.log_dict({"reward_processed_mean": scored.processed.mean().item(),
                               "score_std": scored.scores.std(unbiased=False).item(),
                               "truncated_fraction": truncated.double().mean().item()},
                              key="reinforce_pp", window=1)

    @override(Algorithm)
    def save_to_path(self, path=None, *, state=None, filesystem=None, use_msgpack=False) -> str:
        """RLlib's checkpoint, written atomically (the previous checkpoint survives any
        interruption), with the policy weights as safetensors and a verifying manifest
        (`rllib_rpp.checkpoints`). Relative paths work."""
        policy = self.get_policy_state_dict()
        # RLlib writes the learners' state from learner 0 alone: sharded state is gathered first.
        self._stage_learner_state(optimizer=True)
        write = super().save_to_path
        if filesystem is not None or (path is not None and "://" in str(path)):  # remote storage: RLlib's way
            return write(path, state=state, filesystem=filesystem, use_msgpack=use_msgpack)
        path = path if path is not None else tempfile.mkdtemp(prefix="rllib_rpp_ckpt_")
        return save_atomically(path, lambda tmp: write(tmp, state=state, use_msgpack=use_msgpack), policy)

    @override(Algorithm)
    def restore_from_path(self, path, *args, **kwargs) -> None:
        # Verified against the checkpoint's manifest first; relative paths work.
        super().restore_from_path(resolve_for_restore(path) if not kwargs.get("filesystem") else path,
                                  *args, **kwargs)

    @classmethod
    @override(Algorithm)
    def from_checkpoint(cls, path, filesystem=None, **kwargs) -> ReinforcePP:
        return super().from_checkpoint(resolve_for_restore(path) if filesystem is None else path,
                                       filesystem=filesystem, **kwargs)

    @override(Algorithm)
    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        if self._check_component("learner_group", components, not_components):
            self._stage_learner_state(optimizer=True)
        state = super().get_state(components, not_components=not_components, **kwargs)
        state["reinforce_pp"] = {"reward_moments": self.reward_moments.get_state(),
                                 "shuffle_rng": self._shuffle_rng.bit_generator.state,
                                 "learner_version": self._learner_version, "run_info": dict(self.run_info),
                                 "curriculum": self.curriculum.get_state()}
        return state

    @override(Algorithm)
    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if "reinforce_pp" in state:
            self.reward_moments.set_state(state["reinforce_pp"]["reward_moments"])
            self._shuffle_rng.bit_generator.state = state["reinforce_pp"]["shuffle_rng"]
            self._learner_version = self._pushed_version = state["reinforce_pp"].get("learner_version", 0)
            self.run_info = dict(state["reinforce_pp"].get("run_info", {}))
            self.curriculum.set_state(state["reinforce_pp"].get("curriculum"))
        if self._async is not None and self._async.pending:  # async: the batch in flight is discarded
            self._async.discard()
        # Runners must sample with the restored weights, not the ones they were built with.
        self._sync_weights()


__all__ = ["ReinforcePP", "ReinforcePPConfig"]

# Tune can refer to the algorithm by name: tune.Tuner("ReinforcePP", ...).
register_trainable("ReinforcePP", ReinforcePP)
