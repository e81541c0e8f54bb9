"""The console: one live line on a terminal, periodic plain lines otherwise, nothing when quiet."""

import io

import pytest

from rllib_rpp.app.console import Console, status_line, time_left


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _statuses(n):
    return [status_line(i, 0.5 * i, 0.1 * i, 0.01, 100.0, time_left(0.5 * i, None, i, n)) for i in range(1, n + 1)]


def test_a_terminal_gets_one_line_redrawn_in_place_with_events_kept_above_it():
    out = Stream(tty=True)
    console = Console(out)
    assert console.mode == "terminal"
    for i, line in enumerate(_statuses(50), start=1):
        console.status(line)
        if i == 20:
            console.event("[eval] after 10.0 s of training: held-out greedy reward 0.500 on 500 prompts")
    console.close()
    text = out.getvalue()
    # 50 statuses, 1 event: two finished lines (the event and the last status), the rest overwritten.
    assert text.count("\n") == 2 and text.count("\r\x1b[K") == 51
    screen = [seg.rsplit("\r\x1b[K", 1)[-1] for seg in text.split("\n") if seg]  # what stays visible
    assert screen[0].startswith("[eval] after 10.0 s") and screen[1].startswith("iter   50")
    assert "0 iterations left" in screen[1]


def test_plain_output_prints_every_n_seconds_and_the_last_status_at_the_end():
    out, clock = Stream(tty=False), Clock()
    console = Console(out, every_s=30, clock=clock)
    assert console.mode == "plain"
    for line in _statuses(100):  # one iteration every 0.5 s: 50 s in all
        console.status(line)
        clock.t += 0.5
        if clock.t == 20:
            console.event("checkpoint: /x/iter_000040")
    console.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [ln.split("|")[0].strip() for ln in lines if ln.startswith("iter")] == ["iter    1", "iter   61",
                                                                                     "iter  100"]
    assert "checkpoint: /x/iter_000040" in lines


def test_plain_output_every_iteration_and_quiet():
    out = Stream(tty=False)
    console = Console(out, every_s=0)
    for line in _statuses(5):
        console.status(line)
    assert len(out.getvalue().splitlines()) == 5
    quiet = Stream(tty=True)
    console = Console(quiet, mode="quiet")
    for line in _statuses(5):
        console.status(line)
    console.event("x")
    console.close()
    assert quiet.getvalue() == ""


def test_bad_console_settings_are_named():
    with pytest.raises(ValueError, match="--log-every -1"):
        Console(Stream(False), every_s=-1)
    with pytest.raises(ValueError, match="mode 'loud'"):
        Console(Stream(False), mode="loud")


def test_tunes_notices_a_user_cannot_act_on_are_dropped_at_their_loggers_and_nothing_else(monkeypatch):
    """`build_algo()` printed "Trainable.setup took ... reuse_actors=True" and "Install gputil for GPU
    system monitoring." (issue 30): both are dropped where Tune logs them, its other notices are kept."""
    import logging

    from ray.tune import Trainable
    from ray.tune.trainable import trainable
    from ray.tune.utils import util

    import rllib_rpp.reinforce_pp  # noqa: F401 - installs the filters

    class Quick(Trainable):
        def setup(self, config):
            pass

        def step(self):
            return {}

    monkeypatch.setattr(trainable, "SETUP_TIME_THRESHOLD", -1.0)  # every setup counts as slow
    monkeypatch.setattr(util, "_import_gputil", lambda: None)  # as on a machine without gputil
    monkeypatch.setattr(util, "psutil", None)  # a notice that stays: psutil is what measures CPU and RAM
    said = []
    heard = logging.Handler(logging.INFO)
    heard.emit = lambda record: said.append(record.getMessage())
    tune_logger = logging.getLogger("ray.tune")  # Ray's loggers do not propagate to the root (caplog)
    tune_logger.addHandler(heard)
    monkeypatch.setattr(tune_logger, "level", logging.INFO)
    try:
        Quick({"log_sys_usage": True})  # (no monitor thread is started: stop() would fail)
    finally:
        tune_logger.removeHandler(heard)
    assert not [m for m in said if "Trainable.setup took" in m or "gputil" in m], said
    assert "Install psutil to monitor system performance." in said


def test_rllib_notices_about_the_api_stack_and_its_own_rlmodule_config_are_dropped_and_nothing_else():
    """Every build printed RLlib's "You are running ReinforcePP on the new API stack!" and the
    RLModuleConfig deprecation that RLModule.__init__ triggers itself (ray 2.60): both dropped where
    they are logged; other deprecations and config warnings are kept."""
    import logging

    from ray._common.deprecation import deprecation_warning

    import rllib_rpp.reinforce_pp  # noqa: F401 - installs the filters

    said = []
    heard = logging.Handler(logging.INFO)
    heard.emit = lambda record: said.append(record.getMessage())
    loggers = [logging.getLogger("ray._common.deprecation"), logging.getLogger("ray.rllib.algorithms.algorithm_config")]
    for logger in loggers:
        logger.addHandler(heard)
    try:
        deprecation_warning(old="RLModule(config=[RLModuleConfig object])", new="RLModule(observation_space=..)",
                            error=False)
        deprecation_warning(old="something_else()", new="other()", error=False)
        loggers[1].warning("You are running ReinforcePP on the new API stack! This is the new default behavior.")
        loggers[1].warning("You are running PPO with a learner on the CPU.")
    finally:
        for logger in loggers:
            logger.removeHandler(heard)
    assert not [m for m in said if "RLModuleConfig" in m or "ReinforcePP on the new API stack" in m], said
    assert any("something_else()" in m for m in said) and any("PPO with a learner" in m for m in said), said

