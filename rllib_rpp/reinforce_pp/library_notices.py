"""Library notices that a user of ReinforcePP cannot act on, dropped where they are logged: one
filter per source logger, matching only those messages (everything else those loggers say is
kept). Installed by importing the algorithm, so the API, the CLI and Tune's trial actors are all
calm, in every process that builds one."""

from __future__ import annotations

import logging

# source logger -> the starts of the messages it drops, and why they are noise here
NOTICES: dict[str, tuple[str, ...]] = {
    # Logged after a slow `setup` (ours loads models and starts actors): RLlib algorithms cannot be
    # reused (Algorithm.reset_config is False), so `reuse_actors=True` would not help.
    "ray.tune.trainable.trainable": ("Trainable.setup took",),
    # RLlib's default `log_sys_usage=True` starts Tune's monitor; GPU figures need a package the
    # user never asked for, and CPU/RAM usage is still reported without it.
    "ray.tune.utils.util": ("Install gputil for GPU system monitoring.",),
    # ReinforcePP exists only on the new API stack: there is nothing to switch.
    "ray.rllib.algorithms.algorithm_config": ("You are running ReinforcePP on the new API stack!",),
    # RLModule.__init__ itself builds the deprecated RLModuleConfig (ray 2.60), whatever the caller passes.
    "ray._common.deprecation": ("DeprecationWarning: `RLModule(config=[RLModuleConfig object])`",),
}


class _DropNotices(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def install() -> None:
    """Add the filters (once per logger)."""
    for name, starts in NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices(starts))
