"""The curriculum on the driver (`envs.curriculum`): every runner samples its shard of the prompts,
so the levels are decided here, from the whole batch, and pushed to every runner (like weights).
After each sample the batch's rewards per task are observed; a level that goes up (by accuracy or
by the schedule) reaches the runners before their next sample, and held-out evaluations use the
current levels. Its state is part of the algorithm's checkpoint."""

from __future__ import annotations

import math

from envs.curriculum import Curriculum
from envs.tasks import mixture
from rllib_rpp import schema as S


class CurriculumDriver:
    def __init__(self, algo):
        self.algo = algo
        tasks = mixture.tasks_of((algo.config.env_config or {}).get("prompts"))
        self.curriculum = Curriculum.of(tasks) if tasks else None

    def after_sample(self, episodes, iteration: int) -> None:
        """Observe the batch, move levels on after `iteration` iterations, log levels and accuracies."""
        if self.curriculum is None:
            return
        rewards: dict[str, list[float]] = {}
        for e in episodes:
            skipped = e.custom_data.get(S.REWARD_SKIPPED, False)
            rewards.setdefault(e.custom_data.get(S.TASK), []).append(math.nan if skipped else float(e.get_rewards(0)))
        for task, values in rewards.items():
            self.curriculum.observe(task, values)
        if self.curriculum.update(iteration):
            self.push()
        self.algo.metrics.log_dict(self.curriculum.metrics(), key=("reinforce_pp", "curriculum"), window=1)

    def push(self, runner_ids=None) -> None:
        """The current levels to the env runners (`runner_ids`: only those, e.g. restarted ones)."""
        if self.curriculum is not None:
            levels = dict(self.curriculum.levels)
            self.algo.env_runner_group.foreach_env_runner(lambda runner: runner.set_task_levels(levels),
                                                          remote_worker_ids=runner_ids,
                                                          local_env_runner=runner_ids is None)

    def eval_source(self, source):
        """A mixture's held-out prompts at the current levels."""
        if self.curriculum is None or not mixture.is_mixture(source):
            return source
        names = {t.name for t in mixture.tasks_of(source)}
        return {**source, "levels": {t: lvl for t, lvl in self.curriculum.levels.items() if t in names}}

    def get_state(self) -> dict | None:
        return None if self.curriculum is None else self.curriculum.get_state()

    def set_state(self, state: dict | None) -> None:
        if self.curriculum is not None and state is not None:
            self.curriculum.set_state(state)
            self.push()
