"""pack_linears: oneDNN-packed weights for bf16 CPU decoding give the same model."""

from __future__ import annotations

import pytest
import torch

from selfattn.generate import generate
from selfattn.inference import PackedLinear, can_pack, pack_linears, unpack_linears
from selfattn.models import GPT, GPTConfig

pytestmark = pytest.mark.skipif(can_pack(torch.nn.Linear(2, 2).bfloat16()) is not None,
                                reason=f"oneDNN bf16 packing unavailable: {can_pack(torch.nn.Linear(2, 2).bfloat16())}")


def _llama():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, norm="rmsnorm",
                    activation="swiglu", position="rope", bias=False, tie_embeddings=True, dropout=0.0)
    return GPT(cfg).to(torch.bfloat16).eval()


def test_packed_model_matches_and_keeps_its_parameters():
    model = _llama()
    ids = torch.randint(0, 97, (2, 17))
    with torch.no_grad():
        want = model(ids).float()
    keys = list(model.state_dict())
    n = pack_linears(model)
    assert n == sum(isinstance(m, PackedLinear) for m in model.modules()) == 2 * 2 + 2 * 3 + 1
    assert list(model.state_dict()) == keys
    assert model.lm_head.weight is model.tok_emb.weight  # tying survives
    with torch.no_grad():
        got = model(ids).float()
    # the same bf16 products, summed in another order: within bf16 rounding of the logits
    assert (got - want).abs().max() <= 2e-2 * want.abs().max()
    assert unpack_linears(model) == n and not any(isinstance(m, PackedLinear) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(ids).float(), want)


def test_greedy_generation_agrees_and_autograd_falls_back():
    model = _llama()
    prompt = torch.randint(0, 97, (1, 9))
    want = generate(model, prompt, 12, temperature=0)
    pack_linears(model)
    got = generate(model, prompt, 12, temperature=0)
    assert (got == want).float().mean() >= 0.9  # ties in bf16 may flip a late token, not most
    model.train()
    loss = model(prompt[:, :-1], prompt[:, 1:])[1]
    loss.backward()  # PackedLinear uses F.linear under autograd: gradients reach the weights
    assert model.blocks[0].ffn.up_proj.weight.grad is not None


def test_refuses_what_it_cannot_pack():
    with pytest.raises(ValueError, match="bfloat16"):
        pack_linears(torch.nn.Linear(4, 4))
