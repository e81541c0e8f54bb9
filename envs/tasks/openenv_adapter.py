"""OpenEnv environments (PyPI `openenv`) as a task source and a reward: the observation's prompt in,
one completion out as the action, one step, its reward. Imported only when used; `openenv` itself
is imported only by code that talks to an environment.

A prompt source spec (wherever a prompt source is accepted, like reasoning-gym's):

    {"source": "openenv", "env": "my_pkg.my_env:MyEnv", "env_kwargs": {...},   # in process, or
     "url": "http://host:8000",                                                # an OpenEnv server
     "reset_kwargs": {...}, "split": "train" | "eval", "size": 256, "seed": 0, "eval_size": 32,
     "eval_seed": None, "prompt_field": None, "action_field": None, "instruction": "", "chat": False,
     "system_prompt": None, "name": None, "timeout_s": 30.0, "concurrency": 4}

What an environment must provide (OpenEnv's `Environment`, or any object with these methods):
- `reset(seed=s, **reset_kwargs)` returning an observation whose `prompt_field` (default: `prompt`,
  else its only text field) is the task's text, the same text for the same seed: the prompts are
  collected once from seeds `seed + i`, and the reward step resets each sample's episode again with
  its seed (a reset that gives another text is an error naming the seed);
- `step(action)` taking an action whose one text field (`action_field`, default: the action class's
  only required `str` field, from `step`'s type hints or, on a server, its `/schema`) holds the
  completion, and returning an observation with the `reward` (a number; None is an error).

Splits: the held-out split holds the first `eval_size` distinct prompts of seeds `eval_seed + j`
(default `eval_seed = seed + 1_000_003`), the train split the prompts of seeds `seed + i`, i < `size`,
that are not held out (as in `envs.tasks.reasoning_gym`).

Rows: `prompt`, `task` (`name`, default the class name or the server's host:port) and `openenv`
(where the environment is, the episode's reset arguments, the expected prompt, the fields).

The reward (`reward_funcs=["openenv"]`, `OpenEnvReward`) runs under the reward step's guarantees:
an in-process environment runs in a killable child process (`envs.reward_process.IsolatedReward`),
so a step past `reward_timeout_s` is killed and only the culprits get `on_reward_error`; a server is
asked over OpenEnv's WebSocket sessions (`concurrency` at once) within the call's timeout, and one
that cannot be reached, refuses a session (at capacity) or does not answer in time fails the whole
batch at once, naming the server (`RewardUnavailable`), as a reward server does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from envs.reward_process import IsolatedReward, RewardUnavailable
from envs.tasks.openenv_client import LocalEnv, ask_server, check_url, server_action_field

SOURCE = "openenv"
EVAL_SEED_OFFSET = 1_000_003
MAX_DRAWS = 20  # x eval_size: seeds tried for the held-out split's distinct prompts


def _positive(name: str, value, kind=int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
        raise ValueError(f"OpenEnv source: {name}={value!r} is invalid: expected a positive "
                         f"{'number' if kind is float else 'integer'}")


class _Prompts:
    """Collects an environment's prompts for given seeds (in process, or from its server)."""

    def __init__(self, env, url, env_kwargs, reset_kwargs, prompt_field, action_field, timeout_s, concurrency):
        self.url, self.reset_kwargs, self.prompt_field = url, dict(reset_kwargs or {}), prompt_field
        self.timeout_s, self.concurrency = timeout_s, concurrency
        if url is None:
            self.local = LocalEnv(env, env_kwargs, action_field, prompt_field)
            self.action_field = self.local.action_field
        else:
            self.local, self.action_field = None, server_action_field(url, action_field, timeout_s)

    def reset_args(self, seed: int) -> dict:
        return {"seed": seed, **self.reset_kwargs}

    def __call__(self, seeds) -> list[str]:
        if self.local is not None:
            return [self.local.reset(self.reset_args(s)) for s in seeds]
        try:
            return ask_server(self.url, [(self.reset_args(s), None) for s in seeds], timeout_s=self.timeout_s,
                              action_field=self.action_field, prompt_field=self.prompt_field,
                              concurrency=self.concurrency)
        except RewardUnavailable as e:
            raise ValueError(f"{e} (collecting the task's prompts)") from None

    def close(self):
        if self.local is not None:
            self.local.close()


def rows(*, env=None, url: str | None = None, env_kwargs: Mapping | None = None, reset_kwargs: Mapping | None = None,
         split: str = "train", size: int = 256, seed: int = 0, eval_size: int = 32, eval_seed: int | None = None,
         prompt_field: str | None = None, action_field: str | None = None, instruction: str = "",
         chat: bool = False, system_prompt: str | None = None, name: str | None = None, timeout_s: float = 30.0,
         concurrency: int = 4) -> list[dict]:
    """The prompt rows of one split (the task source entry point; options in the module docstring)."""
    if (env is None) == (url is None):
        raise ValueError(f"OpenEnv source: give exactly one of env (an in-process environment, \"module:Class\") "
                         f"and url (an OpenEnv server); got env={env!r}, url={url!r}")
    if split not in ("train", "eval"):
        raise ValueError(f"OpenEnv source: split={split!r} is invalid: expected 'train' or 'eval'")
    for key, value in (("size", size), ("eval_size", eval_size), ("concurrency", concurrency)):
        _positive(key, value)
    _positive("timeout_s", timeout_s, float)
    if system_prompt is not None and not chat:
        raise ValueError("OpenEnv source: system_prompt needs chat=True (a plain-text prompt has no system turn)")
    url = check_url(url) if url is not None else None
    where = {"url": url, "concurrency": concurrency} if url else {"env": env, "env_kwargs": dict(env_kwargs or {})}
    name = name or (url.split("://", 1)[1] if url else str(getattr(env, "__name__", env)).split(":")[-1])
    collect = _Prompts(env, url, env_kwargs, reset_kwargs, prompt_field, action_field, timeout_s, concurrency)
    try:
        held_out: dict[str, int] = {}
        base, drawn = seed + EVAL_SEED_OFFSET if eval_seed is None else eval_seed, 0
        while len(held_out) < eval_size and drawn < MAX_DRAWS * eval_size:
            seeds = range(base + drawn, base + drawn + eval_size)
            for s, text in zip(seeds, collect(seeds)):
                if len(held_out) < eval_size:
                    held_out.setdefault(text, s)
            drawn += eval_size
        if len(held_out) < eval_size:
            raise ValueError(f"OpenEnv env {name!r} gave only {len(held_out)} distinct prompts for {drawn} seeds, "
                             f"fewer than eval_size={eval_size}")
        if split == "eval":
            episodes = [(s, text) for text, s in held_out.items()]
        else:
            seeds = range(seed, seed + size)
            episodes = [(s, text) for s, text in zip(seeds, collect(seeds)) if text not in held_out]
            if not episodes:
                raise ValueError(f"every one of the {size} train prompts of OpenEnv env {name!r} is also held out: "
                                 f"lower eval_size={eval_size}")
    finally:
        collect.close()
    out = []
    for s, text in episodes:
        body = text + instruction
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": body}]
        out.append({"prompt": messages if chat else body, "task": name, "openenv": {
            **where, "reset": collect.reset_args(s), "prompt": text, "prompt_field": prompt_field,
            "action_field": collect.action_field}})
    return out


def spec(split: str = "train", **options) -> dict:
    """The prompt-source spec of one split; `spec("eval", **same)` is its held-out twin."""
    return {"source": SOURCE, "split": split, **options}


# --- the reward ------------------------------------------------------------------------------

def _text(completion) -> str:
    return "".join(m.get("content", "") for m in completion) if isinstance(completion, list) else completion


def _checked(episode: Mapping, prompt: str, reward) -> float:
    if prompt != episode["prompt"]:
        raise ValueError(f"the environment's reset({_args(episode)}) gave the prompt {prompt[:80]!r}, not this "
                         f"episode's {episode['prompt'][:80]!r}: the OpenEnv adapter needs a reset that "
                         f"reproduces an episode from its seed")
    if isinstance(reward, bool) or isinstance(reward, (int, float)):
        return float(reward)
    raise ValueError(f"the environment's step after reset({_args(episode)}) gave the reward {reward!r}: a "
                     f"single-turn task needs a number")


def _args(episode: Mapping) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in episode["reset"].items())


_ENVS: dict[str, LocalEnv] = {}  # in the reward's process: one instance per environment and fields


def reward_locally(completions, openenv, **kwargs) -> list:
    """Reset each sample's episode in process, step its completion, return the rewards."""
    out = []
    for completion, episode in zip(completions, openenv):
        key = repr((episode["env"], sorted(episode["env_kwargs"].items()), episode["action_field"],
                    episode["prompt_field"]))
        if key not in _ENVS:
            _ENVS[key] = LocalEnv(episode["env"], episode["env_kwargs"], episode["action_field"],
                                  episode["prompt_field"])
        env = _ENVS[key]
        prompt = env.reset(episode["reset"])
        out.append(_checked(episode, prompt, env.step(_text(completion)) if prompt == episode["prompt"] else None))
    return out


class OpenEnvReward:
    """`reward_funcs=["openenv"]`: each sample's episode reset from its `openenv` column and stepped
    with its completion. Enforces `timeout_s` itself (see the module docstring)."""

    guards_itself = True  # takes the call's timeout_s: in-process envs in a killable child, servers under a deadline

    def __init__(self):
        self.__name__ = "openenv"
        self._child: IsolatedReward | None = None

    def __call__(self, prompts, completions, openenv, timeout_s: float | None = None, **kwargs) -> list:
        n, out = len(completions), [None] * len(completions)
        deadline = time.monotonic() + timeout_s if timeout_s else None
        local = [i for i in range(n) if openenv[i] is not None and "env" in openenv[i]]
        if local:
            part = {"completions": [completions[i] for i in local], "openenv": [openenv[i] for i in local]}
            if timeout_s is None:
                values = reward_locally(**part)
            else:
                self._child = self._child or IsolatedReward(reward_locally, self.__name__)
                values = self._child(timeout_s=timeout_s, **part)
            for i, v in zip(local, values):
                out[i] = v
        servers: dict[str, list[int]] = {}
        for i in range(n):
            if openenv[i] is not None and "url" in openenv[i]:
                servers.setdefault(openenv[i]["url"], []).append(i)
        for url, idx in servers.items():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise RewardUnavailable(f"OpenEnv server {url} was not asked: the call's {timeout_s:g} s were used up",
                                        timed_out=True)
            first = openenv[idx[0]]
            answers = ask_server(url, [(openenv[i]["reset"], _text(completions[i])) for i in idx],
                                 timeout_s=left or 60.0, deadline_s=left, action_field=first["action_field"],
                                 prompt_field=first["prompt_field"], concurrency=first.get("concurrency", 4))
            for i, (prompt, reward) in zip(idx, answers):
                out[i] = _checked(openenv[i], prompt, reward)
        return out

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def close(self) -> None:
        if self._child is not None:
            self._child.close()
