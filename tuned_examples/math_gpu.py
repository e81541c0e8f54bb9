"""REINFORCE++ for math reasoning on GPUs (the paper's math setting: β = 0.001, math-verify).

    python -m tuned_examples.math_gpu --model Qwen/Qwen2.5-1.5B-Instruct --prompts train.jsonl --gpus 2

Same as `rllib-rpp train math ...`; this script shows the preset refined through the config API.
"""

from __future__ import annotations

import argparse

from rllib_rpp.app.driver import run
from rllib_rpp.app.presets import math_reasoning

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Qwen/Qwen2.5-1.5B-Instruct")
    parser.add_argument("--prompts", required=True, help=".jsonl with prompt and answer columns")
    parser.add_argument("--eval-prompts")
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    config = math_reasoning(model=args.model, prompts=args.prompts, eval_prompts=args.eval_prompts, gpus=args.gpus)
    run(config, time_budget_s=None, iterations=args.iterations, checkpoint_dir="checkpoints/math", name="math",
        export_dir="exports/math")
