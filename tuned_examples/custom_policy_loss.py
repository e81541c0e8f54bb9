"""Bring your own policy loss: one `PolicyLossEntry` at module level, named by its path.

A path ("module:NAME") is imported by every process that needs it, remote learners included;
`register_policy_loss(...)` alone only adds a name in the process that calls it.

    python -m tuned_examples.custom_policy_loss
"""

from rllib_rpp import ReinforcePPConfig
from rllib_rpp import functional as F
from rllib_rpp.policy_losses import PolicyLossEntry


def truncated_pg(logprobs, old_logprobs, advantages, mask, *, clip_high=0.2, **agg) -> F.PolicyLoss:
    """L_t = -sg(min(ρ_t, 1 + ε_high)) · Â_t · log π_θ(y_t): a policy gradient whose importance weight
    is truncated from above only (CISPO with no lower bound)."""
    return F.cispo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_low=1.0 - 1e-9, clip_high=clip_high,
                               **{k: v for k, v in agg.items() if k != "clip_low"})


TRUNCATED_PG = PolicyLossEntry("truncated_pg", truncated_pg, description="-sg(min(ρ, 1+ε)) Â log π")


def build_config(num_learners: int = 0) -> ReinforcePPConfig:
    return (
        ReinforcePPConfig()
        .environment(env_config={"prompts": "arithmetic", "reward_funcs": ["exact_match"]})
        .generation(max_new_tokens=5)
        .training(policy_loss="tuned_examples.custom_policy_loss:TRUNCATED_PG", lr=2e-4,
                  num_prompts_per_iteration=32, minibatch_size=64 // max(1, num_learners))
        .learners(num_learners=num_learners)
    )


if __name__ == "__main__":
    algo = build_config().build_algo()
    for _ in range(5):
        print(algo.train()["env_runners"]["reward"])
