"""A CLI run people can follow and compare: the run directory (metrics, summary, config, curves.png),
W&B (offline) and MLflow tracking read back from their own files, the same tracked runs continued
by --resume, and `rllib-rpp plot` overlaying runs."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import yaml

from rllib_rpp.app.run_record import plot_runs, read_records

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, "-m", "rllib_rpp", "train", "tiny-arith", "--eval-every", "1e9", "--log-every", "0"]
REWARD = "env_runners/episode_return_mean"


def read_wandb_offline(run_dir: Path) -> tuple[dict, list[dict]]:
    """An offline W&B run file (`run-<id>.wandb`: a LevelDB-style log of protobuf records) read
    back: (the run record's config, the history rows)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data, pos, block, chunks, records = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # a block's tail too short for a header is padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            pos += room - 7
            continue
        chunks += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # a full record, or the last chunk of one
            records.append(chunks)
            chunks = b""
    config, history = {}, []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return config, history


def _train(*args):
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([*TRAIN, *args], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_cli_tracks_to_wandb_and_mlflow_writes_its_run_directory_and_resume_continues_both(tmp_path):
    from mlflow import MlflowClient

    run_dir, ckpt, mlruns = tmp_path / "run", tmp_path / "ckpt", tmp_path / "mlruns"
    track = ["--wandb", "rpp-test", "--mlflow", str(mlruns), "--checkpoint-dir", str(ckpt)]
    first = _train("--num-prompts", "8", "--iterations", "3", "--run-dir", str(run_dir),
                   "--set", "training.kl_coef=0.02", *track)
    # The run directory: one record per iteration and evaluation, the summary, the config, the picture.
    records = read_records(run_dir)
    assert [r["iteration"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    assert [r["kind"] for r in records].count("eval") == 2  # before and after
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["run_dir"] == str(run_dir)
    assert "SUMMARY " + json.dumps(summary) in first.stdout
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["kl_coef"] == 0.02
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # W&B, offline: RLlib's metric names (as TensorBoard's) at steps 1..3, the resolved config once.
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    config, history = read_wandb_offline(wandb_run)
    assert config["training.kl_coef"] == 0.02 and config["preset"] == "tiny-arith"
    steps = [h["_step"] for h in history if REWARD in h]
    assert steps == [1, 2, 3]
    assert all("learners/default_policy/kl_ref_per_token" in h for h in history if REWARD in h)
    assert not any(k.startswith("config/") for h in history for k in h)
    # MLflow, read back with MLflow's client.
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("rllib-rpp-tiny-arith").experiment_id])
    assert run.data.params["training.kl_coef"] == "0.02" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, REWARD)] == [1, 2, 3]

    # --resume: the same W&B and MLflow runs, the same run directory, iterations numbered on.
    second = _train("--iterations", "2", "--resume", str(ckpt), *track)
    assert "iter    4" in second.stdout and "iter    1 " not in second.stdout
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and {p.name.rsplit("-", 1)[-1] for p in runs} == {wandb_run.name.rsplit("-", 1)[-1]}
    _, resumed = read_wandb_offline(runs[-1] if runs[-1] != wandb_run else runs[0])
    assert [h["_step"] for h in resumed if REWARD in h] == [4, 5]
    (again,) = client.search_runs([run.info.experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, REWARD)] == [1, 2, 3, 4, 5]
    assert [r["iteration"] for r in read_records(run_dir) if r["kind"] == "train"] == [1, 2, 3, 4, 5]
    assert json.loads((run_dir / "summary.json").read_text())["last_iteration"] == 5


def test_plot_overlays_runs_and_the_cli_plot_command(tmp_path):
    from PIL import Image

    dirs = []
    for seed, slope in ((0, 0.01), (1, 0.02)):
        d = tmp_path / f"seed{seed}"
        d.mkdir()
        rows = [{"kind": "train", "iteration": i, "train_s": float(i), "reward": slope * i, "kl_per_token": 0.001 * i,
                 "response_length": 4.0, "completions_per_s": 100.0} for i in range(1, 50)]
        rows += [{"kind": "eval", "iteration": i, "train_s": float(i), "reward": 0.4 + slope * i} for i in (0, 25, 49)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "tr')  # torn line
        dirs.append(d)
    out = plot_runs(dirs, tmp_path / "both.png")
    assert Image.open(out).size == (1500, 800)
    plot = [sys.executable, "-m", "rllib_rpp", "plot"]
    proc = subprocess.run([*plot, *map(str, dirs), "--out", str(tmp_path / "c.png")], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and Path(proc.stdout.strip()) == tmp_path / "c.png", proc.stderr[-2000:]
    proc = subprocess.run([*plot, str(tmp_path / "nothing")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and "is not a run directory: no metrics.jsonl" in proc.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tracking_options_that_would_fail_later_are_refused_before_anything_is_built(tmp_path, monkeypatch):
    """`--wandb a/b` failed with a traceback after Ray and the model were built, `--wandb ''` trained
    untracked, `--mlflow http://127.0.0.1:9` hung (issue 30): each is an error naming the value, at once."""
    import time

    import pytest

    from rllib_rpp.app import driver
    from rllib_rpp.app.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(driver, "init_ray", lambda log: pytest.fail("Ray was started for refused tracking options"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    port = _free_port()
    for flags, message in (
        (["--wandb", "a/b"], r"--wandb 'a/b': Invalid project name 'a/b': cannot contain characters"),
        (["--wandb", ""], r"--wandb '': expected a W&B project name"),
        (["--mlflow", f"http://127.0.0.1:{port}"], rf"--mlflow http://127.0.0.1:{port}: cannot connect to "
                                                    rf"127.0.0.1:{port} \(Connection refused\); start it"),
        (["--mlflow", str(blocked / "mlruns")], r"--mlflow .*/file/mlruns: cannot write the tracking store there"),
        (["--run-dir", str(blocked / "run")], r"cannot write to .*/file/run"),
    ):
        t0 = time.monotonic()
        with pytest.raises(SystemExit, match=message):
            main(["train", "tiny-arith", "--iterations", "1", *flags])
        assert time.monotonic() - t0 < 15, flags
    monkeypatch.delenv("WANDB_MODE")  # logged in (a key), so online: W&B's server must answer
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(SystemExit, match=rf"--wandb \(online: W&B's server\): cannot connect to 127.0.0.1:{port}.*"
                                         r"WANDB_MODE=offline"):
        main(["train", "tiny-arith", "--iterations", "1", "--wandb", "proj"])
    assert not list(tmp_path.glob("runs/*"))  # no run directory left behind


def test_a_tracker_that_fails_mid_run_is_dropped_with_a_warning_and_training_goes_on():
    from rllib_rpp.app.tracking import Trackers

    class Fake:
        def __init__(self, name, fail):
            self.name, self.fail, self.logged = name, fail, []

        def start(self, hparams, run_id=None):
            return f"{self.name}-run"

        def log(self, metrics, step):
            if self.fail and step >= 2:
                raise ConnectionError("the tracking server went away")
            self.logged.append(step)

        def finish(self, ok=True):
            if self.fail:
                raise ConnectionError("still away")

    said = []
    mlflow, wandb = Fake("mlflow", fail=True), Fake("wandb", fail=False)
    trackers = Trackers([mlflow, wandb], warn=said.append)
    trackers.start({})
    for step in (1, 2, 3):
        trackers.log({"x": 1.0}, step)
    trackers.finish()
    assert mlflow.logged == [1] and wandb.logged == [1, 2, 3]
    assert said == ["mlflow: logging failed at step 2 (ConnectionError: the tracking server went away); no more "
                    "mlflow tracking in this run (the run directory's metrics.jsonl has every metric)"]


def test_plot_names_a_damaged_line_and_a_run_still_writing_its_first_iteration(tmp_path, capsys):
    import pytest

    from rllib_rpp.app.cli import main

    run = tmp_path / "run"
    run.mkdir()
    good = {"kind": "train", "iteration": 1, "train_s": 1.0, "reward": 0.5}
    (run / "metrics.jsonl").write_text(json.dumps(good) + "\n\x00\x00garbage\n[1, 2]\n"
                                       + json.dumps({**good, "iteration": 2, "train_s": "soon"}) + '\n{"kind": "tr')
    main(["plot", str(run)])
    err = capsys.readouterr().err
    assert f"{run / 'metrics.jsonl'}:2: not a record" in err and f"{run / 'metrics.jsonl'}:3: not a record" in err
    assert f"{run / 'metrics.jsonl'}:5: the last line is cut short (the run was killed, or is writing it)" in err
    assert (run / "curves.png").exists()  # the good records are drawn; the one without a number left out
    starting = tmp_path / "starting"
    starting.mkdir()
    (starting / "config.yaml").write_text("training: {}\n")  # a run that has not finished an iteration
    with pytest.raises(SystemExit, match="has no records yet: no metrics.jsonl"):
        main(["plot", str(starting)])
