"""selfattn: self-attention and the transformer, from the three-step mechanism up."""

__version__ = "0.1.0"

from . import attention  # noqa: E402,F401
