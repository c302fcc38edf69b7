"""`selfattn embed RUN_DIR_OR_MODEL --text ...`: sentence embeddings (mean over real tokens, unit
L2 norm unless --no-normalize).

The model is a sentiment run folder, a Hugging Face BERT folder (config.json + model.safetensors +
tokenizer.json), or ``minilm`` for the packaged all-MiniLM-L6-v2. Prints a JSON list of vectors,
or writes a float32 (N, D) ``.npy`` file with ``--out``. Inputs as for ``classify``; a text longer
than the model's positions keeps its beginning (as sentence-transformers does), with a warning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("embed", help="sentence embeddings from a run, a BERT folder or `minilm`")
    p.add_argument("model", help="sentiment run folder, Hugging Face BERT folder, or `minilm` (packaged)")
    p.add_argument("--text", action="append", help="a text to embed (repeatable)")
    p.add_argument("--file", help="embed each non-blank line of this UTF-8 file")
    p.add_argument("--out", help="write a .npy file (float32, N x D) instead of printing JSON")
    p.add_argument("--no-normalize", action="store_true", help="keep the raw mean (no unit L2 norm)")
    p.set_defaults(func=run)


def load_embedder(name: str):
    """-> (Encoder, ReviewEncoder with head truncation at the model's length limit)."""
    from ..sentiment import ReviewEncoder, load_classifier, minilm_folder, wrap_bert_tokenizer

    if name == "minilm":
        path = minilm_folder()
    else:
        path = Path(name)
        if not path.exists():
            raise FileNotFoundError(f"{name} does not exist (give a run folder, a BERT folder or `minilm`)")
    if (path / "model.safetensors").is_file() and (path / "config.json").is_file() and \
            not (path / "manifest.json").is_file():
        from ..interop.hf_bert import load_bert_folder

        model, raw = load_bert_folder(path)
        if raw is None:
            raise ValueError(f"{path} has no tokenizer.json; embed needs the model's tokenizer")
        limit = model.config.max_position
        st = path / "sentence_bert_config.json"
        if st.is_file():
            limit = min(limit, int(json.loads(st.read_text()).get("max_seq_length") or limit))
        return model, ReviewEncoder(wrap_bert_tokenizer(raw), limit, "head")
    model, tok, cfg = load_classifier(path)
    return model, ReviewEncoder(tok, cfg.data.max_len, "head")


def run(args) -> int:
    import torch

    from ..sentiment import pad_batch
    from .classify import read_texts

    texts = read_texts(args.text, args.file)
    if args.out is not None and not args.out.endswith(".npy"):
        raise ValueError(f"--out {args.out}: expected a file name ending in .npy")
    model, enc = load_embedder(args.model)
    seqs, cut = enc.encode(texts)
    for i, n in enumerate(cut, start=1):
        if n:
            print(f"selfattn: warning: text {i} is {n} tokens longer than the model reads "
                  f"({enc.max_len}); its end was dropped", file=sys.stderr)
    vectors = []
    with torch.no_grad():
        for start in range(0, len(seqs), 32):
            ids, mask = pad_batch(seqs[start:start + 32], enc.pad)
            vectors.append(model.sentence_embedding(ids, mask, normalize=not args.no_normalize).float())
    emb = torch.cat(vectors)  # (N, D)
    if args.out:
        import numpy as np

        np.save(args.out, emb.numpy().astype(np.float32))
        print(f"wrote {args.out}: {tuple(emb.shape)}", file=sys.stderr)
    else:
        print(json.dumps([[round(x, 6) for x in row] for row in emb.tolist()]))
    return 0
