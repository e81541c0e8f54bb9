"""DAPO's dynamic sampling: train only on prompt groups whose samples did not all get the same reward.

With a per-prompt baseline (GRPO, RLOO, REINFORCE++-baseline) such a group has advantage 0 on
every sample: it costs a learner pass and carries no gradient. `fill_batch` draws batches until
`target` informative groups are in hand or `max_rounds` draws have been made, then keeps the
first `target` groups (fewer if the rounds ran out: the metrics say so). `trim_for_update` then
drops trailing groups until the completions split evenly into the configured number of optimizer
steps per learner, so a short batch trains with smaller mini-batches, never with repeated rows.
No Ray.
"""

from __future__ import annotations

from collections.abc import Callable

from rllib_rpp import schema as S


def _groups(episodes) -> dict[int, list]:
    """Episodes by prompt-draw id, in order of first appearance."""
    out: dict[int, list] = {}
    for e in episodes:
        out.setdefault(e.custom_data[S.GROUP_ID], []).append(e)
    return out


def is_informative(group) -> bool:
    """True when the group's rewards (skipped samples left out) are not all equal."""
    rewards = {float(e.get_rewards(0)) for e in group if not e.custom_data.get(S.REWARD_SKIPPED, False)}
    return len(rewards) > 1


def fill_batch(draw: Callable[[int], tuple[list, list]], target: int, max_rounds: int) -> tuple[list, list, dict]:
    """draw(num_prompts) -> (episodes, runner metrics), called until `target` informative groups
    are kept or `max_rounds` draws were made (or a draw came back empty). Returns the episodes of
    at most `target` informative groups, every draw's runner metrics, and the statistics."""
    kept: list[list] = []
    metrics: list = []
    stats = {"rounds": 0.0, "prompts_drawn": 0.0, "groups_dropped": 0.0}
    while len(kept) < target and stats["rounds"] < max_rounds:
        episodes, round_metrics = draw(target - len(kept))
        stats["rounds"] += 1
        metrics += round_metrics
        if not episodes:
            break
        groups = list(_groups(episodes).values())
        stats["prompts_drawn"] += len(groups)
        good = [g for g in groups if is_informative(g)]
        stats["groups_dropped"] += len(groups) - len(good)
        kept += good
    kept = kept[:target]
    stats.update(informative_groups=float(len(kept)), short_of_target=float(len(kept) < target))
    return [e for g in kept for e in g], metrics, stats


def trim_for_update(episodes: list, *, learners: int, steps: int) -> tuple[list, int]:
    """Drop trailing groups until the completions split into `learners` x `steps` equal
    mini-batches; returns the episodes and the mini-batch size per learner (0: nothing to train)."""
    groups = list(_groups(episodes).values())
    while groups and sum(map(len, groups)) % (learners * steps):
        groups.pop()
    n = sum(map(len, groups))
    return [e for g in groups for e in g], n // (learners * steps)
