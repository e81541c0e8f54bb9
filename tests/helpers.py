"""Shared test configuration: the tiny arithmetic task at a small batch size."""

from rllib_rpp import ReinforcePPConfig
from rllib_rpp.samplers.base import Generation, Sampler
from rpp_hub.models import load_tokenizer


def small_config(**training) -> ReinforcePPConfig:
    """16 prompts x 4 samples, 2 mini-batches of 32, exact-match reward, seeded."""
    opts = dict(lr=1e-4, num_prompts_per_iteration=16, num_samples_per_prompt=4, minibatch_size=32)
    opts.update(training)
    return (
        ReinforcePPConfig()
        .environment(env_config={"prompts": "arithmetic", "reward_funcs": ["exact_match"]})
        .generation(max_new_tokens=5)
        .training(**opts)
        .evaluation(greedy_eval_prompts="arithmetic-eval")
        .debugging(seed=0)
    )



class ScriptedSampler(Sampler):
    """A third generation backend for the registry test: every completion is "0" then EOS, each
    token with log-prob -1. No weight-transfer engine, no sleep, no replay: the base's defaults."""

    def __init__(self, model, *, eos_token_id, pad_token_id, dtype="float32"):
        self.completion = load_tokenizer(model)("0", add_special_tokens=False)["input_ids"] + [eos_token_id]

    def generate(self, prompts, params):
        ids = self.completion[: params.max_new_tokens]
        rows = len(prompts) * params.n
        return Generation([list(ids)] * rows, [[-1.0] * len(ids)] * rows, [len(ids) == len(self.completion)] * rows)

    def load_weights(self, state_dict, version):
        self.weights_version = version
