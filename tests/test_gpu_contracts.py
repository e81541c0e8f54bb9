"""GPU contracts pinned on CPU (GPU review, ../shared/docs/research/gpu-path-review.md): what the
learners hand to torch.distributed, how Ray pairs learners and vLLM runners on GPUs, and the
refusals of layouts that cannot work. The vLLM-side contracts (sleep, transfer timeouts) are in
test_vllm_contracts.py."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import small_config

from envs import SingleTurnTextEnv
from rllib_rpp import schema as S
from rllib_rpp.app.presets import gpu_placement, math_reasoning
from rllib_rpp.reinforce_pp.torch import reinforce_pp_torch_learner as L


def _token_batch(B=8, P=4, R=5):
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, R + 1, (B,), generator=g)
    mask = (torch.arange(R) < lengths[:, None]).float()
    return {S.PROMPT_IDS: torch.randint(20, 60, (B, P), generator=g), S.PROMPT_MASK: torch.ones(B, P, dtype=torch.long),
            S.RESPONSE_IDS: torch.randint(20, 60, (B, R), generator=g) * mask.long(), S.RESPONSE_MASK: mask,
            S.LOSS_MASK: mask.clone(), S.SAMPLER_LOGPROBS: torch.zeros(B, R),
            S.SCORES: torch.randn(B, generator=g)}


def test_every_tensor_a_learner_hands_to_torch_distributed_is_on_its_device(monkeypatch):
    """GPU review #2: NCCL reduces CUDA tensors only, so a tensor made on the CPU (a count turned
    into a tensor) fails the first update of any multi-learner GPU layout. Every collective of a
    learner that believes it has a peer is recorded; the learner's device is then set to "meta"
    (standing in for cuda:0): the tensors it makes from Python numbers must follow it."""
    cfg = small_config()
    cfg.validate()
    learner = cfg.build_learner(env=SingleTurnTextEnv({**cfg.env_config, "max_new_tokens": cfg.max_new_tokens}))
    seen = []

    def all_reduce(tensor, op=None, **kwargs):
        seen.append(tensor.device)

    monkeypatch.setattr(L, "_world_size", lambda: 2)
    monkeypatch.setattr(L.dist, "all_reduce", all_reduce)
    learner.prepare_batch(_token_batch())  # counts, whitening moments, statistics, micro-batch agreement
    assert len(seen) >= 4 and set(seen) == {learner._device}
    seen.clear()
    monkeypatch.setattr(learner, "_device", torch.device("meta"))
    with pytest.raises(RuntimeError, match="meta tensors"):  # reading the answer back needs a real device
        learner._collectives().agree_count(3)
    assert seen == [torch.device("meta")]


def _placements(config_py: str, gpus: int) -> dict:
    """Which (fake) GPU each actor of a layout gets from Ray, created the way RLlib creates them:
    the env runners first (RLlib's Algorithm.setup), then the learners, with the config's GPU
    shares; directly and inside the placement group Tune reserves (`default_resource_request`:
    runner i in bundle i, learners anywhere in the group). Run in a fresh process: its own Ray
    cluster declares GPUs that do not exist."""
    code = textwrap.dedent(f"""
        import json, ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        from rllib_rpp import ReinforcePP
        from rllib_rpp.app.presets import general_alignment, gpu_placement, math_reasoning
        config = {config_py}
        ray.init(num_cpus=16, num_gpus={gpus}, include_dashboard=False, log_to_driver=False)

        @ray.remote(num_cpus=0)
        class Actor:
            def gpus(self):
                return [int(i) for i in ray.get_gpu_ids()]

        def place(pg=None):
            def make(share, bundle=-1):
                opts = dict(num_gpus=share)
                if pg is not None:
                    opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(pg, bundle)
                return Actor.options(**opts).remote()
            runners = [make(config.num_gpus_per_env_runner, i + 1) for i in range(config.num_env_runners)]
            runner_gpus = ray.get([a.gpus.remote() for a in runners], timeout=30)
            learners = [make(config.num_gpus_per_learner) for _ in range(config.num_learners)]
            learner_gpus = ray.get([a.gpus.remote() for a in learners], timeout=30)
            rewards = [make(config.num_gpus_per_reward_worker) for _ in range(config.num_reward_workers)]
            reward_gpus = ray.get([a.gpus.remote() for a in rewards], timeout=30)
            for a in runners + learners + rewards:
                ray.kill(a)
            return {{"runners": runner_gpus, "learners": learner_gpus, "rewards": reward_gpus}}

        out = {{"direct": place()}}
        factory = ReinforcePP.default_resource_request(config)
        pg = ray.util.placement_group(factory.bundles, strategy=factory.strategy)
        ray.get(pg.ready(), timeout=30)
        out["tune"] = place(pg)
        print("PLACEMENTS", json.dumps(out))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    lines = [line for line in run.stdout.splitlines() if line.startswith("PLACEMENTS ")]
    assert lines, run.stderr[-3000:]
    return json.loads(lines[0].removeprefix("PLACEMENTS "))


@pytest.mark.parametrize("gpus", [2, 4])
def test_colocated_layouts_pair_one_learner_with_one_runner_on_every_gpu(gpus):
    """GPU review #3: with half a GPU each, Ray packs fractional requests best-fit, so the first two
    runners shared GPU 0 and two FSDP learners shared GPU 1 (NCCL: "Duplicate GPU detected").
    The colocated shares cannot pair two actors of one kind (runner > 1/2, learner = 1 - runner),
    so every GPU gets exactly one runner and one learner, with or without Tune's placement group."""
    placed = _placements(f"math_reasoning(model='tiny-arith', colocate=True, gpus={gpus})", gpus)
    for how, p in placed.items():
        runners = [g for ids in p["runners"] for g in ids]
        learners = [g for ids in p["learners"] for g in ids]
        assert sorted(runners) == sorted(learners) == list(range(gpus)), (how, p)


def test_split_layouts_put_every_learner_and_runner_on_its_own_gpu():
    placed = _placements("math_reasoning(model='tiny-arith', gpus=4)", 4)
    for how, p in placed.items():
        every = [g for ids in p["runners"] + p["learners"] for g in ids]
        assert sorted(every) == [0, 1, 2, 3], (how, p)


def test_reward_workers_sit_next_to_the_vllm_runners_one_per_gpu():
    """The `general` preset's reward model: a reward worker on a quarter of each runner's GPU (the
    runner takes the rest), never on a learner's GPU, never two on one GPU."""
    placed = _placements("general_alignment(model='tiny-arith', reward_model='tiny-arith-rm', gpus=4)", 4)
    for how, p in placed.items():
        runners = sorted(g for ids in p["runners"] for g in ids)
        assert sorted(g for ids in p["rewards"] for g in ids) == runners, (how, p)
        assert not set(runners) & {g for ids in p["learners"] for g in ids}, (how, p)


def test_colocated_shares_that_could_pair_two_actors_of_one_kind_are_refused():
    config = math_reasoning(model="tiny-arith", colocate=True, gpus=2)
    config.learners(num_gpus_per_learner=0.5).env_runners(num_gpus_per_env_runner=0.5)
    with pytest.raises(ValueError, match=r"num_gpus_per_env_runner=0.5.*more than half"):
        config.validate()
    gpu_placement(math_reasoning(model="tiny-arith", gpus=1), 1).validate()  # the preset's own shares pass


def test_validating_a_gpu_layout_creates_no_cuda_context_in_the_driver(monkeypatch, tiny_path, caplog):
    """GPU review #9: the memory warning read the GPU's size through torch.cuda, which creates a CUDA
    context on GPU 0 in the driver (a GPU Ray has given to an actor)."""
    def touched(*args, **kwargs):
        raise AssertionError("the driver touched torch.cuda")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("get_device_properties", "mem_get_info", "init"):
        monkeypatch.setattr(torch.cuda, name, touched)
    config = math_reasoning(model="tiny-arith", gpus=2).training(max_tokens_per_microbatch=1 << 24)
    config.rl_module(model_config={**config.model_config, "gradient_checkpointing": False})
    config.validate()
    assert "GiB per GPU" in caplog.text  # the estimate is far over any GPU: the check ran


def test_colocated_learners_give_back_gradients_and_stream_their_weights_on_their_device():
    """GPU review #7: with release_memory_between_updates (colocated layouts) the gradients (4 B per
    parameter) stayed allocated while vLLM woke up. #8: the NCCL path streams each tensor cast on
    the learner's device (`hf_tensors`), equal to the CPU state dict the gloo path sends."""
    from rllib_rpp import ReinforcePP

    algo = ReinforcePP(small_config(release_memory_between_updates=True))
    try:
        algo.train()
        learner = algo.learner_group._learner
        assert all(p.grad is None for p in learner.policy_lm().parameters())
        states = [s for optim in learner._named_optimizers.values() for s in optim.state.values()]
        assert states and all(v.device.type == "cpu" for s in states for v in s.values() if v.dim())
        module = learner.policy_module()
        streamed = list(module.hf_tensors("bfloat16", learner._device))
        full = module.hf_state_dict("bfloat16")
        assert [k for k, _ in streamed] == list(full)
        assert all(v.device == learner._device and torch.equal(v, full[k]) for k, v in streamed)
    finally:
        algo.stop()


def test_the_drivers_wait_for_a_stuck_learner_is_bounded(ray_local):
    """GPU review #1b: `foreach_learner` waited for ever; a bounded call on a learner that does not
    answer raises, and a weight sync whose learners are stuck past their own abort stops the run
    instead of falling back (every later call would queue behind the stuck one)."""
    import time

    from rllib_rpp import ReinforcePP
    from rllib_rpp.reinforce_pp.errors import LearnersTimedOut
    from rllib_rpp.weight_sync.driver import EngineWeightSync

    algo = ReinforcePP(small_config().learners(num_learners=1))
    try:
        t0 = time.monotonic()
        with pytest.raises(LearnersTimedOut, match="1 of 1 learners did not answer within 1 s"):
            algo._on_learners(lambda learner: time.sleep(8), timeout_s=1)
        assert time.monotonic() - t0 < 6
    finally:
        algo.stop()

    fallbacks = []
    sync = EngineWeightSync(algo=None, engine="nccl")
    sync.algo = type("Algo", (), {"env_runner_group": type("G", (), {"healthy_env_runner_ids": lambda self: [1]})(),
                                  "config": type("C", (), {"weight_sync_timeout_s": 1.0})()})()

    def stuck(ids, version):
        raise LearnersTimedOut("1 of 1 learners did not answer within 61 s")

    sync._transfer = stuck
    with pytest.raises(RuntimeError, match="stopping the run"):
        sync.sync(1, fallback=lambda: fallbacks.append(1))
    assert not fallbacks


@pytest.mark.parametrize("runners,tp", [(1, 1), (3, 1), (2, 2), (3, 4)])
def test_transfer_group_ranks_fit_tensor_parallel_runners(runners, tp):
    """GPU review #9: vLLM ranks a worker at offset + dp·TP·PP + its TP rank (nccl_common), so with
    TP > 1 the offsets 1 + i collided. Every worker of every runner gets its own rank, the learner
    rank 0, and the group's size counts them all."""
    from rllib_rpp.weight_sync.driver import transfer_ranks

    offsets, world = transfer_ranks(runners, tp)
    ranks = [0] + [offset + r for offset in offsets for r in range(tp)]  # vLLM's formula, dp = 0, PP = 1
    assert sorted(ranks) == list(range(world))
