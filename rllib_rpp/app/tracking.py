"""Experiment tracking for `rllib-rpp train`: Weights & Biases and MLflow through their own clients.

Metric names are RLlib's result keys flattened with "/" (`env_runners/episode_return_mean`,
`learners/default_policy/kl_ref_per_token`), as Tune's TensorBoard, W&B and MLflow loggers name
them; the step is the training iteration. The resolved config is logged once, as hyperparameters
(`training.lr`, `generation.max_new_tokens`, ...). A tracker's run id is kept with the checkpoints,
so `--resume` continues the same tracked run. (Under Tune, use Tune's own `WandbLoggerCallback` /
`MLflowLoggerCallback`: `tuned_examples/tune_search.py --wandb/--mlflow`.)
"""

from __future__ import annotations

import math
import os
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

from rllib_rpp.app.run_record import make_writable_dir

DEFAULT_MLFLOW_URI = "mlruns"  # a folder: an SQLite store `mlruns/mlflow.db` with artifacts beside it
EXTRA = "pip install -e '.[track]'"
PROBE_S = 5.0  # how long check_tracking waits for a tracking server to accept a connection


_NOT_METRICS = ("config", "pid", "timestamp", "date", "hostname", "node_ip", "trial_id")  # as Tune's loggers


def flatten_metrics(result: dict, prefix: str = "") -> dict[str, float]:
    """RLlib's nested result -> {"a/b/c": number}, finite numbers only (what the loggers accept)."""
    out = {}
    for key, value in result.items():
        if not prefix and key in _NOT_METRICS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_metrics(value, name + "/"))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
            v = float(value.item())
            if math.isfinite(v):
                out[name] = v
    return out


class WandbTracker:
    """A W&B run in `project`. Without a W&B login (no WANDB_API_KEY, no `wandb login`) or with
    WANDB_MODE=offline it logs offline under `dir/wandb/` (`wandb sync` uploads it later)."""

    name = "wandb"

    def __init__(self, project: str, *, dir: str, run_name: str):
        try:
            import wandb
        except ImportError:
            raise ValueError(f"--wandb needs the wandb package: {EXTRA}") from None
        self.wandb, self.project, self.dir, self.run_name, self.run = wandb, project, dir, run_name, None

    def start(self, hparams: dict[str, Any], run_id: str | None = None) -> str:
        Path(self.dir).mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(project=self.project, id=run_id, resume="allow" if run_id else None,
                                   name=self.run_name, dir=self.dir, config=hparams, mode=wandb_mode(),
                                   # no console capture or banners: the status line stays calm
                                   settings=self.wandb.Settings(silent=True, console="off"))
        return self.run.id

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, ok: bool = True) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if ok else 1)
            self.run = None

    def where(self) -> str:
        return self.run.dir if self.run is not None else self.dir


class MlflowTracker:
    """An MLflow run in experiment `experiment`, tracked at `uri` (a tracking server, a database
    URI, or a local folder: default `./mlruns`, an SQLite store, MLflow's recommended local store)."""

    name = "mlflow"

    def __init__(self, uri: str | None, *, experiment: str, run_name: str):
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise ValueError(f"--mlflow needs the mlflow package: {EXTRA}") from None
        import logging

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database set-up chatter
        # MLflow's client retries a failing server 7 times with doubling waits (minutes of a stalled
        # run); a server that goes away mid-run costs ~15 s here, then tracking stops (Trackers.log).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        self.uri, self.artifacts = _mlflow_store(uri or DEFAULT_MLFLOW_URI)
        self.client, self.experiment, self.run_name, self.run_id = MlflowClient(self.uri), experiment, run_name, None

    def start(self, hparams: dict[str, Any], run_id: str | None = None) -> str:
        from mlflow.entities import Param, RunStatus

        if run_id is not None:  # resume: the same run, running again
            self.run_id = run_id
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            return run_id
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(
            self.experiment, artifact_location=self.artifacts)
        self.run_id = self.client.create_run(experiment_id, run_name=self.run_name).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in sorted(hparams.items())]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        return self.run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_mlflow_key(k), v, now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def finish(self, ok: bool = True) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status="FINISHED" if ok else "KILLED")

    def where(self) -> str:
        return self.uri


def mlflow_store_uri(uri: str) -> str:
    """The tracking URI for `uri` (a folder becomes an SQLite store inside it)."""
    return _mlflow_store(uri)[0]


def _mlflow_store(uri: str) -> tuple[str, str | None]:
    """A folder becomes an SQLite store inside it, artifacts in `<folder>/artifacts`; URIs stay."""
    if "://" in uri or uri.startswith(("file:", "databricks")):
        return uri, None
    folder = Path(uri).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def _mlflow_key(key: str) -> str:
    # MLflow keys allow alphanumerics, _ - . space : / only.
    return "".join(c if c.isalnum() or c in "_-. :/" else "_" for c in key)


def wandb_mode() -> str:
    """WANDB_MODE if set; else online with a W&B login (WANDB_API_KEY or `wandb login`), offline without."""
    logged_in = os.environ.get("WANDB_API_KEY") or _netrc_has("api.wandb.ai")
    return os.environ.get("WANDB_MODE") or ("online" if logged_in else "offline")


def _netrc_has(host: str) -> bool:
    try:
        import netrc

        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class Trackers:
    """The trackers of one run, started and logged together. `ids()` is what a checkpoint keeps.
    A tracker that fails to log (its server went away mid-run) is reported through `warn` once and
    dropped: training goes on, and RUN_DIR/metrics.jsonl still has every metric."""

    def __init__(self, trackers: list, warn=print):
        self.trackers, self.warn = trackers, warn

    def start(self, hparams: dict[str, Any], ids: dict[str, str] | None = None) -> dict[str, str]:
        ids = ids or {}
        self.run_ids = {t.name: t.start(hparams, ids.get(t.name)) for t in self.trackers}
        return self.run_ids

    def ids(self) -> dict[str, str]:
        return dict(getattr(self, "run_ids", {}))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for t in list(self.trackers):
            try:
                t.log(metrics, step)
            except Exception as e:  # noqa: BLE001 - a tracking outage must not end the training
                self.trackers.remove(t)
                self.warn(f"{t.name}: logging failed at step {step} ({type(e).__name__}: {str(e)[:300]}); no more "
                          f"{t.name} tracking in this run (the run directory's metrics.jsonl has every metric)")

    def finish(self, ok: bool = True) -> None:
        for t in self.trackers:
            try:
                t.finish(ok)
            except Exception as e:  # noqa: BLE001 - the run's own results are already written
                self.warn(f"{t.name}: closing its run failed ({type(e).__name__}: {str(e)[:300]})")

    def describe(self) -> list[str]:
        return [f"{t.name}: run {self.run_ids.get(t.name)} at {t.where()}" for t in self.trackers]


def check_tracking(*, wandb_project: str | None, use_mlflow: bool, mlflow_uri: str | None) -> None:
    """Refuse tracking options that would fail later, before Ray or a model is built: a W&B
    project name W&B refuses (or an empty one), a missing package, a tracking server that does
    not accept a connection within PROBE_S seconds, a local MLflow folder that cannot be written."""
    if wandb_project is not None:
        if not str(wandb_project).strip():
            raise ValueError("--wandb '': expected a W&B project name (leave --wandb out for no W&B tracking)")
        try:
            import wandb
        except ImportError:
            raise ValueError(f"--wandb needs the wandb package: {EXTRA}") from None
        try:
            wandb.Settings(project=wandb_project)  # W&B's own rule for project names
        except Exception as e:  # noqa: BLE001 - wandb.errors.UsageError and pydantic's errors
            raise ValueError(f"--wandb {wandb_project!r}: {e}") from None
        if wandb_mode() == "online":
            _probe(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"), "--wandb (online: W&B's server)",
                   "or set WANDB_MODE=offline to log under RUN_DIR/wandb and `wandb sync` later")
    if use_mlflow:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise ValueError(f"--mlflow needs the mlflow package: {EXTRA}") from None
        uri = mlflow_uri or DEFAULT_MLFLOW_URI
        if uri.startswith(("http://", "https://")):
            _probe(uri, f"--mlflow {uri}", "start it, or give --mlflow without a URI to track in ./mlruns")
        elif "://" not in uri and not uri.startswith(("file:", "databricks")):
            try:
                make_writable_dir(uri)
            except OSError as e:
                raise ValueError(f"--mlflow {uri}: cannot write the tracking store there ({e.strerror or e}); give "
                                 f"a writable folder or a tracking server's URI") from None


def _probe(url: str, what: str, advice: str) -> None:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=PROBE_S).close()
    except OSError as e:
        raise ValueError(f"{what}: cannot connect to {parts.hostname}:{port} ({e.strerror or e}); {advice}") from None


def build_trackers(*, wandb_project: str | None, mlflow_uri: str | None, use_mlflow: bool, run_dir: str,
                   run_name: str, experiment: str, warn=print) -> Trackers:
    trackers = []
    if wandb_project:
        trackers.append(WandbTracker(wandb_project, dir=run_dir, run_name=run_name))
    if use_mlflow:
        trackers.append(MlflowTracker(mlflow_uri, experiment=experiment, run_name=run_name))
    return Trackers(trackers, warn=warn)
