"""GPU acceptance: what a person with a GPU runs first (issue 18). Each stage is appended to the
JSON report as soon as it finishes, so a crash or a timeout keeps what ran.

    python -m benchmarks.gpu_acceptance              # a CUDA machine (torch + transformers suffice)
    python -m benchmarks.gpu_acceptance --smoke      # toy sizes on CPU (CI runs this)

1. card: its name, memory, torch and CUDA versions.
2. learner core (`benchmarks.gpu_check`): bf16 MFU, peak memory next to the estimator, per shape.
3. contracts, torch alone: FSDP2 with world size 1 over NCCL and bf16 compute equals the
   unsharded policy on a response longer than 256 tokens (GPU review #6) and after one update;
   the NCCL path's tensors are cast on the GPU (bf16, equal to the host cast, #8); a CUDA event
   polled to completion (the sender's bounded wait, #1b); a count all-reduced on the device (#2).
4. with Ray and vLLM (`pip install -e .[gpu]`): one iteration of `rllib-rpp train math` on a
   random-init model of a real shape, per layout that fits the GPUs present (1 GPU: colocated;
   2: split with NCCL sync, and colocated; 4: split with two FSDP learners).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from benchmarks import gpu_check
from rllib_rpp import schema as S
from rllib_rpp.core import fsdp
from rllib_rpp.core.logprobs import response_logprobs
from rllib_rpp.weight_sync.engines import wait_or_abort

ROOT = Path(__file__).resolve().parents[1]


class Report:
    """The JSON document, rewritten after every stage."""

    def __init__(self, path: str):
        self.path, self.doc = Path(path), {"stages": {}}
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, stage: str, result) -> None:
        self.doc["stages"][stage] = result
        self.path.write_text(json.dumps(self.doc, indent=1))
        print(f"{stage}: {json.dumps(result)}", flush=True)


def card(device) -> dict:
    if device.type != "cuda":
        return {"device": "cpu", "torch": torch.__version__}
    props = torch.cuda.get_device_properties(0)
    return {"device": props.name, "memory_gib": round(props.total_memory / 2**30, 1), "gpus": torch.cuda.device_count(),
            "torch": torch.__version__, "cuda": torch.version.cuda}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fsdp_world_one(device, smoke: bool, response: int = 300) -> dict:
    """FSDP2 (one rank, NCCL on CUDA) with bf16 compute against the unsharded policy under bf16
    autocast: log-probs of every one of `response` tokens, then the weights after one Adam step."""
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}",
                            rank=0, world_size=1)
    try:
        plain, cfg = gpu_check.build("toy" if smoke else "qwen2.5-0.5b", device, "float32", smoke)
        sharded, _ = gpu_check.build("toy" if smoke else "qwen2.5-0.5b", device, "float32", smoke)
        sharded.load_state_dict(plain.state_dict())
        root = gpu_check.Policy(sharded, gpu_check.UpdateOptions())
        fsdp.shard(root, sharded, device_type=device.type, param_dtype="float32", compute_dtype="bfloat16")
        batch = gpu_check.random_batch(cfg, 2, 16, response, device)
        with torch.no_grad():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                lp_plain, _ = response_logprobs(plain, batch)
            lp_sharded = root(batch)["logprobs"]
        counted = int((lp_sharded != 0).sum(-1).min())
        gap = float((lp_sharded.float() - lp_plain.float()).abs().max())
        for name, module, params in (("plain", plain, plain.parameters()), ("fsdp", root, root.parameters())):
            optim = torch.optim.Adam(params, lr=1e-3)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                lp = response_logprobs(module, batch)[0] if name == "plain" else module(batch)["logprobs"]
            (-(lp * batch[S.LOSS_MASK]).sum()).backward()
            optim.step()
        steps = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in root.state_dict().items()}
        moved = max(float((steps[f"lm.{k}"].float() - v.float()).abs().max()) for k, v in plain.state_dict().items())
        return {"backend": dist.get_backend(), "response_tokens": response, "tokens_with_logprob_min": counted,
                "logprob_max_abs_gap": round(gap, 5), "weights_max_abs_gap_after_step": round(moved, 6),
                "ok": counted == response and gap < 0.1 and moved < 1e-2}
    finally:
        dist.destroy_process_group()


def sender_tensors(device, smoke: bool) -> dict:
    """What the NCCL path hands vLLM: each master weight cast on the learner's device; the send's
    completion polled through a CUDA event; a count all-reduced in a device tensor."""
    model, _ = gpu_check.build("toy" if smoke else "qwen2.5-0.5b", device, "float32", smoke)
    state = model.state_dict()
    cast = {k: v.detach().to(device=device, dtype=torch.bfloat16) for k, v in state.items()}
    same = all(torch.equal(cast[k].cpu(), v.detach().cpu().to(torch.bfloat16)) for k, v in state.items())
    where = {str(v.device.type) for v in cast.values()} | {str(v.dtype) for v in cast.values()}
    polled = None
    if device.type == "cuda":
        big = torch.randn(4096, 4096, device=device)
        for _ in range(20):
            big = big @ big / 64
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream())
        t0 = time.perf_counter()
        wait_or_abort(event.query, 60.0, lambda: None, "a CUDA event")
        polled = round(time.perf_counter() - t0, 4)
    return {"tensors": len(cast), "device_and_dtypes": sorted(where), "equal_to_host_cast": same,
            "event_wait_s": polled, "ok": same and where == {device.type, "torch.bfloat16"}}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


LAYOUTS = {1: [["--gpus", "1"]], 2: [["--gpus", "2"], ["--gpus", "2", "--colocate"]],
           4: [["--gpus", "4"], ["--gpus", "4", "--colocate"]]}


def train_layouts(gpus: int, shape: str, timeout_s: int) -> dict:
    """`rllib-rpp train math` for one iteration per layout that fits, on random weights of a real
    shape and the built-in arithmetic prompts."""
    out = {}
    fits = [n for n in LAYOUTS if n <= gpus]
    for n in fits:
        for layout in LAYOUTS[n]:
            cmd = [sys.executable, "-m", "rllib_rpp.app.cli", "train", "math", "--model", f"random:{shape}",
                   "--prompts", "arithmetic", "--iterations", "1", "--num-prompts", "8", *layout]
            t0 = time.time()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
                rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-1500:]
            except subprocess.TimeoutExpired as e:
                rc, tail = "timeout", str(e.stdout or "")[-1500:]
            out[" ".join(layout)] = {"rc": rc, "wall_s": round(time.time() - t0, 1), "tail": tail}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="toy sizes on CPU, in seconds")
    parser.add_argument("--shape", default="qwen2.5-0.5b", help="the random-init model of the train runs")
    parser.add_argument("--train-timeout", type=int, default=600, help="seconds per train run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_acceptance.json"))
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    report = Report(args.out)
    report.add("card", card(device))
    core_out = str(Path(args.out).with_name("gpu_check.json"))
    report.add("learner_core", gpu_check.main((["--smoke"] if args.smoke else []) + ["--out", core_out]))
    for stage, check in (("fsdp_world_one", fsdp_world_one), ("sender_tensors", sender_tensors)):
        try:
            report.add(stage, check(device, args.smoke))
        except Exception as e:  # noqa: BLE001 - recorded; the next stage still runs
            report.add(stage, {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]})
    if device.type == "cuda" and all(map(installed, ("ray", "vllm"))):
        os.environ.setdefault("RLLIB_RPP_CACHE", str(ROOT / ".cache"))
        report.add("train_math", train_layouts(torch.cuda.device_count(), args.shape, args.train_timeout))
    else:
        report.add("train_math", {"skipped": "needs a GPU, Ray and vLLM (pip install -e .[gpu])"})
    return report.doc


if __name__ == "__main__":
    main()
