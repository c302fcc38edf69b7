"""selfattn: self-attention and the transformer, from the three-step mechanism up."""

__version__ = "0.1.0"

from . import attention  # noqa: E402,F401
from .generate import generate, generate_text  # noqa: E402,F401


def load(run_or_checkpoint, **kwargs):
    """Load one of our checkpoints (a run folder or a checkpoint folder): (model, tokenizer, config)."""
    from .lm import load as _load

    return _load(run_or_checkpoint, **kwargs)
