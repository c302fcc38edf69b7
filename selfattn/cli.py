"""`selfattn <command>`: thin. Parses, validates, calls the library.

Every user error (a bad option, an unknown recipe, a bad override) prints one line and exits
with status 2; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's default prints usage; we print one line
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="selfattn", description="Self-attention and the transformer: train, generate, inspect.")
    p.add_argument("--version", action="version", version=f"selfattn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    d = sub.add_parser("demo", help="show the mechanism step by step on a tiny example")
    d.set_defaults(func=_cmd_demo)
    return p


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except (UsageError, ValueError, TypeError, FileNotFoundError) as e:
        # One line, no traceback: the message names the parameter, the value and what is allowed.
        print(f"selfattn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfattn: interrupted", file=sys.stderr)
        return 130
