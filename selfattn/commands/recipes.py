"""`selfattn recipes`: list the runnable recipes."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("recipes", help="list the recipes `selfattn train` can run")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..recipes import all_recipes

    for name, mod in sorted(all_recipes().items()):
        print(f"{name:24s} {mod.DESCRIPTION}")
    return 0
