"""`selfattn generate RUN_DIR --prompt ...`: sample text from a trained language model."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a trained run (or checkpoint folder)")
    p.add_argument("run_dir", help="run folder (uses its best checkpoint) or a checkpoint folder")
    p.add_argument("--prompt", default="\n", help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=300, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (repeatable output)")
    p.add_argument("--stop", action="append", default=[], help="stop at this string (repeatable)")
    p.add_argument("--sliding-window", action="store_true",
                   help="allow prompt + new tokens beyond the context: when it is full, continue from its last half")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..checkpoint import CheckpointError
    from ..generate import _check_sampling, generate_text
    from ..lm import load

    _check_sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    if args.prompt == "":
        raise ValueError("--prompt must not be empty")
    try:
        model, tok, _cfg = load(args.run_dir)
    except CheckpointError as e:  # a damaged checkpoint is the user's data, not a bug: one line
        raise ValueError(f"{args.run_dir}: {e}") from None
    n_prompt = len(tok.encode(args.prompt))
    if n_prompt > model.config.block_size or (
            n_prompt + args.max_new_tokens > model.config.block_size and not args.sliding_window):
        raise ValueError(f"--prompt ({n_prompt} tokens) + --max-new-tokens ({args.max_new_tokens}) exceeds "
                         f"the model's context of {model.config.block_size} tokens (--sliding-window allows it)")
    sys.stdout.write(args.prompt)
    generate_text(model, tok, args.prompt, args.max_new_tokens, temperature=args.temperature,
                  top_k=args.top_k or None, top_p=args.top_p, seed=args.seed, stop_strings=args.stop,
                  stream=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()),
                  sliding_window=args.sliding_window)
    sys.stdout.write("\n")
    return 0
