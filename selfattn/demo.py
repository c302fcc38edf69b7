"""A short, printed walk through the mechanism on a tiny example (`selfattn demo`)."""

from __future__ import annotations

import torch

from .attention import attention_weights, scaled_dot_product_attention


def run_demo(seed: int = 0) -> None:
    torch.manual_seed(seed)
    torch.set_printoptions(precision=3, sci_mode=False)
    x = torch.randn(4, 3)  # 4 input vectors of width 3
    print("inputs x (4 vectors, width 3):\n", x)
    scores = x @ x.T
    print("\n1. compatibility scores x xᵀ:\n", scores)
    w = torch.softmax(scores, dim=-1)
    print("\n2. softmax over each row (weights sum to 1):\n", w)
    y = w @ x
    print("\n3. weighted sum of the inputs, same width as the inputs:\n", y)
    scaled = scaled_dot_product_attention(x, x, x, scale=1.0, backend="math")
    assert torch.allclose(scaled, y, atol=1e-6)
    print("\nscaled by 1/sqrt(3) (the default) the weights are softer:\n",
          attention_weights(x, x)[...])
    causal = attention_weights(x, x, is_causal=True)
    print("\ncausal: each row sees only itself and the past:\n", causal)
