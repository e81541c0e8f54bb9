"""`rllib-rpp train` attaches to a running Ray cluster (as under `ray job submit` or on several
nodes) instead of failing in `ray.init(num_cpus=...)`."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import ray

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def test_cli_attaches_to_a_real_local_head_node():
    ray.shutdown()  # the tests' own cluster: `ray stop --force` below ends every Ray process here
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    subprocess.run([RAY, "start", "--head", "--num-cpus", "2", "--include-dashboard=false", "--temp-dir", temp],
                   check=True, capture_output=True, env=env, timeout=120)
    try:
        proc = subprocess.run([sys.executable, "-m", "rllib_rpp", "train", "tiny-arith", "--iterations", "1",
                               "--num-prompts", "8"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "attached to the Ray cluster" in proc.stdout and "iter    1" in proc.stdout
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)
