"""The checkpoint records where it was made (torch, threads, platform); a resume elsewhere warns,
because bit-identical continuation is only promised on the same torch, thread count and platform."""

import json
import warnings

import pytest
import torch

from selfattn import train as train_mod
from selfattn.checkpoint import complete_checkpoints, load_state, verify
from selfattn.models import GPT, GPTConfig
from selfattn.train import TrainConfig, Trainer, environment


def _trainer(task, run, steps):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny", vocab_size=16, block_size=12))
    cfg = TrainConfig(max_steps=steps, batch_size=4, warmup_steps=1, eval_every=100, eval_batches=1,
                      checkpoint_every=2, dtype="float32", progress=False)
    return Trainer(model, task, cfg, run)


def test_environment_is_stored_in_state_and_manifest(tmp_path, counting_task):
    _trainer(counting_task, tmp_path, 2).fit()
    ckpt = complete_checkpoints(tmp_path / "checkpoints")[-1]
    env = json.loads(load_state(ckpt)["env"])
    meta = verify(ckpt)["meta"]
    for key in ("torch", "threads", "platform"):
        assert env[key] == environment()[key] == meta[key]
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()


def test_same_environment_resumes_silently(tmp_path, counting_task):
    _trainer(counting_task, tmp_path, 2).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _trainer(counting_task, tmp_path, 4).fit(resume=True)


@pytest.mark.parametrize("key, value", [("torch", "1.0.0"), ("threads", 97), ("platform", "Plan9-x86")])
def test_a_different_environment_warns(tmp_path, counting_task, monkeypatch, key, value):
    _trainer(counting_task, tmp_path, 2).fit()
    real = environment()
    monkeypatch.setattr(train_mod, "environment", lambda: {**real, key: value})
    with pytest.warns(UserWarning, match=rf"resuming on a different environment .*'{key}'.*not be bit-identical"):
        _trainer(counting_task, tmp_path, 4).fit(resume=True)
