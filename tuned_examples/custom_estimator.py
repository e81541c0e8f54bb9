"""Bring your own advantage estimator: one `Estimator` at module level, named by its path.

A path ("module:NAME") is imported by every process that needs it, remote learners included;
`register_estimator(...)` alone only adds a name in the process that calls it.

    python -m tuned_examples.custom_estimator
"""

import torch

from rllib_rpp import ReinforcePPConfig
from rllib_rpp.estimators import Estimator, Groups


def median_baseline(r: torch.Tensor, g: Groups) -> torch.Tensor:
    """s = r̂ - median_g(r̂): a per-prompt baseline that one outlier sample cannot drag."""
    medians = torch.stack([r[g.index == i].median() for i in range(len(g.counts))])
    return r - g.broadcast(medians)


MEDIAN_BASELINE = Estimator("median_baseline", median_baseline, needs_groups=True, whitened=True,
                            default_kl_placement="reward", description="s = r̂ - median_g(r̂); Â globally whitened")


def build_config(num_learners: int = 0) -> ReinforcePPConfig:
    return (
        ReinforcePPConfig()
        .environment(env_config={"prompts": "arithmetic", "reward_funcs": ["exact_match"]})
        .generation(max_new_tokens=5)
        .training(advantage_estimator="tuned_examples.custom_estimator:MEDIAN_BASELINE", lr=2e-4,
                  num_prompts_per_iteration=32, minibatch_size=64 // max(1, num_learners))
        .learners(num_learners=num_learners)
    )


if __name__ == "__main__":
    algo = build_config().build_algo()
    for _ in range(5):
        print(algo.train()["env_runners"]["reward"])
