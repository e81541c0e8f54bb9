"""The isolated reward process (issue 30): a fresh interpreter that never imports the user's
`__main__` (a script without a main guard trains, with local and remote env runners), that says
why it died, costs no sample when killed from outside, and imports what the parent's path holds."""

import threading

import pytest

from envs.rewards import RewardFunctionError, RewardStep


def test_the_reward_process_says_why_it_died_and_a_kill_from_outside_costs_no_sample(capfd):
    """A child that dies while starting names its exit status and its last stderr lines (not an
    EOFError); one that crashes on a sample gives that sample the policy, naming the signal; one killed
    from outside mid-call (an OOM kill) costs nothing: the bisection's parts score every sample."""
    import os
    import signal

    from envs.reward_guard import GuardStats, IsolatedReward, RewardUnavailable, guarded_call

    def exit_on_load():
        import os as _os
        import sys as _sys

        _sys.stderr.write("no licence for this scorer\n")
        _sys.stderr.flush()
        _os._exit(3)

    class DiesOnLoad:  # unpickling it in the child ends the child
        def __call__(self, completions, **kwargs):
            return [0.0] * len(completions)

        def __reduce__(self):
            return exit_on_load, ()

    with pytest.raises(RewardUnavailable, match=r"'licensed': its process exited with status 3 while starting.*"
                                                r"\n.*no licence for this scorer"):
        IsolatedReward(DiesOnLoad(), "licensed")(timeout_s=5.0, completions=["a"])
    with pytest.raises(RewardFunctionError, match=r"(?s)'DiesOnLoad': its process exited with status 3 while starting.*"
                                                  r"— 4 of the batch of 4 samples could not be scored"):
        RewardStep([DiesOnLoad()], timeout_s=5.0)(["p"] * 4, ["a"] * 4)  # at once: no sample is to blame

    def segfaults_on_boom(completions, **kwargs):
        import os as _os
        import signal as _signal

        print(f"scoring {len(completions)}")  # the function's own output reaches ours
        if "boom" in completions:
            _os.kill(_os.getpid(), _signal.SIGSEGV)
        return [1.0] * len(completions)

    step = RewardStep([segfaults_on_boom], timeout_s=5.0, on_error="skip")
    try:
        res = step(["p"] * 3, ["a", "boom", "b"])
        assert res.skipped.tolist() == [False, True, False] and res.stats.errors == 2  # the batch, then [1]
        with pytest.raises(RewardFunctionError, match=r"its process was killed by SIGSEGV during a call.*on sample 1"):
            RewardStep([segfaults_on_boom], timeout_s=5.0)(["p"] * 2, ["a", "boom"])
    finally:
        step.close()
    assert "scoring 3" in capfd.readouterr().out

    def slow_batch(completions, **kwargs):
        import time as _time

        if len(completions) == 4:
            _time.sleep(30)
        return [float(len(c)) for c in completions]

    killed = IsolatedReward(slow_batch, "slow_batch")
    killed(timeout_s=5.0, completions=["warm"])  # started
    threading.Timer(0.5, lambda: os.kill(killed.pid, signal.SIGKILL)).start()
    stats = GuardStats()
    values, failures = guarded_call(killed, {"completions": ["a", "bb", "ccc", "dddd"]}, 4, timeout_s=10.0,
                                    check=lambda out, samples: out, stats=stats)
    assert values == [1.0, 2.0, 3.0, 4.0] and failures == {} and stats.errors == 1
    killed.close()


def test_a_function_pickled_by_reference_imports_in_the_reward_process_from_the_parents_path(tmp_path, monkeypatch):
    from envs.reward_guard import IsolatedReward

    (tmp_path / "site_rewards_30.py").write_text("def length(completions, **kwargs):\n"
                                                 "    return [float(len(c)) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # on this process's sys.path only, not in PYTHONPATH
    import site_rewards_30

    reward = IsolatedReward(site_rewards_30.length, "length")
    try:
        assert reward(timeout_s=10.0, completions=["ab", "c"]) == [2.0, 1.0]
    finally:
        reward.close()


UNGUARDED_SCRIPT = """
import sys
from pathlib import Path

from rllib_rpp import ReinforcePPConfig

with open(Path(__file__).with_name("runs.log"), "a") as f:  # a top-level side effect: it must run once
    f.write("started\\n")


def last_number_correct(prompts, completions, answer, **kwargs):
    print("scored", len(completions), file=sys.stderr)
    return [float(c.strip() == a) for c, a in zip(completions, answer)]


for runners in map(int, sys.argv[1:]):
    config = (ReinforcePPConfig()
              .environment(env_config={"prompts": "arithmetic", "reward_funcs": [last_number_correct]})
              .generation(max_new_tokens=5).env_runners(num_env_runners=runners)
              .training(num_prompts_per_iteration=8, num_samples_per_prompt=2, minibatch_size=16))
    algo = config.build_algo()
    result = algo.train()
    print("TRAINED", runners, sorted(result["env_runners"]["reward"]), flush=True)
    algo.stop()
"""


def test_a_reward_function_in_a_script_without_a_main_guard_trains_with_local_and_remote_runners(tmp_path):
    """The README's pattern at a script's top level (no `if __name__ == "__main__":`): the isolated
    reward process never imports the script, so it runs once and trains, with the local env runner
    and with a remote one (issue 30: spawn re-ran the script in the child, which died with EOFError)."""
    import subprocess
    import sys

    script = tmp_path / "train_unguarded.py"
    script.write_text(UNGUARDED_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), "0", "1"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TRAINED 0 ['last_number_correct']" in proc.stdout and "TRAINED 1 ['last_number_correct']" in proc.stdout
    assert (tmp_path / "runs.log").read_text() == "started\n"  # the script ran once, in its own process only
    output = proc.stdout + proc.stderr
    assert "scored 16" in output and "(TextEnvRunner pid=" in output  # the function's prints, from both runners
