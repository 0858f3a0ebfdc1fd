"""``ntk``: one entry point, a subcommand per module (kernel, predict, sweep, serve, worker).

Each subcommand module exposes ``add_parser(subparsers)`` and sets ``func`` on its parser; imports
are deferred so ``ntk --help`` does not load torch. A mistake the user can fix is reported as one
line, ``ntk: error: ...``, with exit status 1 (2 for a wrong command line); see ``ntk/cli/errors.py``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
import traceback

from .errors import UserError

SUBCOMMANDS = ("kernel", "predict", "sweep", "serve", "worker")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, where it has one worth showing (not None, not a flag's)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def version() -> str:
    try:
        return importlib.metadata.version("ntk-service")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (ntk-service is not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntk", description="Neural tangent and NNGP kernels of infinitely wide networks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"ntk.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"ntk.cli.{name}":
                raise
            continue
        module.add_parser(subparsers)
    for subparser in subparsers.choices.values():
        subparser.formatter_class = HelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"ntk: error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        return 130
    except Exception:
        traceback.print_exc()
        print("ntk: internal error: the traceback above is a bug in ntk; please report it with the command you ran",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
