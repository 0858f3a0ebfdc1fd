"""``ntk``: one entry point, a subcommand per module (kernel, predict, serve, worker).

Each subcommand module exposes ``add_parser(subparsers)`` and sets ``func`` on its parser; imports
are deferred so ``ntk --help`` does not load torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("kernel", "predict", "serve", "worker")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntk", description="Neural tangent and NNGP kernels of infinitely wide networks.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"cli.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
