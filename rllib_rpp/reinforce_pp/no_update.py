"""Iterations that have nothing to learn from, said out loud instead of trained on. No Ray.

Two ways a sampled batch can hold no signal: every sample's reward failed and was skipped
(`on_reward_error="skip"`), or dynamic sampling found no informative group in any round. Either
way the iteration makes no update (the weights, β, the reward normaliser and the optimizer are
unchanged; the next iteration samples again) and a warning says why, at most every `every_s`
seconds, with the count so far (a persistent cause would otherwise print one line per iteration).
"""

from __future__ import annotations

import logging
import time

from rllib_rpp import schema as S

logger = logging.getLogger(__name__)


def all_skipped(episodes) -> str | None:
    """Why a batch whose every sample was skipped cannot be trained on, or None."""
    if not episodes or not all(e.custom_data.get(S.REWARD_SKIPPED, False) for e in episodes):
        return None
    return (f"every one of the {len(episodes)} samples' reward calls failed and on_reward_error='skip' left them all "
            f"out of the loss (env_runners/reward_calls counts the timeouts and errors)")


def no_informative_group(stats: dict) -> str:
    """Why dynamic sampling left nothing to train on (`fill_batch`'s statistics)."""
    drew = f"dynamic sampling drew {stats['prompts_drawn']:.0f} prompt groups in {stats['rounds']:.0f} round(s)"
    if stats.get("informative_groups"):
        return (f"{drew}; its {stats['informative_groups']:.0f} informative group(s) held too few completions for "
                f"one equal mini-batch per optimizer step (raise max_sampling_rounds, or lower minibatch_size)")
    return (f"{drew} and none was informative (in each, every scored sample got the same reward, or all were "
            f"skipped); if this persists, the reward cannot tell this policy's samples apart: check the reward, or "
            f"raise num_samples_per_prompt or max_sampling_rounds")


class NoUpdateNotice:
    """The warning for an iteration without an update (see the module docstring)."""

    def __init__(self, every_s: float = 30.0, clock=time.monotonic):
        self.every_s, self.clock = every_s, clock
        self.count, self._last_t = 0, None

    def __call__(self, iteration: int, why: str) -> None:
        self.count += 1
        now = self.clock()
        if self._last_t is not None and now - self._last_t < self.every_s:
            return
        self._last_t = now
        so_far = f" ({self.count} iterations without an update so far)" if self.count > 1 else ""
        logger.warning(f"iteration {iteration}: {why}. No update this iteration: the weights, β and the reward "
                       f"normaliser stay as they were, and the next iteration samples again{so_far}.")
