"""The prepared GPU check runs at toy size on CPU with only what a bare CUDA image has: torch,
transformers (and peft); importing Ray, vLLM or gymnasium is made to fail."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "vllm", "gymnasium"):
            raise ImportError(f"{name} is not on a bare CUDA image")
sys.meta_path.insert(0, Block())
module = sys.argv[2]
sys.argv = [module, "--smoke", "--out", sys.argv[1]]
runpy.run_module(module, run_name="__main__")
"""


def test_gpu_check_smoke_runs_without_ray_vllm_or_gymnasium(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "-c", BLOCK, str(out), "benchmarks.gpu_check"], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    shape = report["shapes"][0]
    for key in ("no_checkpointing", "checkpointing"):
        assert shape[key]["step_s"] > 0 and 0 < shape[key]["mfu"] < 1
        assert shape[key]["estimated_gib"]["total"] > 0
    assert shape["old_logprobs_s"] > 0 and report["matmul_peak_tflops"] > 0


def test_gpu_acceptance_smoke_runs_every_torch_stage_without_ray_or_vllm(tmp_path):
    """The acceptance script's torch-only stages at toy size on CPU (gloo in place of NCCL); the
    train stage needs a GPU, Ray and vLLM and says so. Its report is written stage by stage."""
    out = tmp_path / "gpu_acceptance.json"
    proc = subprocess.run([sys.executable, "-c", BLOCK, str(out), "benchmarks.gpu_acceptance"], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = json.loads(out.read_text())["stages"]
    assert list(stages) == ["card", "learner_core", "fsdp_world_one", "sender_tensors", "train_math"]
    fsdp = stages["fsdp_world_one"]
    assert fsdp["ok"] and fsdp["tokens_with_logprob_min"] == fsdp["response_tokens"] > 256, fsdp
    assert stages["sender_tensors"]["ok"] and "skipped" in stages["train_math"]
