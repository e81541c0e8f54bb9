"""FSDP2 learners on CPU (gloo): equal to one learner and to DDP, collective checkpoints and
exports, and a failure on one learner failing all of them at once."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import resume_child
import torch
from helpers import small_config
from transformers import AutoModelForCausalLM

from rllib_rpp import ReinforcePP

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("ray_local")


def layout(learners: int, strategy: str = "ddp"):
    # One optimizer step per iteration over all 64 completions: the sharding of rows over
    # learners then changes nothing but the order of floating-point sums.
    cfg = small_config(minibatch_size=64 // learners, shuffle_batch_per_epoch=False, kl_placement="loss",
                       entropy_coef=0.01).training(learner_strategy=strategy)
    return cfg.learners(num_learners=learners) if learners > 1 else cfg


def train(cfg, iterations=2):
    algo = cfg.build_algo()
    for _ in range(iterations):
        result = algo.train()
    return algo, result


def assert_same_weights(a, b, rel=1e-5):
    for k in a:
        assert (a[k] - b[k]).norm() <= rel * a[k].norm() + 1e-12, k


def test_two_fsdp_learners_equal_one_learner_and_two_ddp_learners(tmp_path):
    one, _ = train(layout(1))
    w_one = one.get_policy_state_dict()
    one.stop()
    ddp, _ = train(layout(2, "ddp"))
    w_ddp = ddp.get_policy_state_dict()
    ddp.stop()
    sharded, result = train(layout(2, "fsdp"))
    w_fsdp = sharded.get_policy_state_dict()
    assert result["env_runners"]["weights_version"] == 1  # the 2nd batch came from synced weights
    assert_same_weights(w_one, w_fsdp)
    assert_same_weights(w_ddp, w_fsdp)
    assert any(not torch.equal(w_fsdp[k], v) for k, v in
               ReinforcePP.get_default_config().rl_module(model_config={"model": "tiny-arith"}).build_algo()
               .get_policy_state_dict().items())
    # Each learner holds about half the weights (and so half the Adam state).
    shards = sharded.learner_group.foreach_learner(
        lambda learner: sum(p.to_local().numel() for p in learner.policy_lm().parameters()))
    local = [r.get() for r in shards.result_or_errors]
    assert all(abs(n - sum(v.numel() for v in w_fsdp.values() if v.data_ptr()) / 2) / n < 0.2 for n in local)
    # What the NCCL path sends: every learner gathers each tensor in turn, cast on its device (#8).
    streamed = sharded.learner_group.foreach_learner(
        lambda learner: [(k, v.clone()) for k, v in learner.policy_module().hf_tensors("bfloat16", learner._device,
                                                                                      gather=True)])
    for got in [r.get() for r in streamed.result_or_errors]:
        assert [k for k, _ in got] == list(w_fsdp)
        assert all(torch.equal(v, w_fsdp[k].to(torch.bfloat16)) for k, v in got)
    # export_policy gathers the shards: transformers loads it and it equals get_policy_state_dict().
    out = sharded.export_policy(tmp_path / "export")
    loaded = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert all(torch.equal(loaded[k], w_fsdp[k]) for k in loaded)
    sharded.stop()


def _child(*args):
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "resume_child.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_exact_resume_across_processes_with_two_fsdp_learners(tmp_path):
    # Straight through here (saves after 2 of its 3 iterations), resumed in a new process.
    resume_child.run("straight", tmp_path / "ckpt", tmp_path / "straight.pt", "fsdp")
    _child("resume", tmp_path / "ckpt", tmp_path / "resumed.pt", "fsdp")
    straight, resumed = torch.load(tmp_path / "straight.pt"), torch.load(tmp_path / "resumed.pt")
    for k, v in straight["metrics"].items():
        assert resumed["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    for k, w in straight["weights"].items():
        torch.testing.assert_close(resumed["weights"][k], w, rtol=1e-5, atol=1e-7)


def test_nan_on_one_learner_fails_every_learner_at_once(monkeypatch):
    # A process-group timeout of 60 s: a learner left waiting in a collective would fail the
    # test by taking that long (the default is 30 minutes).
    from ray.rllib.core.learner import learner_group as lg

    original = lg._get_backend_config

    def short_timeout(learner_class):
        cfg = original(learner_class)
        cfg.timeout_s = 60
        return cfg

    monkeypatch.setattr(lg, "_get_backend_config", short_timeout)

    def _poison_rank0(learner):
        import torch.distributed as dist

        from rllib_rpp import schema as S

        if dist.get_rank() == 0:
            prepare = learner.prepare_batch

            def poisoned(batch):
                batch[S.SAMPLER_LOGPROBS][0, 0] = float("nan")
                return prepare(batch)

            learner.prepare_batch = poisoned
        return True

    algo = layout(2, "fsdp").build_algo()
    [r.get() for r in algo.learner_group.foreach_learner(_poison_rank0).result_or_errors]
    t = time.time()
    with pytest.raises(Exception, match=r"sampler_logprobs contain NaN/inf in 1 of 64 responses") as err:
        algo.train()
    assert time.time() - t < 45, "a learner waited for the other one"
    # Both learners raised the same error (RLlib reports the first; the other failed too).
    assert "no update was applied" in str(err.value)
    algo.stop()
