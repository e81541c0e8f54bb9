"""The paper's §5.1 at small scale: stability against reward and length hacking (setting A), rule
rewards (B), reward gained per unit of KL (C), for REINFORCE++ and the other estimators.

    python -m benchmarks.paper_stability [--seeds 5] [--headline-seeds 10] [--frontier-seeds 3] [--quick]

Policy `tiny-arith-verbose` (tiny-arith fine-tuned on answers of which a quarter are padded after
the sum), arithmetic prompts, 64 prompts x 4 samples, up to 24 new tokens, 2 mini-batches, 1 epoch,
the same lr, β, batch and number of updates for every contender.
- A: reward = `tiny-arith-length-rm`, a Bradley-Terry model trained on length-biased preference
  pairs (envs.reward_model.length_biased_pairs). The gold reward, which the policy never sees, is
  exact match (the sum and nothing after it). Contenders: each estimator with its default KL
  placement, and the two whose default is a loss term again with the KL in the reward (the
  placement of reinforce_pp and rloo), to separate the estimator from the placement.
- B: reward = exact match itself.
- C: A at β in FRONTIER_BETAS as well as A's β: reward gained against KL.
Per iteration: proxy reward, sampled gold accuracy, response length, KL(π_old || π_ref) per
sequence (k1, whatever is penalised); every `eval_every` iterations: held-out greedy gold, proxy
and length. Each run lands as one JSON file under benchmarks/results/paper_stability/runs/ (a
rerun skips the runs already there); `benchmarks.paper_report` turns them into the summary,
figures and verdicts. `--quick` (CI) checks the pipeline at a toy size, never the outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS, machine
from benchmarks.paper_runs import BETA

ESTIMATORS = ("reinforce_pp", "grpo", "reinforce_pp_baseline", "rloo")
POLICY, PROXY, GOLD = "tiny-arith-verbose", "tiny-arith-length-rm", "exact_match"
FRONTIER_BETAS = (0.002, 0.05)  # setting C adds these to BETA
FULL = {"iterations": 40, "num_prompts": 64, "samples_per_prompt": 4, "max_new_tokens": 24, "lr": 1e-4,
        "eval_every": 5, "eval_prompts": 200}
QUICK = {**FULL, "iterations": 3, "num_prompts": 8, "eval_every": 2, "eval_prompts": 16}


def contenders(headline_seeds: int, seeds: int, frontier_seeds: int) -> list[dict]:
    """Every (setting, estimator, KL placement, β) with its number of seeds. The headline pair
    (reinforce_pp and grpo in A) gets `headline_seeds`."""
    from rllib_rpp.estimators import ESTIMATORS as TABLE

    out = []
    for est in ESTIMATORS:
        n = headline_seeds if est in ("reinforce_pp", "grpo") else seeds
        out.append({"setting": "A", "estimator": est, "kl_placement": None, "kl_coef": BETA, "seeds": n})
        if TABLE[est].default_kl_placement != "reward":
            out.append({"setting": "A", "estimator": est, "kl_placement": "reward", "kl_coef": BETA, "seeds": seeds})
    out += [{"setting": "B", "estimator": est, "kl_placement": None, "kl_coef": BETA, "seeds": seeds}
            for est in ESTIMATORS]
    out += [{"setting": "C", "estimator": est, "kl_placement": None, "kl_coef": beta, "seeds": frontier_seeds}
            for beta in FRONTIER_BETAS for est in ESTIMATORS]
    return out


def label(run: dict) -> str:
    """A contender's name: the estimator, and the placement when it is not the estimator's default."""
    return run["estimator"] + (f" (KL in {run['kl_placement']})" if run.get("kl_placement") else "")


def run_key(spec: dict) -> str:
    place = spec["kl_placement"] or "default"
    return f"{spec['setting']}-{spec['estimator']}-{place}-beta{spec['kl_coef']:g}-seed{spec['seed']}"


def build_config(spec: dict):
    from rllib_rpp.app.presets import tiny_arith

    rule = spec["setting"] == "B"
    config = tiny_arith(estimator=spec["estimator"], seed=spec["seed"], lr=spec["lr"], kl_coef=spec["kl_coef"],
                        num_prompts=spec["num_prompts"], samples_per_prompt=spec["samples_per_prompt"], model=POLICY)
    # The gold reward rides along with weight 0: logged per sample, never optimised (A and C).
    config.environment(env_config={"prompts": "arithmetic", "reward_funcs": [GOLD] if rule else [PROXY, GOLD],
                                   "reward_weights": [1.0] if rule else [1.0, 0.0]})
    config.generation(max_new_tokens=spec["max_new_tokens"])
    if spec["kl_placement"]:
        config.training(kl_placement=spec["kl_placement"])
    return config


def _components(metrics: dict, prefix: str = "") -> tuple[float, float]:
    """(proxy, gold) from a result's per-reward-function means (the proxy is the other one)."""
    gold = metrics[f"{prefix}{GOLD}"]
    proxy = [v for k, v in metrics.items() if k.startswith(prefix) and k != f"{prefix}{GOLD}"]
    return (proxy[0] if proxy else gold), gold


def one_run(spec: dict) -> dict:
    """Train one contender for one seed; its per-iteration curve and held-out evaluations."""
    from envs.tasks.arithmetic import arithmetic_prompts

    heldout = arithmetic_prompts("eval")[: spec["eval_prompts"]]
    algo = build_config(spec).build_algo()

    def evaluate(iteration: int) -> dict:
        res = algo.evaluate_greedy(heldout)
        proxy, gold = _components(res, "reward/")
        return {"iteration": iteration, "gold": gold, "proxy": proxy, "length": res["response_length_mean"]}

    t0 = time.time()
    evals, curve = [evaluate(0)], []
    for i in range(1, spec["iterations"] + 1):
        r = algo.train()
        runners, learner = r["env_runners"], r["learners"]["default_policy"]
        proxy, gold = _components(runners.get("reward", {}))
        curve.append({"iteration": i, "samples": i * spec["num_prompts"] * spec["samples_per_prompt"],
                      "proxy": proxy, "gold": gold, "length": runners["response_length_mean"],
                      "kl": learner["kl_ref_k1_per_seq"], "truncated": runners["truncated_fraction"]})
        if i % spec["eval_every"] == 0 or i == spec["iterations"]:
            evals.append(evaluate(i))
    algo.stop()
    return {**spec, "key": run_key(spec), "label": label(spec), "seconds": round(time.time() - t0, 1),
            "curve": curve, "evals": evals}


def child(specs: list[dict], out_dir: str) -> None:
    """Run `specs` one after another in this process (one Ray session), each saved as it ends."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    for spec in specs:
        res = one_run(spec)
        tmp = Path(out_dir) / f".{res['key']}.json"
        tmp.write_text(json.dumps(res))
        os.replace(tmp, Path(out_dir) / f"{res['key']}.json")  # a killed run never leaves half a file
        print(f"{res['key']}: {res['seconds']} s", flush=True)
    ray.shutdown()


def plan(args) -> list[dict]:
    shape = QUICK if args.quick else FULL
    shape = {**shape, **({"iterations": args.iterations} if args.iterations else {})}
    specs = []
    for c in contenders(max(args.headline_seeds, args.seeds), args.seeds, min(args.frontier_seeds, args.seeds)):
        n = c.pop("seeds")
        specs += [{**c, **shape, "seed": s} for s in range(n)]
    return specs


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="seeds per contender (seeds 0..N-1)")
    parser.add_argument("--headline-seeds", type=int, default=10, help="seeds for reinforce_pp and grpo in A")
    parser.add_argument("--frontier-seeds", type=int, default=3, help="seeds per extra β in C")
    parser.add_argument("--iterations", type=int, default=0, help="override the number of updates")
    parser.add_argument("--quick", action="store_true", help="toy size, 2 seeds: checks the pipeline (CI)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results/"
                        "paper_stability, or paper_stability_quick with --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = args.headline_seeds = args.frontier_seeds = 2
    out = args.out or RESULTS / ("paper_stability_quick" if args.quick else "paper_stability")
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    specs = plan(args)
    todo = pending(specs, runs_dir)
    print(f"{len(specs)} runs, {len(specs) - len(todo)} already in {runs_dir}", flush=True)
    t0 = time.time()
    _build_models()
    for i in range(0, len(todo), 8):  # a fresh process per 8 runs: a leak or crash costs little
        _spawn(todo[i : i + 8], runs_dir)
        print(f"{min(i + 8, len(todo))}/{len(todo)} runs, {time.time() - t0:.0f} s", flush=True)
    command = "python -m benchmarks.paper_stability " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "plan.json").write_text(json.dumps({"machine": machine(), "command": command.strip(),
                                               "keys": [run_key(s) for s in specs],
                                               "wall_s": round(time.time() - t0)}, indent=1))
    from benchmarks.paper_report import report

    report(out)
    return out


def pending(specs: list[dict], runs_dir: Path) -> list[dict]:
    """The planned runs not yet in `runs_dir`: a rerun continues an interrupted one. A run found
    there with other options (another --iterations, --quick into a full run's folder) is refused,
    not silently mixed in; a half-written file of a run killed mid-write is removed (it is rerun)."""
    for torn in runs_dir.glob(".*.json"):
        torn.unlink()
    todo = []
    for spec in specs:
        path = runs_dir / f"{run_key(spec)}.json"
        if not path.exists():
            todo.append(spec)
            continue
        try:
            done = json.loads(path.read_text())
        except ValueError:
            raise SystemExit(f"{path} is not a finished run (not JSON): delete it to run it again") from None
        differ = [f"{k}={done.get(k)!r} (this plan: {v!r})" for k, v in spec.items() if done.get(k) != v]
        if differ:
            raise SystemExit(f"{path} was run with other options: {', '.join(differ)}; give another --out, or delete "
                             f"it to run it again")
    return todo


def _build_models() -> None:
    """Build (or find cached) the policy and the proxy reward model once, before any run."""
    from rpp_hub.models import resolve_model_path

    for name in (POLICY, PROXY):
        resolve_model_path(name)


def _spawn(specs: list[dict], runs_dir: Path) -> None:
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.paper_stability", "--child",
                           json.dumps({"specs": specs, "out": str(runs_dir)})],
                          env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    print(proc.stdout, end="", flush=True)
    if proc.returncode:
        raise RuntimeError(f"a benchmark child failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        job = json.loads(sys.argv[2])
        child(job["specs"], job["out"])
    else:
        main()
