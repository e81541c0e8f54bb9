"""Talking to an OpenEnv environment for `envs.tasks.openenv_adapter` (see there): in process
(`LocalEnv`) or over an OpenEnv server's WebSocket sessions (`ask_server`, with OpenEnv's own
client). `openenv` itself is imported only by code that talks to a server."""

from __future__ import annotations

import asyncio
import threading
import typing
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from envs.reward_process import RewardUnavailable

_NOT_PROMPTS = ("done", "reward", "metadata")


def openenv_client():
    """OpenEnv's WebSocket client class, or an error saying how to install the package."""
    try:
        from openenv.core import GenericEnvClient
    except ImportError as e:
        raise ValueError(f"an OpenEnv server needs the package openenv ({e}); install it with "
                         f"`pip install -e '.[openenv]' && pip install --no-deps openenv==0.10.0` (`make setup` "
                         f"does)") from e
    return GenericEnvClient


# --- talking to an environment ----------------------------------------------------------------

def _plain(obs) -> dict:
    """An observation (pydantic model, or a server's dict) as a dict."""
    return obs.model_dump() if hasattr(obs, "model_dump") else dict(obs)


def prompt_of(obs: Mapping, field: str | None) -> str:
    """The task text of an observation: `field`, else `prompt`, else its only text field."""
    if field is None:
        texts = [k for k, v in obs.items() if isinstance(v, str) and k not in _NOT_PROMPTS]
        field = "prompt" if "prompt" in obs else texts[0] if len(texts) == 1 else None
        if field is None:
            raise ValueError(f"OpenEnv observation {sorted(obs)}: cannot tell which field is the prompt; set "
                             f"prompt_field to one of {texts or sorted(obs)}")
    if not isinstance(obs.get(field), str) or not obs[field]:
        raise ValueError(f"OpenEnv observation field {field!r} is {obs.get(field, '<missing>')!r}: expected the "
                         f"prompt's text (the observation's fields: {sorted(obs)})")
    return obs[field]


def text_field(properties: Mapping[str, Any], required: Sequence[str], field: str | None, what: str) -> str:
    """The action field that carries the completion: `field` (checked), else the only required text field."""
    if field is not None:
        if field not in properties:
            raise ValueError(f"action_field={field!r} is not a field of {what} (its fields: {sorted(properties)})")
        return field
    texts = [k for k in required if properties.get(k) in (str, "string")]
    if len(texts) != 1:
        raise ValueError(f"{what}: cannot tell which field takes the completion (required text fields: {texts}); "
                         f"set action_field to one of {sorted(k for k in properties if k != 'metadata')}")
    return texts[0]


def build_env(env, env_kwargs: Mapping | None):
    """An in-process environment from a "module:Class" path (or a class / factory) and its kwargs."""
    if isinstance(env, str):
        from rpp_hub.registry import import_path

        try:
            env = import_path(env)
        except (ImportError, AttributeError, ValueError) as e:
            raise ValueError(f"OpenEnv env {env!r} could not be imported: {e}; expected a \"module:Class\" path") from e
    if not callable(env):
        raise ValueError(f"OpenEnv env {env!r} is not a class or factory")
    instance = env(**dict(env_kwargs or {}))
    missing = [m for m in ("reset", "step") if not callable(getattr(instance, m, None))]
    if missing:
        raise ValueError(f"OpenEnv env {type(instance).__name__} has no {' or '.join(missing)}(): an environment "
                         f"needs reset(seed=...) and step(action) (OpenEnv's Environment interface)")
    return instance


class LocalEnv:
    """An in-process environment, its action class and the field the completion goes in."""

    def __init__(self, env, env_kwargs=None, action_field: str | None = None, prompt_field: str | None = None):
        self.env, self.prompt_field = build_env(env, env_kwargs), prompt_field
        name = type(self.env).__name__
        try:
            self.action_cls = typing.get_type_hints(type(self.env).step).get("action")
        except Exception:  # noqa: BLE001 - unresolvable annotations: no class to build the action from
            self.action_cls = None
        fields = getattr(self.action_cls, "model_fields", None)
        if not fields:
            raise ValueError(f"OpenEnv env {name}: step()'s `action` parameter has no pydantic Action class as its "
                             f"type hint, so the adapter cannot build an action from a completion")
        props = {k: f.annotation for k, f in fields.items()}
        self.action_field = text_field(props, [k for k, f in fields.items() if f.is_required()], action_field,
                                       f"{name}'s action {self.action_cls.__name__}")

    def reset(self, kwargs: Mapping) -> str:
        return prompt_of(_plain(self.env.reset(**kwargs)), self.prompt_field)

    def step(self, text: str):
        obs = self.env.step(self.action_cls(**{self.action_field: text}))
        return getattr(obs, "reward", None) if not isinstance(obs, Mapping) else obs.get("reward")

    def close(self):
        if callable(getattr(self.env, "close", None)):
            self.env.close()


def check_url(url: str) -> str:
    parts = urllib.parse.urlsplit(str(url))
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError(f"OpenEnv server URL {url!r} is invalid: expected http(s):// or ws(s)://host[:port]")
    return str(url).rstrip("/")


def _run(coro):
    """Run a coroutine to its end from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(v=_capture(coro)), daemon=True)
    thread.start()
    thread.join()
    if "e" in box.get("v", {}):
        raise box["v"]["e"]
    return box["v"]["r"]


def _capture(coro) -> dict:
    try:
        return {"r": asyncio.run(coro)}
    except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
        return {"e": e}


def server_action_field(url: str, field: str | None, timeout_s: float) -> str:
    """The action field from the server's `/schema` (OpenEnv's JSON schema of its action)."""
    import json
    import urllib.request

    http = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    try:
        with urllib.request.urlopen(f"{http}/schema", timeout=timeout_s) as r:  # noqa: S310 - the user's server
            schema = json.loads(r.read())["action"]
    except OSError as e:
        raise ValueError(f"OpenEnv server {url} is unreachable: {getattr(e, 'reason', e)} (GET /schema)") from e
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"OpenEnv server {url}: its /schema is not OpenEnv's (no action schema: {e})") from e
    props = schema.get("properties", {})
    return text_field({k: v.get("type") for k, v in props.items()}, schema.get("required", []), field,
                      f"the action of the server at {url}")


async def episodes_on_server(url: str, jobs: Sequence[tuple[Mapping, str | None]], *, action_field: str | None,
                             prompt_field: str | None, timeout_s: float, concurrency: int) -> list:
    """For each (reset kwargs, completion or None): the reset's prompt (completion None) or the step's
    reward, over `concurrency` WebSocket sessions, each message within `timeout_s`."""
    GenericEnvClient = openenv_client()  # noqa: N806 - a class
    out: list = [None] * len(jobs)
    queue = list(range(len(jobs)))[::-1]

    async def session():
        async with GenericEnvClient(base_url=url, connect_timeout_s=min(10.0, timeout_s),
                                    message_timeout_s=timeout_s) as env:
            while queue:
                i = queue.pop()
                reset, completion = jobs[i]
                first = await env.reset(**reset)
                prompt = prompt_of(first.observation, prompt_field)
                if completion is None:
                    out[i] = prompt
                    continue
                out[i] = (prompt, (await env.step({action_field: completion})).reward)

    await asyncio.gather(*(session() for _ in range(max(1, min(concurrency, len(jobs))))))
    return out


def ask_server(url: str, jobs, *, timeout_s: float, deadline_s: float | None = None, **options) -> list:
    """`episodes_on_server` from sync code; a server that cannot be reached, refuses a session or
    does not answer raises RewardUnavailable (nothing of the batch is to blame on a sample)."""
    try:
        coro = episodes_on_server(url, jobs, timeout_s=timeout_s, **options)
        return _run(asyncio.wait_for(coro, deadline_s) if deadline_s else coro)
    except (TimeoutError, asyncio.TimeoutError):
        raise RewardUnavailable(f"OpenEnv server {url} did not answer within {deadline_s or timeout_s:g} s",
                                timed_out=True) from None
    except (ConnectionError, OSError) as e:
        raise RewardUnavailable(f"OpenEnv server {url} is unreachable ({type(e).__name__}: {e})") from None
    except RuntimeError as e:
        if "CAPACITY_REACHED" in str(e) or "SESSION_ERROR" in str(e) or "FACTORY_ERROR" in str(e):
            raise RewardUnavailable(f"OpenEnv server {url} refused a session: {e}") from None
        raise
