"""An OpenEnv environment trained on as a single-turn task, in process and over its server.

`ReasoningGymEnv` is written against OpenEnv's own interface (`openenv.core.env_server`: an
`Environment` with `reset` / `step` / `state`, pydantic `Action` and `Observation` types), as any
outside OpenEnv environment is: `reset(seed=...)` draws reasoning-gym's item for that seed and
returns its question as the observation's `prompt`; `step(Answer(text=...))` scores the answer
with reasoning-gym's own verifier and ends the episode. rllib-rpp's adapter
(`envs.tasks.openenv_adapter`) asks nothing more of it: the observation's prompt in, one
completion out as the action's one text field, one step, its reward.

    python -m tuned_examples.openenv_env --serve --port 8011     # the same environment as an OpenEnv server
    python -m tuned_examples.openenv_env [--url http://127.0.0.1:8011] [--iterations 20]

(OpenEnv's repository has a reasoning-gym environment too, but it speaks MCP tools and is not
published on PyPI; this one is ~40 lines.)
"""

from __future__ import annotations

import argparse
import functools

from openenv.core.env_server import Action, Environment, Observation, State, create_fastapi_app

from envs.tasks import reasoning_gym as rg

TASK = {"dataset": "chain_sum", "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}}


class Answer(Action):
    text: str


class Question(Observation):
    prompt: str = ""


class ReasoningGymEnv(Environment[Answer, Question, State]):
    """One reasoning-gym question per episode; reward 1.0 when its verifier accepts the answer."""

    SUPPORTS_CONCURRENT_SESSIONS = True  # no state shared between instances

    def __init__(self, dataset: str = TASK["dataset"], config: dict | None = None, compact: bool = True):
        super().__init__()
        self.dataset, self.config = dataset, dict(TASK["config"] if config is None else config)
        self.compact = compact  # "4+3=" (what the built-in tiny model reads) instead of the question
        self._entry, self._state = None, State()

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs) -> Question:
        # reasoning-gym builds item 0 of a dataset from Random(seed): the same seed, the same question.
        self._entry = rg.create(self.dataset, self.config, 1, 0 if seed is None else seed)[0]
        self._state = State(episode_id=episode_id, step_count=0)
        expression = self._entry["metadata"].get("expression")
        return Question(prompt=expression.replace(" ", "") + "=" if self.compact and expression else
                        self._entry["question"])

    def step(self, action: Answer, timeout_s: float | None = None, **kwargs) -> Question:
        if self._entry is None:
            raise RuntimeError("step() before reset()")
        self._state.step_count += 1
        score = rg.verify([action.text], [self._entry])[0]  # reasoning-gym's verifier, binary
        return Question(prompt="", done=True, reward=score)

    @property
    def state(self) -> State:
        return self._state


def app(**env_kwargs):
    """The FastAPI app of OpenEnv's server (HTTP + WebSocket sessions) for this environment."""
    return create_fastapi_app(functools.partial(ReasoningGymEnv, **env_kwargs), Answer, Question,
                              max_concurrent_envs=16)


def serve(port: int, host: str = "127.0.0.1", **env_kwargs) -> None:
    import uvicorn

    uvicorn.run(app(**env_kwargs), host=host, port=port, log_level="warning")


def task(url: str | None = None, **options) -> dict:
    """The task source spec: this environment in process, or the server at `url`."""
    where = {"url": url} if url else {"env": "tuned_examples.openenv_env:ReasoningGymEnv"}
    return {"source": "openenv", **where, "size": 256, "eval_size": 32, **options}


def build_config(url: str | None = None, *, num_prompts: int = 16, samples: int = 4):
    from rllib_rpp import ReinforcePPConfig

    return (ReinforcePPConfig()
            .environment(env_config={"prompts": task(url), "reward_funcs": ["openenv"]})
            .rl_module(model_config={"model": "tiny-arith"})
            .generation(max_new_tokens=4)
            .training(lr=2e-4, num_prompts_per_iteration=num_prompts, num_samples_per_prompt=samples,
                      minibatch_size=num_prompts * samples // 2)
            .evaluation(greedy_eval_prompts=task(url, split="eval"))
            .rewards(reward_timeout_s=30.0, on_reward_error="skip")
            .debugging(seed=0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help="run the environment's OpenEnv server")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--url", help="train against this OpenEnv server instead of the in-process environment")
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.port)
    from rllib_rpp.app.driver import run

    return run(build_config(args.url), iterations=args.iterations, time_budget_s=None, name="openenv")


if __name__ == "__main__":
    main()
