"""The exact-resume test: `python tests/resume_child.py MODE PATH OUT [LAYOUT]`.

MODE "straight": train 2 iterations, save to PATH (weights also to OUT.saved), train a third
(the tests run this one in their own process: `run`); "resume" (a new process): restore PATH and
train 1. Writes the last iteration's metrics and the policy weights to OUT (torch.save).
LAYOUT "local" (default): one learner in the driver; "fsdp": two FSDP learners."""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ray  # noqa: E402
import torch  # noqa: E402

from rllib_rpp import ReinforcePP  # noqa: E402
from rllib_rpp.app.presets import tiny_arith as build_config  # noqa: E402


def main(mode, path, out, layout="local"):
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    run(mode, path, out, layout)


def run(mode, path, out, layout="local"):
    if mode == "resume":
        algo = ReinforcePP.from_checkpoint(path)
        r = algo.train()
    else:
        # Two epochs with reward normalisation, adaptive β and shuffling: every piece of state counts.
        config = build_config(num_prompts=16, seed=3).training(
            num_epochs=2, minibatch_size=32, reward_normalization="running", kl_target=0.5)
        if layout == "fsdp":  # one mini-batch per learner: Adam, β and the normaliser carry the state
            config = config.learners(num_learners=2).training(learner_strategy="fsdp", minibatch_size=32,
                                                               num_epochs=1)
        algo = config.build_algo()
        for _ in range(2):
            algo.train()
        algo.save_to_path(path)
        torch.save({"weights": algo.get_policy_state_dict()}, f"{out}.saved")
        r = algo.train()
    learner = r["learners"]["default_policy"]
    metrics = {k: float(learner[k]) for k in ("policy_loss", "kl_coef", "kl_ref_per_token", "advantage_max",
                                              "clip_fraction")}
    metrics["reward"] = float(r["env_runners"]["episode_return_mean"])
    metrics["reward_processed_mean"] = float(r["reinforce_pp"]["reward_processed_mean"])
    torch.save({"metrics": metrics, "weights": algo.get_policy_state_dict()}, out)
    algo.stop()


if __name__ == "__main__":
    main(*sys.argv[1:])
