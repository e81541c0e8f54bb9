"""REINFORCE++ on two-number addition with the built-in tiny model, on a 2-core CPU: the README's
main job (`make train` = `rllib-rpp train tiny-arith`), as a script over the public API.

    python -m tuned_examples.tiny_arith [--minutes 5]
"""

from __future__ import annotations

import argparse

from rllib_rpp.app.driver import run
from rllib_rpp.app.presets import tiny_arith

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    # Any option of the preset can be refined with the fluent config API.
    config = tiny_arith(lr=2e-4).training(kl_coef=0.01)
    run(config, time_budget_s=60 * args.minutes, name="tiny-arith")
