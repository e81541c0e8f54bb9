"""TextEnvRunner: samples a whole iteration's prompts x samples in ONE generate call.

Per `sample()`: draw `num_prompts` prompts from the text env, generate
`num_samples_per_prompt` completions each with the configured sampler (transformers or vLLM),
reward all of them in one call of the env's reward step (`rewards_for`), and return one
single-step `SingleAgentEpisode` per completion carrying token ids, the response and loss masks
and the sampler's per-token log-probs. The learner cannot tell which sampler produced them.

Weights arrive after every learner update through RLlib's `set_state` and go straight into the
sampler's `load_weights` (transformers `load_state_dict`, or vLLM's reload path); remote vLLM
runners with a weight-transfer engine instead take learner rank 0's broadcast
(`init_weight_transfer`, `receive_weights`). Each sample is tagged with the weights version it
came from.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import ray
import torch
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.env import INPUT_ENV_SINGLE_SPACES, INPUT_ENV_SPACES
from ray.rllib.env.env_context import EnvContext
from ray.rllib.env.env_runner import EnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.annotations import override
from ray.rllib.utils.checkpoints import Checkpointable
from ray.rllib.utils.metrics import (
    EPISODE_LEN_MEAN,
    EPISODE_RETURN_MAX,
    EPISODE_RETURN_MEAN,
    EPISODE_RETURN_MIN,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_EPISODES,
    NUM_EPISODES_LIFETIME,
    WEIGHTS_SEQ_NO,
)

from envs.prompts import encode_prompts
from envs.reward_guard import GuardStats
from envs.rewards import RewardResult
from envs.text_env import SingleTurnTextEnv
from rllib_rpp import schema as S
from rllib_rpp.env_runners.reward_workers import (
    collect_scores,
    reward_env_config,
    reward_remotely,
    submit_scoring,
)
from rllib_rpp.env_runners.task_metrics import correct_at, log_task_metrics, task_summary
from rllib_rpp.heap import freeze_built_objects
from rllib_rpp.samplers import Generation, SamplingParams, make_sampler, sampler_class

logger = logging.getLogger(__name__)


class TextEnvRunner(EnvRunner, Checkpointable):
    def __init__(self, *, config, **kwargs):
        super().__init__(config=config, **kwargs)
        self.worker_index = kwargs.get("worker_index") or 0
        self._env_creator = kwargs.get("env_creator")
        self.num_env_steps_sampled_lifetime = 0
        self._weights_seq_no = 0
        self._pending_weights: dict | None = None
        self._draws = 0
        self._last_sample_end = 0.0
        self.sampler = None
        self._reward_workers: list = []
        self.env: SingleTurnTextEnv | None = None
        self.make_env()
        # The local runner of an algorithm with remote runners never samples: build lazily.
        if self.worker_index > 0 or self.config.num_env_runners == 0:
            self._ensure_sampler()

    # -- construction ----------------------------------------------------------------------
    @override(EnvRunner)
    def make_env(self) -> None:
        cfg = self.config
        env_config = dict(cfg.env_config or {})
        model = cfg.model_config.get("model", "tiny-arith")
        env_config.setdefault("model", model)
        if env_config.setdefault("max_new_tokens", cfg.max_new_tokens) != cfg.max_new_tokens:
            raise ValueError(
                f"env_config max_new_tokens={env_config['max_new_tokens']} differs from the generation "
                f"setting max_new_tokens={cfg.max_new_tokens}; set it once, with .generation(max_new_tokens=...)"
            )
        num_shards = max(1, cfg.num_env_runners)
        env_config.update(shard_index=max(0, self.worker_index - 1) % num_shards, num_shards=num_shards)
        if cfg.seed is not None:
            env_config["seed"] = cfg.seed
        env_config.update(reward_env_config(cfg))  # `.rewards()`: timeout, error policy, dtype
        ctx = EnvContext(env_config, worker_index=self.worker_index, num_workers=cfg.num_env_runners)
        env = self._env_creator(ctx) if self._env_creator else SingleTurnTextEnv(ctx)
        env = getattr(env, "unwrapped", env)
        if not isinstance(env, SingleTurnTextEnv):
            raise TypeError(f"TextEnvRunner needs a SingleTurnTextEnv (or a subclass), got {type(env).__name__}")
        self.env = env

    def _ensure_sampler(self):
        if self.sampler is None:
            cfg = self.config
            mc = cfg.model_config
            extra = dict(cfg.sampler_kwargs or {})
            kind = sampler_class(cfg.sampler)  # what it can do, before it is built
            if kind.sized_by_sequence:
                extra.setdefault("required_len", self.env.max_prompt_tokens + cfg.max_new_tokens)
                extra.setdefault("seed", (cfg.seed or 0) + self.worker_index)
            if kind.weight_transfer_engines and self.worker_index > 0:  # remote: learner rank 0 broadcasts
                extra.setdefault("transfer_engine", cfg.weight_transfer_used)
            self.sampler = make_sampler(
                cfg.sampler, mc.get("model", "tiny-arith"), eos_token_id=self.env.eos_token_id,
                pad_token_id=self.env.pad_token_id, dtype=mc.get("dtype", "float32"), **extra,
            )
            if self._pending_weights is not None:
                self.sampler.load_weights(self._pending_weights, self._weights_seq_no)
                self._pending_weights = None
            if self.worker_index > 0:  # an actor of its own, alive until the algorithm stops
                freeze_built_objects()
        return self.sampler

    # -- sampling --------------------------------------------------------------------------
    @override(EnvRunner)
    def sample(self, *, num_prompts: int | None = None, explore: bool = True, new_weights_next: bool = False,
               **kwargs) -> list[SingleAgentEpisode]:
        """`new_weights_next`: the algorithm sends new weights before this runner's next sample
        (synchronous training), so a sleeping sampler may drop its weights until then."""
        cfg = self.config
        sampler = self._ensure_sampler()
        k = num_prompts or cfg.num_prompts_per_iteration // max(1, cfg.num_env_runners)
        n = cfg.num_samples_per_prompt if explore else 1
        prompts = self.env.next_prompts(k)
        idle_s = time.perf_counter() - self._last_sample_end if self._last_sample_end else 0.0
        params = SamplingParams(n=n, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                top_p=cfg.top_p, greedy=not explore, ignore_eos=cfg.ignore_eos)
        sleeping = bool((cfg.sampler_kwargs or {}).get("enable_sleep_mode"))
        overlap = bool(self._reward_workers) and cfg.overlap_scoring and not sleeping and k >= 2
        chunks = [prompts[: k // 2], prompts[k // 2:]] if overlap else [prompts]
        t0 = time.perf_counter()
        gens, pending = [], []
        for j, chunk in enumerate(chunks):
            if new_weights_next and j == len(chunks) - 1:  # the promise covers the last generate
                sampler.expect_weight_reload()
            gens.append(sampler.generate([p.input_ids for p in chunk], params))
            if overlap:  # scored on the reward workers while the next half is generated
                done = sum(len(g.token_ids) for g in gens[:-1])
                inputs = self.env.reward_inputs([p for p in chunk for _ in range(n)], gens[-1].token_ids)
                pending += submit_scoring(self._reward_workers, inputs, len(gens[-1].token_ids), offset=done)
        gen = Generation(*(sum((getattr(g, f) for g in gens), []) for f in ("token_ids", "logprobs", "finished")))
        t1 = time.perf_counter()
        expanded = [p for p in prompts for _ in range(n)]
        rewards = collect_scores(pending) if overlap else self._rewards(expanded, gen.token_ids)
        t2 = time.perf_counter()  # with overlap: only the scoring that did not hide behind generation
        episodes = self._episodes(expanded, gen, rewards, n)
        self._log(gen, rewards, len(prompts), sample_s=t1 - t0, reward_s=t2 - t1)
        tasks = [p.columns.get("task") for p in expanded]
        if any(t is not None for t in tasks):  # per task: reward, accuracy, response length
            log_task_metrics(self.metrics, task_summary(tasks, rewards.rewards, [len(t) for t in gen.token_ids],
                                                        correct_at(self.env)))
        self.metrics.log_value(("timers", "idle_s"), idle_s, reduce="mean")  # since the previous sample
        self._last_sample_end = time.perf_counter()
        return episodes

    def _rewards(self, prompts, completion_ids) -> RewardResult:
        """The reward step: on the reward workers when there are any (`set_reward_workers`), else
        this runner's env."""
        if self._reward_workers:
            return reward_remotely(self._reward_workers, self.env.reward_inputs(prompts, completion_ids),
                                  len(completion_ids))
        return self.env.rewards_for(prompts, completion_ids)

    def set_reward_workers(self, workers: list) -> None:
        """The algorithm's reward workers (Ray actors), shared by every runner."""
        self._reward_workers = list(workers)

    def _episodes(self, prompts, gen: Generation, result: RewardResult, n: int) -> list[SingleAgentEpisode]:
        env, R, B = self.env, self.env.max_new_tokens, len(gen.token_ids)
        obs_space, act_space = env.observation_space, env.action_space
        base = (self.worker_index << 40) + self._draws
        self._draws += len(prompts) // n
        rewards = result.rewards
        skipped = result.skipped if result.skipped is not None else np.zeros(len(rewards), bool)
        # Every row's arrays at once (each episode holds views of one row): per-row allocations were
        # half of this function's time at the tiny shape.
        lengths = np.fromiter(map(len, gen.token_ids), np.int64, B)
        mask = (np.arange(R) < lengths[:, None]).astype(np.float32)  # [B, R]
        actions = np.full((B, R), env.pad_token_id, np.int64)
        logprobs = np.zeros((B, R), np.float32)
        for i, ids in enumerate(gen.token_ids):
            actions[i, : len(ids)] = ids
            if gen.logprobs:
                logprobs[i, : len(ids)] = gen.logprobs[i]
        # Every sampled token is the policy's: the loss mask equals the response mask here (a
        # response with inserted tokens, e.g. tool output, would have holes in it).
        loss_mask = mask.copy()
        observations: dict[int, dict] = {}  # a group's samples share their prompt's observation
        episodes = []
        for i, prompt in enumerate(prompts):
            obs = observations.get(id(prompt))
            if obs is None:
                obs = observations[id(prompt)] = env.observation(prompt)
            # One step: reset observation, the whole response as the action, the reward.
            ep = SingleAgentEpisode(
                observations=[obs, obs], actions=[actions[i]], rewards=[0.0 if skipped[i] else float(rewards[i])],
                infos=[{"prompt_index": prompt.index}, {}], terminated=True, len_lookback_buffer=0,
                extra_model_outputs={S.RESPONSE_MASK: [mask[i]], S.LOSS_MASK: [loss_mask[i]],
                                     S.SAMPLER_LOGPROBS: [logprobs[i]]},
                observation_space=obs_space, action_space=act_space,
            )
            ep.custom_data.update({S.GROUP_ID: base + i // n, S.TRUNCATED: not gen.finished[i],
                                   S.REWARD_SKIPPED: bool(skipped[i]), S.TASK: prompt.columns.get("task"),
                                   S.WEIGHTS_VERSION: self._weights_seq_no})
            episodes.append(ep)
        return episodes

    def _log(self, gen: Generation, rewards, num_prompts: int, *, sample_s: float, reward_s: float) -> None:
        m, n = self.metrics, len(gen.token_ids)
        lengths = np.array([len(t) for t in gen.token_ids], np.float64)
        r = rewards.rewards[np.isfinite(rewards.rewards)]  # skipped samples have no reward
        r = r if r.size else np.zeros(1)
        m.log_value(NUM_ENV_STEPS_SAMPLED, n, reduce="sum")
        m.log_value(NUM_EPISODES, n, reduce="sum")
        m.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, n, reduce="lifetime_sum")
        m.log_value(NUM_EPISODES_LIFETIME, n, reduce="lifetime_sum")
        self.num_env_steps_sampled_lifetime += n
        m.log_value(EPISODE_RETURN_MEAN, float(r.mean()), reduce="mean")
        m.log_value(EPISODE_RETURN_MIN, float(r.min()), reduce="min")
        m.log_value(EPISODE_RETURN_MAX, float(r.max()), reduce="max")
        m.log_value(EPISODE_LEN_MEAN, 1, reduce="mean")
        m.log_value("reward_std", float(r.std()), reduce="mean")
        for name, values in rewards.components.items():
            m.log_value(("reward", name), float(np.nanmean(values)) if np.isfinite(values).any() else 0.0,
                        reduce="mean")
        m.log_value("response_length_mean", float(lengths.mean()), reduce="mean")
        m.log_value("response_length_max", float(lengths.max()), reduce="max")
        m.log_value("truncated_fraction", 1.0 - float(np.mean(gen.finished)), reduce="mean")
        m.log_value(S.WEIGHTS_VERSION, self._weights_seq_no, reduce="max")
        m.log_value(("timers", "sample_s"), sample_s, reduce="sum")
        m.log_value(("timers", "reward_s"), reward_s, reduce="sum")
        stats = rewards.stats
        for key in GuardStats.COUNTS:  # the reward calls' failures
            m.log_value(("reward_calls", key), getattr(stats, key) if stats else 0, reduce="sum")
        m.log_value("completions_per_s", n / max(sample_s, 1e-9), reduce="mean")
        m.log_value("tokens_per_s", float(lengths.sum()) / max(sample_s, 1e-9), reduce="mean")

    # -- weight-transfer engine (vLLM) ------------------------------------------------------
    # Both return None, or the error as text: RLlib ends a runner whose remote call raises, and
    # a failed transfer leaves this one serving its old weights, fit to go on.
    def init_weight_transfer(self, **group) -> str | None:
        """Join learner rank 0's weight-transfer group (see rllib_rpp.weight_sync.engines)."""
        try:
            self._ensure_sampler().init_weight_transfer(**group)
        except Exception as e:  # noqa: BLE001 - reported to the driver
            return f"{type(e).__name__}: {e}"
        return None

    def receive_weights(self, meta: dict, version: int) -> str | None:
        """Take one broadcast of new weights; the next samples carry `version`."""
        try:
            self._ensure_sampler().receive_weights(meta, version)
        except Exception as e:  # noqa: BLE001 - reported to the driver
            return f"{type(e).__name__}: {e}"
        self._weights_seq_no = version
        return None

    # -- evaluation ------------------------------------------------------------------------
    def evaluate_greedy(self, rows: list[dict]) -> dict[str, float]:
        """Greedy completions of prompt `rows` with the current weights, rewarded by the env's
        reward step: mean total reward and mean of each reward function."""
        env = self.env
        cfg = env.env_config
        records = encode_prompts(rows, env.tokenizer, prompt_key=cfg.prompt_key,
                                 apply_chat_template=cfg.apply_chat_template,
                                 max_prompt_tokens=env.max_prompt_tokens, truncate=cfg.truncate_prompts)
        params = SamplingParams(n=1, max_new_tokens=self.config.max_new_tokens, greedy=True)
        gen = self._ensure_sampler().generate([r.input_ids for r in records], params)
        res = self._rewards(records, gen.token_ids)
        out = {"reward_mean": float(res.rewards.mean()), "num_prompts": len(records)}
        out.update({f"reward/{k}": float(np.nanmean(v)) for k, v in res.components.items()})
        out["response_length_mean"] = float(np.mean([len(t) for t in gen.token_ids]))
        tasks = [r.columns.get("task") for r in records]
        if any(t is not None for t in tasks):  # a held-out evaluation per task
            out["tasks"] = task_summary(tasks, res.rewards, [len(t) for t in gen.token_ids], correct_at(env))
            out["task_accuracy_mean"] = float(np.nanmean([t["accuracy"] for t in out["tasks"].values()]))
        return out

    def set_task_levels(self, levels: dict[str, int]) -> None:
        """The curriculum's levels (the algorithm's): later prompts of a task come from that level."""
        self.env.set_levels(levels)

    # -- RLlib EnvRunner / Checkpointable API ----------------------------------------------
    @override(EnvRunner)
    def get_spaces(self):
        spaces = (self.env.observation_space, self.env.action_space)
        return {INPUT_ENV_SPACES: spaces, INPUT_ENV_SINGLE_SPACES: spaces, DEFAULT_MODULE_ID: spaces}

    @override(EnvRunner)
    def get_metrics(self):
        return self.metrics.reduce()

    @override(EnvRunner)
    def assert_healthy(self):
        assert self.env is not None

    @override(Checkpointable)
    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        # Weights are not part of a runner's state: the learner owns them.
        return {
            NUM_ENV_STEPS_SAMPLED_LIFETIME: self.num_env_steps_sampled_lifetime,
            WEIGHTS_SEQ_NO: self._weights_seq_no,
            "env": self.env.get_state(),
            "draws": self._draws,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
        }

    @override(Checkpointable)
    def set_state(self, state: dict[str, Any]) -> None:
        if COMPONENT_RL_MODULE in state:
            seq_no = state.get(WEIGHTS_SEQ_NO, 0)
            if seq_no == 0 or seq_no > self._weights_seq_no:
                module_state = state[COMPONENT_RL_MODULE]
                if isinstance(module_state, ray.ObjectRef):
                    module_state = ray.get(module_state)
                module_state = module_state.get(DEFAULT_MODULE_ID, module_state)
                self._weights_seq_no = max(seq_no, self._weights_seq_no)
                weights = module_state  # the policy's inference-only state: a Hugging Face state dict
                if self.sampler is None:
                    self._pending_weights = weights
                else:
                    self.sampler.load_weights(weights, self._weights_seq_no)
        if "env" in state:  # restoring a checkpoint: the algorithm pushes the weights next
            self.env.set_state(state["env"])
            self._draws = state["draws"]
            torch.set_rng_state(state["torch_rng"])
            if "numpy_rng" in state:
                np.random.set_state(state["numpy_rng"])
            self._weights_seq_no = 0
        if NUM_ENV_STEPS_SAMPLED_LIFETIME in state:
            self.num_env_steps_sampled_lifetime = state[NUM_ENV_STEPS_SAMPLED_LIFETIME]

    @override(Checkpointable)
    def get_ctor_args_and_kwargs(self):
        return (), {"config": self.config}

    @override(Checkpointable)
    def get_checkpointable_components(self):
        return []

    @override(EnvRunner)
    def stop(self) -> None:
        if self.env is not None:
            self.env.close()  # the reward step's processes and connections
        if self.sampler is not None:
            self.sampler.stop()
