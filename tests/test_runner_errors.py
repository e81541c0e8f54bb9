"""How an error in the user's input or code travels from an env runner to the driver (no cluster:
the runner's side and the driver's side called directly, the trip through pickle in between)."""

import pickle

import pytest
from ray.exceptions import RayTaskError

from envs.rewards import RewardFunctionError
from rllib_rpp.reinforce_pp.errors import RaisedInRunner, raise_user_errors, returning_user_errors


class Runner:
    worker_index = 2


class NeedsTwoArgs(ValueError):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def fails_with(error):
    def fn(runner):
        raise error

    return fn


def travel(result):
    return pickle.loads(pickle.dumps(result))


def test_user_errors_come_back_as_results_and_are_raised_on_the_driver_as_themselves():
    error = RewardFunctionError("reward function 'f' raised ... on sample 3")
    sent = returning_user_errors(fails_with(error))(Runner())
    assert isinstance(sent, RaisedInRunner) and sent.runner == 2
    with pytest.raises(RewardFunctionError, match="on sample 3") as caught:
        raise_user_errors([("episodes", "metrics"), travel(sent)])
    assert "raised in env runner 2" in caught.value.__notes__[0] and "in fn" in caught.value.__notes__[0]
    assert raise_user_errors([1, 2]) == [1, 2]
    with pytest.raises(RuntimeError, match="CUDA error"):  # not the user's: still a runner failure for RLlib
        returning_user_errors(fails_with(RuntimeError("CUDA error")))(Runner())


def test_an_error_from_a_reward_worker_is_unwrapped_and_one_that_cannot_travel_goes_as_text():
    cause = RewardFunctionError("reward function 'rm' raised ... on sample 1")
    wrapped = RayTaskError("score", "traceback of the reward worker", cause).as_instanceof_cause()
    sent = travel(returning_user_errors(fails_with(wrapped))(Runner()))
    assert type(sent.error) is RewardFunctionError and str(sent.error) == str(cause)
    sent = travel(returning_user_errors(fails_with(NeedsTwoArgs("x", "y")))(Runner()))
    with pytest.raises(RuntimeError, match="NeedsTwoArgs: x and y"):
        raise_user_errors([sent])
