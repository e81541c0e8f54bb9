"""Command line: `rllib-rpp <command>` or `python -m rllib_rpp <command>`."""

from __future__ import annotations

import argparse
import json
import sys


def _tiny_model(args) -> None:
    from envs.cache import build_info
    from envs.reward_model import ensure_tiny_arith_rm
    from envs.tiny_arith import ensure_tiny_arith

    path = ensure_tiny_arith_rm(rebuild=args.rebuild) if args.reward_model else ensure_tiny_arith(rebuild=args.rebuild)
    info = build_info(path)
    info.pop("recipe", None)
    print(path)
    print(json.dumps(info), file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rllib-rpp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tiny-model", help="print where the built-in tiny-arith model is (building it if needed)")
    p.add_argument("--rebuild", action="store_true", help="rebuild it even if it is cached")
    p.add_argument("--reward-model", action="store_true", help="the built-in reward model tiny-arith-rm instead")
    p.set_defaults(func=_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
