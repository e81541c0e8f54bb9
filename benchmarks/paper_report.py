"""Summary, statistics, figures and verdicts of `benchmarks.paper_stability`, from its per-run JSON.

    python -m benchmarks.paper_report [benchmarks/results/paper_stability]

Per run (one contender, one seed), over the last tenth of the updates: sampled proxy reward,
response length, KL per sequence; held-out greedy gold accuracy at the last evaluation and its
peak; reward gain (final proxy minus the first iteration's). Over the whole run (how long a policy
resists hacking): the mean held-out gold over the evaluations and the mean sampled length over the
iterations (areas under the curves, divided by their length). Per contender: mean and 95 % t
interval over seeds. Comparisons (REINFORCE++ minus GRPO): difference of means with a 95 %
bootstrap interval over seeds, Hedges' g, Welch's p. Verdicts read the intervals only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.paper_runs import BETA, groups, load_runs, run_metrics
from benchmarks.stats import compare, mean_ci

METRICS = ("final_gold", "peak_gold", "gold_auc", "final_length", "length_auc", "final_proxy", "final_kl", "gain")
COMPARABLE_MARGIN = 0.05  # held-out accuracy: "comparable" means the difference's interval lies within ±5 points


def frontier_slope(points: list[tuple[float, float]]) -> float:
    """Reward gain per unit KL: least-squares slope through the origin of (KL, gain) points."""
    kl, gain = np.asarray(points, np.float64).T
    return float((kl * gain).sum() / max((kl**2).sum(), 1e-12))


def slopes(runs_by_beta: dict[float, list[dict]]) -> list[float]:
    """One frontier slope per seed, over the β values at which that seed ran."""
    seeds = set.intersection(*({r["seed"] for r in rs} for rs in runs_by_beta.values()))
    out = []
    for s in sorted(seeds):
        pts = [(m["final_kl"], m["gain"]) for rs in runs_by_beta.values() for r in rs if r["seed"] == s
               for m in [run_metrics(r)]]
        out.append(frontier_slope(pts))
    return out


def direction(cmp: dict, alpha: float = 0.05) -> int:
    """+1 / -1 when the difference is significant both ways we test it (the bootstrap interval
    excludes 0 and Welch's p < alpha; with few seeds the percentile bootstrap alone is too
    liberal), else 0."""
    if cmp["welch_p"] >= alpha:
        return 0
    return 1 if cmp["diff_low"] > 0 else -1 if cmp["diff_high"] < 0 else 0


def verdict_more_stable(gold: dict, length: dict) -> str:
    """Claim 1: more gold reward and/or shorter responses than GRPO, and neither significantly worse."""
    favour = (direction(gold) > 0) + (direction(length) < 0)
    against = (direction(gold) < 0) + (direction(length) > 0)
    if favour and not against:
        return "reproduced"
    if against and not favour:
        return "not reproduced (GRPO more stable)"
    return "mixed" if favour else "inconclusive"


def verdict_comparable(cmp: dict, margin: float = COMPARABLE_MARGIN) -> str:
    """Claim 2: the interval of the difference lies within ±margin."""
    if -margin <= cmp["diff_low"] and cmp["diff_high"] <= margin:
        return "reproduced"
    if direction(cmp) and abs(cmp["diff"]) > margin:
        return "not reproduced (" + ("REINFORCE++ better" if cmp["diff"] > 0 else "GRPO better") + ")"
    return "inconclusive"


def verdict_higher(cmp: dict) -> str:
    """Claim 3: REINFORCE++'s reward gain per unit KL is higher than GRPO's."""
    return {1: "reproduced", -1: "not reproduced (GRPO higher)", 0: "inconclusive"}[direction(cmp)]


def summarise(runs: list[dict]) -> dict:
    by = groups(runs)
    contenders = []
    for (setting, lab, beta), rs in sorted(by.items()):
        row = {"setting": setting, "contender": lab, "beta": beta, "seeds": [r["seed"] for r in rs]}
        for m in METRICS:
            row[m] = dict(zip(("mean", "low", "high"), mean_ci([run_metrics(r)[m] for r in rs])))
        contenders.append(row)

    def per_seed(setting, lab, metric, beta):
        return [run_metrics(r)[metric] for r in by[(setting, lab, beta)]]

    a = lambda lab, m: per_seed("A", lab, m, BETA)  # noqa: E731
    def hacking(other: str) -> dict:
        """Claim 1 against `other`: the verdict reads the whole-run gold and length."""
        out = {m: compare(a("reinforce_pp", m), a(other, m))
               for m in ("gold_auc", "length_auc", "final_gold", "final_length", "final_kl")}
        return {**out, "verdict": verdict_more_stable(out["gold_auc"], out["length_auc"])}

    claims = {"A": hacking("grpo")}
    if ("A", "grpo (KL in reward)", BETA) in by:
        claims["A_same_placement"] = hacking("grpo (KL in reward)")
    b = compare(per_seed("B", "reinforce_pp", "final_gold", BETA), per_seed("B", "grpo", "final_gold", BETA))
    claims["B"] = {"final_gold": b, "verdict": verdict_comparable(b)}
    frontier = {}
    for (setting, lab, beta), rs in by.items():
        if setting == "C":
            frontier.setdefault(lab, {})[beta] = rs
    slope = {lab: slopes(rb) for lab, rb in frontier.items()}
    c = compare(slope["reinforce_pp"], slope["grpo"])
    claims["C"] = {"gain_per_kl": c, "slopes": slope, "verdict": verdict_higher(c)}
    return {"contenders": contenders, "claims": claims}


def _fmt(ci: dict, digits: int = 3) -> str:
    return f"{ci['mean']:.{digits}f} [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"


def tables(summary: dict) -> str:
    cols = ("final_gold", "gold_auc", "final_length", "length_auc", "final_proxy", "final_kl", "gain")
    lines = ["| setting | contender | β | seeds | held-out gold (final) | held-out gold (whole run) | length (final) "
             "| length (whole run) | proxy reward | KL / seq | reward gain |", "|" + "---|" * 11]
    for r in summary["contenders"]:
        lines.append(f"| {r['setting']} | {r['contender']} | {r['beta']:g} | {len(r['seeds'])} | "
                     + " | ".join(_fmt(r[m], 1 if "length" in m else 3) for m in cols) + " |")
    lines += ["", "| claim | metric (REINFORCE++ − GRPO) | difference [95 % bootstrap] | Hedges' g | Welch p | "
              "verdict |", "|---|---|---|---|---|---|"]
    for claim, c in summary["claims"].items():
        for metric, cmp in c.items():
            if isinstance(cmp, dict) and "diff" in cmp:
                lines.append(f"| {claim} | {metric} | {cmp['diff']:+.3f} [{cmp['diff_low']:+.3f}, "
                             f"{cmp['diff_high']:+.3f}] | {cmp['hedges_g']:+.2f} | {cmp['welch_p']:.3g} | "
                             f"{c['verdict']} |")
    return "\n".join(lines)


def report(out: Path) -> dict:
    out = Path(out)
    runs = load_runs(out)
    summary = summarise(runs)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    from benchmarks.paper_figures import figures

    figures(runs, out)
    text = tables(summary)
    (out / "summary.md").write_text(text + "\n")
    print(text, flush=True)
    return summary


if __name__ == "__main__":
    report(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "paper_stability")
