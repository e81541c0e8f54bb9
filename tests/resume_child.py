"""Child process for the exact-resume test: `python tests/resume_child.py MODE PATH OUT`.

MODE "straight": train 3 iterations; "save": train 2 and save to PATH; "resume": restore PATH
and train 1. Writes the last iteration's metrics and the policy weights to OUT (torch.save)."""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ray  # noqa: E402
import torch  # noqa: E402

from rllib_rpp import ReinforcePP  # noqa: E402
from rllib_rpp.presets import tiny_arith as build_config  # noqa: E402


def main(mode, path, out):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    if mode == "resume":
        algo = ReinforcePP.from_checkpoint(path)
        iters = 1
    else:
        # Two epochs with reward normalisation, adaptive β and shuffling: every piece of state counts.
        algo = build_config(num_prompts=16, seed=3).training(
            num_epochs=2, minibatch_size=32, reward_normalization="running", kl_target=0.5).build_algo()
        iters = 2 if mode == "save" else 3
    for _ in range(iters):
        r = algo.train()
    if mode == "save":
        algo.save_to_path(path)
    learner = r["learners"]["default_policy"]
    metrics = {k: float(learner[k]) for k in ("policy_loss", "kl_coef", "kl_ref_per_token", "advantage_max",
                                              "clip_fraction")}
    metrics["reward"] = float(r["env_runners"]["episode_return_mean"])
    metrics["reward_processed_mean"] = float(r["reinforce_pp"]["reward_processed_mean"])
    torch.save({"metrics": metrics, "weights": algo.get_policy_state_dict()}, out)
    algo.stop()


if __name__ == "__main__":
    main(*sys.argv[1:4])
