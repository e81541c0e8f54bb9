"""Token-balanced learner shards: order completions so that dealing them round-robin to the
learners (RLlib's `ShardEpisodesIterator` with one-step episodes) gives every learner the same
number of completions and about the same number of tokens (a DDP/FSDP step waits for the
slowest learner)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def balanced_order(lengths: Sequence[int], num_shards: int) -> list[int]:
    """A permutation of range(len(lengths)) whose i-th element goes to shard i % num_shards.

    Longest first, each completion goes to the shard with the fewest tokens that still has room
    (len(lengths) // num_shards each; needs an even split). Within a shard the input order is kept,
    so a shuffled input stays shuffled."""
    n = len(lengths)
    if num_shards < 1 or n % num_shards:
        raise ValueError(f"{n} completions do not split evenly over {num_shards} learners")
    per_shard = n // num_shards
    shards: list[list[int]] = [[] for _ in range(num_shards)]
    heap = [(0, s) for s in range(num_shards)]  # (tokens, shard)
    for i in sorted(range(n), key=lambda i: -lengths[i]):
        tokens, s = heapq.heappop(heap)
        shards[s].append(i)
        if len(shards[s]) < per_shard:
            heapq.heappush(heap, (tokens + lengths[i], s))
    for shard in shards:
        shard.sort()
    return [shards[s][k] for k in range(per_shard) for s in range(num_shards)]
