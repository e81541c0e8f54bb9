"""Where an iteration's batch comes from: a synchronous sample, or bounded-staleness async rollouts.

Async (`max_rollout_staleness=K >= 1`, remote env runners): each runner keeps one sample request
in flight. An iteration waits for the batch in flight, pushes the newest weights to the (now
idle) runners, issues the next requests, and trains on the batch it waited for while the runners
generate the next one. The batch was sampled with weights one update older than the learner's
(staleness 1); a batch more than K versions old is dropped, never trained on. PPO-clip's π_old
stays the recomputed current policy; the sampler gap is corrected per token by TIS (`tis_cap`)
and/or the ICEPOP-style mask (`is_mask_range`).
"""

from __future__ import annotations

import time

from rllib_rpp import schema as S
from rllib_rpp.reinforce_pp.errors import raise_user_errors, returning_user_errors


def shares(n: int, runners: int) -> list[int]:
    """n prompts over `runners` as evenly as possible (the first ones get one more)."""
    return [n // runners + (i < n % runners) for i in range(runners)]


def sample_sync(algo, num_prompts: int | None = None, new_weights_next: bool = True) -> tuple[list, list]:
    """One sample call on every healthy runner (the local runner when there are none) for
    `num_prompts` (default: the iteration's) prompts. `new_weights_next`: new weights reach every
    runner before its next sample (False when another sample with these weights may follow)."""
    group = algo.env_runner_group
    n = num_prompts or algo.config.num_prompts_per_iteration
    ids = group.healthy_env_runner_ids() if group.num_remote_env_runners() else []
    # User errors (a raising reward function) come back as results and are raised here, as themselves.
    if not ids:
        out = group.foreach_env_runner(returning_user_errors(
            lambda runner: (runner.sample(num_prompts=n, new_weights_next=new_weights_next), runner.get_metrics())),
            local_env_runner=True)
    else:
        out = group.foreach_env_runner(
            [returning_user_errors(lambda runner, k=k: (runner.sample(num_prompts=k, new_weights_next=new_weights_next),
                                                        runner.get_metrics()))
             for k in shares(n, len(ids)) if k],
            remote_worker_ids=ids[: min(n, len(ids))], local_env_runner=False)
    out = raise_user_errors(out)
    return [e for eps, _ in out for e in eps], [m for _, m in out]


def batch_version(episodes) -> int:
    """The oldest weights version any completion of the batch was sampled with."""
    return min(e.custom_data[S.WEIGHTS_VERSION] for e in episodes)


class AsyncRollouts:
    """One sample request in flight per remote runner, tagged "rollout"."""

    TAG = "rollout"

    def __init__(self, algo):
        self.algo = algo
        self.pending: set[int] = set()
        self.issued_at = 0.0

    def issue(self) -> None:
        group = self.algo.env_runner_group
        ids = group.healthy_env_runner_ids()
        if not ids:
            return
        funcs = [returning_user_errors(lambda runner, k=k: (runner.sample(num_prompts=k), runner.get_metrics()))
                 for k in shares(self.algo.config.num_prompts_per_iteration, len(ids))]
        group.foreach_env_runner_async(funcs, tag=self.TAG, remote_worker_ids=ids)
        self.pending, self.issued_at = set(ids), time.perf_counter()

    def wait(self) -> tuple[list, list, float]:
        """Every pending result (runners that fail meanwhile are given up on); the seconds waited."""
        group = self.algo.env_runner_group
        t0, results = time.perf_counter(), []
        while self.pending:
            for worker_id, result in group.fetch_ready_async_reqs(tags=self.TAG, timeout_seconds=0.5):
                results.append(result)
                self.pending.discard(worker_id)
            self.pending &= set(group.healthy_env_runner_ids())
        raise_user_errors(results)  # once nothing is in flight: the next wait starts clean
        episodes = [e for eps, _ in results for e in eps]
        return episodes, [m for _, m in results], time.perf_counter() - t0

    def next_batch(self, learner_version: int, max_staleness: int, push_weights) -> tuple[list, list, dict]:
        """The batch in flight (issuing one first if none is), after pushing the newest weights and
        issuing the next requests. Metrics: its staleness, the wait, whether it was dropped."""
        if not self.pending:
            self.issue()
        issued_at = self.issued_at
        episodes, metrics, waited = self.wait()
        rollout_s = time.perf_counter() - issued_at
        push_weights()
        self.issue()
        # The share of the rollout's wall time that ran while the learners trained.
        stats = {"wait_for_rollouts_s": waited, "rollout_wall_s": rollout_s,
                 "overlap_fraction": max(0.0, 1.0 - waited / rollout_s) if rollout_s > 0 else 0.0,
                 "staleness": 0.0, "dropped_batches": 0.0}
        if episodes:
            stats["staleness"] = float(learner_version - batch_version(episodes))
            if stats["staleness"] > max_staleness:
                stats["dropped_batches"] = 1.0
                episodes = []
        return episodes, metrics, stats

    def discard(self) -> None:
        """Wait for and drop the batch in flight (a restored checkpoint starts a fresh one)."""
        self.wait()
