"""Environments with OpenEnv's interface but not its base class (the adapter asks only for the
interface), each with one flaw to test: few prompts, a step that hangs, a reset that forgets its seed,
an action the adapter cannot fill. Importable by path ("openenv_helpers:Name") in reward processes."""

from __future__ import annotations

import itertools
import time

from pydantic import BaseModel


class Say(BaseModel):
    words: str
    metadata: dict = {}


class Seen(BaseModel):
    question: str = ""
    done: bool = False
    reward: float | None = None
    metadata: dict = {}


class AdditionEnv:
    """`seed % modulo` + 1 = ?; a step whose text is "hang" sleeps for a minute, "boom" raises."""

    def __init__(self, modulo: int = 1000):
        self.modulo, self.a = modulo, None

    def reset(self, seed: int | None = None, **kwargs) -> Seen:
        self.a = (seed or 0) % self.modulo
        return Seen(question=f"{self.a}+1=")

    def step(self, action: Say, **kwargs) -> Seen:
        if action.words == "hang":
            time.sleep(60)
        if action.words == "boom":
            raise RuntimeError("the environment broke")
        return Seen(done=True, reward=float(action.words.strip() == str(self.a + 1)))

    @property
    def state(self):
        return {}


_COUNTER = itertools.count()


class ForgetfulEnv(AdditionEnv):
    """Ignores the seed: every reset is the next question."""

    def reset(self, seed: int | None = None, **kwargs) -> Seen:
        return super().reset(seed=500 + next(_COUNTER))


class TwoTexts(BaseModel):
    first: str
    second: str


class TwoFieldEnv(AdditionEnv):
    def step(self, action: TwoTexts, **kwargs) -> Seen:
        return Seen(done=True, reward=0.0)


class NoRewardEnv(AdditionEnv):
    def step(self, action: Say, **kwargs) -> Seen:
        return Seen(done=True, reward=None)
