from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="show the mechanism step by step on a tiny example")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo

    run_demo()
    return 0
