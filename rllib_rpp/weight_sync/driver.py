"""New weights to remote vLLM runners through vLLM's weight-transfer engines: learner rank 0
broadcasts every tensor once to all runners (rllib_rpp.weight_sync.engines), instead of the
driver pickling the whole model through Ray's object store.

Both ends block in the same broadcast, so the runners' receive calls are issued first (as async
actor calls) and the learners' send runs while they wait. The group is formed on first use and
again whenever the set of healthy runners changes or a transfer fails (a runner or a learner
died half-way; with gloo the runners receive everything before touching their model, so a failed
transfer leaves them serving their old weights, which is not checked for vLLM's NCCL engine); that
sync then goes through the object store to the runners that are left, and the next one forms a
new group.
"""

from __future__ import annotations

import logging
import time

import ray

from rllib_rpp.reinforce_pp.errors import LearnersTimedOut

logger = logging.getLogger(__name__)

INIT, RECEIVE = "weight_transfer_init", "weight_transfer"
LEARNER_GRACE_S = 60.0  # past the transfer timeout, before a learner counts as stuck


def transfer_ranks(num_runners: int, tensor_parallel_size: int = 1) -> tuple[list[int], int]:
    """Each runner's rank offset in the transfer group, and the group's size. Learner rank 0 is
    rank 0; vLLM gives the worker of TP rank r the rank offset + r (data-parallel rank 0, one
    pipeline stage), so runner i starts at 1 + i·TP and the group holds 1 + N·TP ranks."""
    return [1 + i * tensor_parallel_size for i in range(num_runners)], 1 + num_runners * tensor_parallel_size


class EngineWeightSync:
    def __init__(self, algo, engine: str):
        self.algo, self.engine = algo, engine
        self.ids: list[int] | None = None  # the runners of the current group (None: no group)
        self.meta: dict | None = None

    @property
    def timeout_s(self) -> float:
        return self.algo.config.weight_sync_timeout_s

    def _on_learners(self, fn):
        """fn on every learner, bounded: a learner gives up a transfer after `timeout_s` (its sender
        aborts), so one that has not answered a grace period later is stuck."""
        return self.algo._on_learners(fn, timeout_s=self.timeout_s + LEARNER_GRACE_S)

    def _wait(self, tag: str, ids: list[int]) -> None:
        """Every runner's answer to the `tag` calls; raises naming the runners that failed."""
        group = self.algo.env_runner_group
        pending, failed, deadline = set(ids), {}, time.time() + self.timeout_s
        while pending and time.time() < deadline:
            for worker_id, ref in group.fetch_ready_async_reqs(tags=tag, timeout_seconds=0.2, return_obj_refs=True):
                pending.discard(worker_id)
                try:
                    error = ray.get(ref)  # the runner's own error text, or None
                except Exception as e:  # noqa: BLE001 - the runner died: reported below
                    error = f"{type(e).__name__}: {e}"
                if error:
                    failed[worker_id] = error
        if failed or pending:
            what = "; ".join(f"runner {i}: {e}"[:300] for i, e in failed.items())
            raise RuntimeError(f"weight transfer ({self.engine}) failed: {what or ''}"
                               f"{' runners ' + str(sorted(pending)) + ' timed out' if pending else ''}")

    def _connect(self, ids: list[int]) -> None:
        algo = self.algo
        group = algo.env_runner_group
        address, port = self._on_learners(lambda learner: learner.weight_transfer_endpoint())
        tp = (algo.config.sampler_kwargs or {}).get("tensor_parallel_size", 1)
        offsets, world = transfer_ranks(len(ids), tp)
        timeout, engine = self.timeout_s, self.engine
        funcs = [lambda runner, off=off: runner.init_weight_transfer(address=address, port=port, rank_offset=off,
                                                                     world_size=world, timeout_s=timeout)
                 for off in offsets]
        group.foreach_env_runner_async(funcs, tag=INIT, remote_worker_ids=ids)
        self._on_learners(lambda learner: learner.connect_weight_transfer(address, port, world, engine, timeout))
        self._wait(INIT, ids)
        self.meta = self._on_learners(lambda learner: learner.weight_metadata())
        self.ids = ids

    def _transfer(self, ids: list[int], version: int) -> None:
        if ids != self.ids:
            self._connect(ids)
        meta = self.meta
        self.algo.env_runner_group.foreach_env_runner_async(
            lambda runner: runner.receive_weights(meta, version), tag=RECEIVE, remote_worker_ids=ids)
        self._on_learners(lambda learner: learner.send_weights(version))
        self._wait(RECEIVE, ids)

    def reset(self) -> None:
        """Forget the group (closing the learner's end makes any waiting runner fail at once)."""
        self.ids = None
        self._on_learners(lambda learner: learner.close_weight_transfer())
        group = self.algo.env_runner_group
        for tag in (INIT, RECEIVE):  # drain the calls of the broken transfer
            for _, ref in group.fetch_ready_async_reqs(tags=tag, timeout_seconds=1.0, return_obj_refs=True):
                try:
                    ray.get(ref)
                except Exception:  # noqa: BLE001, S110 - that transfer is being given up on
                    pass

    def sync(self, version: int, fallback) -> None:
        """Broadcast the weights; if that fails, `fallback()` (the object-store path) this time."""
        ids = self.algo.env_runner_group.healthy_env_runner_ids()
        if not ids:
            return
        try:
            self._transfer(ids, version)
        except LearnersTimedOut as e:  # stuck past its own abort: every later call would queue behind it
            raise RuntimeError(f"weight transfer ({self.engine}): {e} (the learners abort a transfer after "
                               f"weight_sync_timeout_s={self.timeout_s:g} s, so one is stuck); stopping the run "
                               f"instead of waiting on it") from e
        except Exception as e:  # noqa: BLE001 - logged, then the weights go the other way
            logger.warning(f"weight transfer through the {self.engine} engine failed ({e}); sending these weights "
                           f"through the object store and forming a new group at the next sync")
            self.reset()
            fallback()
