"""The paper-stability benchmark's runs, read back: one run's summary numbers, the runs of a plan,
runs grouped by contender, curve bands; shared by `paper_stability` (which runs them),
`paper_report` (which compares them) and `paper_figures` (which draws them), none of which import
each other in a circle."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.stats import mean_ci_bands

BETA = 0.01  # the paper's general-setting β


def run_metrics(run: dict) -> dict:
    """One run's summary numbers (see the module docstring)."""
    curve = run["curve"]
    tail = curve[-max(1, len(curve) // 10):]
    last = lambda key: float(np.mean([c[key] for c in tail]))  # noqa: E731
    golds = [e["gold"] for e in run["evals"]]
    return {"final_gold": golds[-1], "peak_gold": max(golds), "gold_auc": float(np.mean(golds)),
            "final_length": last("length"), "length_auc": float(np.mean([c["length"] for c in curve])),
            "final_proxy": last("proxy"), "final_kl": last("kl"), "gain": last("proxy") - curve[0]["proxy"]}


def load_runs(out: Path) -> list[dict]:
    """The runs of the plan (plan.json's keys: not those of an earlier, larger plan in the same
    folder), or every finished run when there is no plan yet."""
    runs = out / "runs"
    plan = out / "plan.json"
    if not plan.exists():
        return [json.loads(p.read_text()) for p in sorted(runs.glob("[!.]*.json"))]
    keys = json.loads(plan.read_text())["keys"]
    missing = [k for k in keys if not (runs / f"{k}.json").exists()]
    if missing:
        raise SystemExit(f"{len(missing)} run(s) of {plan} are not in {runs} (e.g. {missing[0]}): rerun the "
                         f"benchmark, which runs only those")
    return [json.loads((runs / f"{k}.json").read_text()) for k in keys]


def groups(runs: list[dict]) -> dict[tuple, list[dict]]:
    """Runs by contender: (setting, label, β), seeds in order. Setting C's frontier also takes A's
    default-placement runs (the same contender at A's β)."""
    out = defaultdict(list)
    for r in sorted(runs, key=lambda r: r["seed"]):
        out[(r["setting"], r["label"], r["kl_coef"])].append(r)
        if r["setting"] == "A" and not r["kl_placement"]:
            out[("C", r["label"], r["kl_coef"])].append(r)
    return dict(out)


def curve_bands(runs: list[dict], key: str, source: str = "curve"):
    """(x, mean, low, high) over seeds of one contender's per-iteration (or per-evaluation) `key`."""
    n = min(len(r[source]) for r in runs)
    x = np.array([p["iteration"] for p in runs[0][source][:n]])
    return (x, *mean_ci_bands([[p[key] for p in r[source][:n]] for r in runs]))
