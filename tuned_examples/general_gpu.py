"""REINFORCE++ for general alignment on GPUs: an SFT model scored by a Bradley-Terry reward model
(the paper's general setting: β = 0.01, running reward normalisation).

    python -m tuned_examples.general_gpu --model my-sft --reward-model my-rm --prompts prompts.jsonl --gpus 2

Same as `rllib-rpp train general ...`; this script shows the preset refined through the config API.
"""

from __future__ import annotations

import argparse

from rllib_rpp.app.driver import run
from rllib_rpp.app.presets import general_alignment

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--reward-model", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--eval-prompts")
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    config = general_alignment(model=args.model, reward_model=args.reward_model, prompts=args.prompts,
                               eval_prompts=args.eval_prompts, gpus=args.gpus)
    run(config, time_budget_s=None, iterations=args.iterations, checkpoint_dir="checkpoints/general", name="general",
        export_dir="exports/general")
