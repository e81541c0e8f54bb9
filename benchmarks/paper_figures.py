"""Figures of `benchmarks.paper_stability` in the shape of the paper's figures 1-3: mean over seeds
with 95 % confidence bands (Student t, point-wise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.paper_runs import curve_bands, groups, run_metrics
from benchmarks.stats import mean_ci


def _axes(n: int, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2))
    fig.suptitle(title)
    return fig, axes


def _style(lab: str) -> dict:
    return {"linestyle": "--" if "KL in" in lab else "-", "linewidth": 2.2 if lab == "reinforce_pp" else 1.4}


def _band(ax, runs, key, lab, source="curve"):
    x, m, lo, hi = curve_bands(runs, key, source)
    line, = ax.plot(x, m, label=lab, **_style(lab))
    ax.fill_between(x, lo, hi, alpha=0.15, color=line.get_color())


def _finish(fig, axes, labels, path: Path) -> None:
    for ax, (xl, yl) in zip(axes, labels):
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=85)


def _over_optimisation(ax, runs, lab):
    """Held-out gold at each evaluation against the KL of the update before it (mean over seeds)."""
    n = min(len(r["evals"]) for r in runs)
    kl = [np.mean([(r["curve"][e["iteration"] - 1]["kl"] if e["iteration"] else 0.0) for r in runs])
          for e in runs[0]["evals"][:n]]
    _, m, lo, hi = curve_bands(runs, "gold", "evals")
    line, = ax.plot(kl, m, marker="o", markersize=3, label=lab, **_style(lab))
    ax.fill_between(kl, lo, hi, alpha=0.15, color=line.get_color())


def figures(runs: list[dict], out: Path) -> list[Path]:
    by = groups(runs)
    paths = []
    a = {lab: rs for (s, lab, _), rs in by.items() if s == "A"}
    if a:
        fig, axes = _axes(5, "A: a length-biased Bradley-Terry reward model (gold = exact sum, never seen)")
        for lab, rs in a.items():
            _band(axes[0], rs, "proxy", lab)
            _band(axes[1], rs, "gold", lab, source="evals")
            _band(axes[2], rs, "length", lab)
            _band(axes[3], rs, "kl", lab)
            _over_optimisation(axes[4], rs, lab)
        _finish(fig, axes, [("iteration", "proxy (reward model) reward"),
                            ("iteration", "held-out greedy gold accuracy"),
                            ("iteration", "response length (tokens)"), ("iteration", "KL(π||π_ref) per sequence"),
                            ("KL(π||π_ref) per sequence", "held-out greedy gold accuracy")], out / "fig1_hacking.png")
        paths.append(out / "fig1_hacking.png")
    b = {lab: rs for (s, lab, _), rs in by.items() if s == "B"}
    if b:
        fig, axes = _axes(3, "B: rule reward (exact match)")
        for lab, rs in b.items():
            _band(axes[0], rs, "gold", lab, source="evals")
            _band(axes[1], rs, "gold", lab)
            _band(axes[2], rs, "kl", lab)
        _finish(fig, axes, [("iteration", "held-out greedy accuracy"), ("iteration", "sampled reward"),
                            ("iteration", "KL(π||π_ref) per sequence")], out / "fig2_rule_reward.png")
        paths.append(out / "fig2_rule_reward.png")
    c: dict[str, dict[float, list]] = {}
    for (s, lab, beta), rs in by.items():
        if s == "C":
            c.setdefault(lab, {})[beta] = rs
    if c:
        fig, axes = _axes(2, "C: reward gained per unit KL (one point per β; 95 % intervals over seeds)")
        for lab, per_beta in c.items():
            betas = sorted(per_beta)
            for ax, key in ((axes[0], "gain"), (axes[1], "final_gold")):
                kl = [mean_ci([run_metrics(r)["final_kl"] for r in per_beta[b]]) for b in betas]
                y = [mean_ci([run_metrics(r)[key] for r in per_beta[b]]) for b in betas]
                ax.errorbar([k[0] for k in kl], [v[0] for v in y],
                            xerr=np.array([[k[0] - k[1] for k in kl], [k[2] - k[0] for k in kl]]),
                            yerr=np.array([[v[0] - v[1] for v in y], [v[2] - v[0] for v in y]]),
                            marker="o", capsize=3, label=lab, **_style(lab))
                for b, k, v in zip(betas, kl, y):
                    ax.annotate(f"β={b:g}", (k[0], v[0]), fontsize=6, alpha=0.7)
        _finish(fig, axes, [("KL(π||π_ref) per sequence (last tenth)", "proxy reward gain"),
                            ("KL(π||π_ref) per sequence (last tenth)", "held-out greedy gold (final)")],
                out / "fig3_reward_per_kl.png")
        paths.append(out / "fig3_reward_per_kl.png")
    return paths
