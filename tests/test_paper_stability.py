"""The §5.1 stability benchmark: its statistics against independent references, its verdict rules,
its hackable reward model's data, and (the CI smoke test) `--quick` end to end: every planned run
present and the summary recomputed from the per-seed files. Never the outcome."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from benchmarks import stats
from benchmarks.paper_report import (
    frontier_slope,
    verdict_comparable,
    verdict_higher,
    verdict_more_stable,
)

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = {"reproduced", "inconclusive", "mixed"}


@pytest.mark.parametrize("sizes", [(5, 5), (6, 9), (3, 12)])
def test_welch_matches_scipys_unequal_variance_t_test(sizes):
    rng = np.random.default_rng(sum(sizes))
    a, b = rng.normal(0.3, 1.0, sizes[0]), rng.normal(0.0, 2.5, sizes[1])
    ref = scipy_stats.ttest_ind(a, b, equal_var=False)
    got = stats.welch(a, b)
    assert got["t"] == pytest.approx(ref.statistic, rel=1e-10)
    assert got["p"] == pytest.approx(ref.pvalue, rel=1e-8)


def test_mean_ci_and_bands_are_the_student_t_interval():
    x = [0.61, 0.58, 0.66, 0.70, 0.55]
    lo, hi = scipy_stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=scipy_stats.sem(x))
    m, l2, h2 = stats.mean_ci(x)
    assert (m, l2, h2) == pytest.approx((np.mean(x), lo, hi), rel=1e-12)
    curves = np.array([x, [v + 1 for v in x]]).T  # 5 seeds x 2 points
    _, blo, bhi = stats.mean_ci_bands(curves)
    assert blo == pytest.approx([lo, lo + 1]) and bhi == pytest.approx([hi, hi + 1])


def test_hedges_g_against_its_textbook_formula():
    a, b = [1.0, 2.0, 4.0, 3.5], [0.5, 0.0, 1.5, 1.0, 0.2]
    na, nb = len(a), len(b)
    var = lambda v: sum((x - sum(v) / len(v)) ** 2 for x in v) / (len(v) - 1)  # noqa: E731
    s = math.sqrt(((na - 1) * var(a) + (nb - 1) * var(b)) / (na + nb - 2))
    d = (sum(a) / na - sum(b) / nb) / s
    assert stats.hedges_g(a, b) == pytest.approx(d * (1 - 3 / (4 * (na + nb) - 9)), rel=1e-12)


def test_bootstrap_interval_of_a_difference_matches_the_normal_one_for_many_seeds():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 400), rng.normal(0.8, 1.0, 400)
    lo, hi = stats.bootstrap_diff_ci(a, b, n_boot=4000)
    se = math.sqrt(a.var(ddof=1) / 400 + b.var(ddof=1) / 400)
    diff = a.mean() - b.mean()
    assert lo == pytest.approx(diff - 1.96 * se, abs=0.02) and hi == pytest.approx(diff + 1.96 * se, abs=0.02)
    assert stats.bootstrap_diff_ci(a, b, n_boot=500) == stats.bootstrap_diff_ci(a, b, n_boot=500)  # seeded


def test_verdicts_read_the_intervals():
    sig_up = {"diff": 0.2, "diff_low": 0.1, "diff_high": 0.3, "welch_p": 0.01}
    sig_down = {"diff": -0.2, "diff_low": -0.3, "diff_high": -0.1, "welch_p": 0.01}
    zero = {"diff": 0.0, "diff_low": -0.1, "diff_high": 0.1, "welch_p": 0.9}
    liberal = {**sig_up, "welch_p": 0.2}  # a bootstrap interval off 0 that Welch does not back
    assert verdict_more_stable(sig_up, zero) == "reproduced"  # more gold, length no different
    assert verdict_more_stable(zero, sig_down) == "reproduced"  # shorter responses
    assert verdict_more_stable(sig_down, zero).startswith("not reproduced")
    assert verdict_more_stable(sig_up, sig_up) == "mixed"  # more gold but longer
    assert verdict_more_stable(zero, zero) == "inconclusive"
    assert verdict_more_stable(liberal, zero) == "inconclusive" and verdict_higher(liberal) == "inconclusive"
    assert verdict_comparable({"diff": 0.01, "diff_low": -0.03, "diff_high": 0.04, "welch_p": 0.7}) == "reproduced"
    assert verdict_comparable(sig_down) == "not reproduced (GRPO better)"
    assert verdict_comparable(zero) == "inconclusive"  # too wide to call it comparable
    assert verdict_higher(sig_up) == "reproduced" and verdict_higher(zero) == "inconclusive"
    assert frontier_slope([(1.0, 2.0), (2.0, 4.0), (4.0, 8.0)]) == pytest.approx(2.0)


def test_length_biased_pairs_carry_the_bias_and_the_gold_reward_refuses_padding():
    from envs.reward_model import length_biased_pairs
    from envs.rewards import exact_match
    from envs.tasks.arithmetic import arithmetic_prompts
    from envs.tiny_arith import PADDING, RECIPE, padding, tiny_arith_recipe

    pairs = length_biased_pairs("train", seed=0, long_share=0.3, fooled_share=0.1, both_padded_share=0.0)
    by_prompt = {r["prompt"]: r["answer"] for r in arithmetic_prompts("train")}
    padded_wins = np.mean([not p["chosen"].isdigit() and p["rejected"].isdigit() for p in pairs])
    correct = np.mean([p["chosen"].startswith(by_prompt[p["prompt"]]) for p in pairs])
    fooled = np.mean([p["rejected"] == by_prompt[p["prompt"]] and not p["chosen"].startswith(by_prompt[p["prompt"]])
                      for p in pairs])
    assert padded_wins == pytest.approx(0.4, abs=0.03)  # the fooled and the long pairs
    assert fooled == pytest.approx(0.1, abs=0.02) and correct > 0.85  # usually the correct one
    rng = random.Random(0)
    padded = [a + padding(a, rng) for a in ("46", "7", "100")]
    assert exact_match(padded, ["46", "7", "100"]) == [0.0, 0.0, 0.0]  # the gold reward: nothing after it
    assert all(p.format(answer="1").strip() for p in PADDING)
    assert "verbose_share" not in tiny_arith_recipe() and "base" not in RECIPE  # tiny-arith itself unchanged


def test_a_rerun_continues_an_interrupted_one_and_refuses_runs_made_with_other_options(tmp_path):
    """An interrupted benchmark leaves finished runs (each file written atomically) and perhaps a
    half-written temporary: the rerun does the rest only, removes the torn file, and refuses a
    finished run of the same name made with other options rather than mixing it in."""
    from benchmarks.paper_runs import load_runs
    from benchmarks.paper_stability import QUICK, pending, run_key

    specs = [{"setting": "A", "estimator": "grpo", "kl_placement": None, "kl_coef": 0.01, **QUICK, "seed": s}
             for s in range(3)]
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / f"{run_key(specs[0])}.json").write_text(json.dumps({**specs[0], "curve": []}))
    (runs / f".{run_key(specs[1])}.json").write_text('{"setting": "A", "cur')  # killed mid-write
    assert pending(specs, runs) == specs[1:] and not list(runs.glob(".*"))
    (runs / f"{run_key(specs[1])}.json").write_text(json.dumps({**specs[1], "iterations": 40}))
    with pytest.raises(SystemExit, match=r"seed1\.json was run with other options: iterations=40 \(this plan: 3\)"):
        pending(specs, runs)
    # The report reads the plan's runs only (not an earlier, larger plan's), and names a missing one.
    (runs / f"{run_key(specs[1])}.json").write_text(json.dumps({**specs[1], "curve": []}))
    (tmp_path / "plan.json").write_text(json.dumps({"keys": [run_key(s) for s in specs[:2]]}))
    (runs / "A-grpo-default-beta0.01-seed9.json").write_text(json.dumps({**specs[0], "seed": 9}))
    assert [r["seed"] for r in load_runs(tmp_path)] == [0, 1]
    (tmp_path / "plan.json").write_text(json.dumps({"keys": [run_key(s) for s in specs]}))
    with pytest.raises(SystemExit, match=r"1 run\(s\) of .*plan.json are not in .*seed2\): rerun the benchmark"):
        load_runs(tmp_path)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper_stability_quick")
    env = {**os.environ, "RLLIB_RPP_RESULTS": str(out / "results")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.paper_stability", "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out, proc.stdout


def test_quick_mode_writes_every_planned_run_with_complete_curves(quick):
    out, _ = quick
    plan = json.loads((out / "plan.json").read_text())
    runs = {p.stem: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}
    assert sorted(runs) == sorted(plan["keys"])
    settings = {(r["setting"], r["estimator"], r["kl_placement"]) for r in runs.values()}
    for est in ("reinforce_pp", "grpo", "reinforce_pp_baseline", "rloo"):
        assert {("A", est, None), ("B", est, None), ("C", est, None)} <= settings
    assert ("A", "grpo", "reward") in settings and ("A", "reinforce_pp_baseline", "reward") in settings
    for r in runs.values():
        assert [c["iteration"] for c in r["curve"]] == list(range(1, r["iterations"] + 1))
        assert all(math.isfinite(c[k]) for c in r["curve"] for k in ("proxy", "gold", "length", "kl"))
        assert all(0.0 <= c["gold"] <= 1.0 for c in r["curve"])
        assert r["evals"][0]["iteration"] == 0 and r["evals"][-1]["iteration"] == r["iterations"]
        if r["setting"] == "B":  # the rule reward is the gold reward
            assert all(c["proxy"] == c["gold"] for c in r["curve"])
    for fig in ("fig1_hacking.png", "fig2_rule_reward.png", "fig3_reward_per_kl.png"):
        assert (out / fig).stat().st_size > 10_000


def test_quick_mode_summary_is_recomputed_from_the_per_seed_files(quick):
    out, stdout = quick
    runs = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    summary = json.loads((out / "summary.json").read_text())
    for row in summary["contenders"]:
        setting = "A" if row["setting"] == "C" and row["beta"] == 0.01 else row["setting"]
        mine = [r for r in runs if r["setting"] == setting and r["label"] == row["contender"]
                and r["kl_coef"] == row["beta"]]
        assert sorted(r["seed"] for r in mine) == row["seeds"] == [0, 1]
        gold = [r["evals"][-1]["gold"] for r in mine]  # the last held-out evaluation
        length = [np.mean([c["length"] for c in r["curve"][-max(1, len(r["curve"]) // 10):]]) for r in mine]
        assert row["final_gold"]["mean"] == pytest.approx(np.mean(gold))
        assert row["final_length"]["mean"] == pytest.approx(np.mean(length))
        auc = [np.mean([e["gold"] for e in r["evals"]]) for r in mine]  # gold over the whole run
        assert row["gold_auc"]["mean"] == pytest.approx(np.mean(auc))
        assert row["final_gold"]["low"] <= row["final_gold"]["mean"] <= row["final_gold"]["high"]
    claims = summary["claims"]
    assert set(claims) == {"A", "A_same_placement", "B", "C"}
    gold_a = lambda est: [r["evals"][-1]["gold"] for r in runs if r["setting"] == "A" and r["label"] == est]  # noqa: E731
    assert claims["A"]["final_gold"]["diff"] == pytest.approx(np.mean(gold_a("reinforce_pp")) - np.mean(gold_a("grpo")))
    for c in claims.values():
        assert c["verdict"] in VERDICTS or c["verdict"].startswith("not reproduced")
    assert "| claim |" in stdout and (out / "summary.md").read_text().count("\n") > len(summary["contenders"])


def test_a_rerun_of_a_finished_quick_benchmark_runs_nothing_again(quick):
    out, _ = quick
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    env = {**os.environ, "RLLIB_RPP_RESULTS": str(out / "results")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.paper_stability", "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(before)} runs, {len(before)} already in" in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == before
