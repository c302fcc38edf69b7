import json

import pytest
import torch

from selfattn.checkpoint import (CheckpointError, clean_temporaries, complete_checkpoints, load_weights,
                                 write_checkpoint)
from selfattn.models import GPT, GPTConfig


def _model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("tiny"))


def _write(tmp_path, name="step-00000001", model=None):
    return write_checkpoint(tmp_path / name, model or _model(), state={"step": 1},
                            extra_files=lambda d: (d / "config.json").write_text("{}"))


def test_round_trip_restores_tied_weights(tmp_path):
    src, dst = _model(0), _model(1)
    path = _write(tmp_path, model=src)
    load_weights(path, dst)
    for (n, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert torch.equal(a, b), n
    assert dst.lm_head.weight is dst.tok_emb.weight  # tying survives the load


@pytest.mark.parametrize("damage, what", [
    (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:100]), "truncated"),
    (lambda p: (p / "model.safetensors").write_bytes(b""), "empty"),
    (lambda p: (p / "state.pt").unlink(), "missing"),
    (lambda p: (p / "notes.txt").write_text("hi"), "extra file"),
    (lambda p: (p / "manifest.json").unlink(), "not completed"),
])
def test_damaged_checkpoints_name_the_file_and_a_fallback(tmp_path, damage, what):
    good = _write(tmp_path, "step-00000001")
    bad = _write(tmp_path, "step-00000002")
    damage(bad)
    with pytest.raises(CheckpointError) as e:
        load_weights(bad, _model(), fallback=good)
    assert what in str(e.value) and str(good) in str(e.value)


def test_bit_flip_is_detected(tmp_path):
    path = _write(tmp_path)
    data = bytearray((path / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_weights(path, _model())


def test_non_finite_weights_are_never_written(tmp_path):
    m = _model()
    with torch.no_grad():
        m.blocks[0].ffn.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="not finite"):
        write_checkpoint(tmp_path / "step-00000001", m)
    assert not (tmp_path / "step-00000001").exists()
    assert not any(tmp_path.iterdir())


def test_temporaries_are_cleaned_and_only_complete_ones_listed(tmp_path):
    _write(tmp_path, "step-00000001")
    (tmp_path / "step-00000002.tmp-999").mkdir()
    (tmp_path / "step-00000003").mkdir()  # no manifest: a folder from an interrupted copy
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-00000001"]
    removed = clean_temporaries(tmp_path)
    assert [p.name for p in removed] == ["step-00000002.tmp-999"]
    manifest = json.loads((tmp_path / "step-00000001" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "state.pt", "config.json"}
