"""`selfattn <command>`: thin. Parses, validates, calls the library.

Each command lives in ``selfattn/commands/<name>.py`` with ``register(subparsers)``, which adds
its parser and sets ``func``. Every user error (a bad option, an unknown recipe, a bad override,
a missing file) prints one line and exits with status 2; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .config import ConfigError

COMMANDS = ("train", "generate", "translate", "recipes", "demo", "classify", "embed", "classify_image", "chat", "lab", "bench")


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)  # --help shows defaults
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse's default prints the usage block; we print one line
        command = self.prog.removeprefix("selfattn").strip()  # main() adds "selfattn: error:" itself
        raise UsageError(f"{command}: {message}" if command else message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="selfattn", description="Self-attention and the transformer: train, generate, inspect.")
    p.add_argument("--version", action="version", version=f"selfattn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except (UsageError, ConfigError, ValueError, TypeError, FileNotFoundError, NotADirectoryError) as e:
        # One line, no traceback: the message names the parameter, the value and what is allowed.
        print(f"selfattn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfattn: interrupted", file=sys.stderr)
        return 130
