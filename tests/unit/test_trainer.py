import hashlib
import json
import shutil
import time

import pytest
import torch

from selfattn.checkpoint import complete_checkpoints
from selfattn.models import GPT, GPTConfig
from selfattn.train import TrainConfig, Trainer, TrainingError, lr_at


def _cfg(**kw):
    base = dict(max_steps=12, batch_size=8, lr=3e-3, warmup_steps=2, eval_every=6, eval_batches=2,
                checkpoint_every=4, keep_last=2, dtype="float32", progress=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _model():
    return GPT(GPTConfig.preset("tiny", vocab_size=16, block_size=12, dropout=0.1))


def _digest(model):
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_loss_goes_down_and_checkpoints_are_kept(tmp_path, counting_task):
    torch.manual_seed(0)
    model = _model()
    tr = Trainer(model, counting_task, _cfg(max_steps=40, lr=1e-2), tmp_path)
    first = tr.evaluate()
    out = tr.fit()
    assert out["steps"] == 40 and out["best_val"] < first * 0.5
    names = [p.name for p in complete_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step-00000036", "step-00000040"]  # keep_last=2
    assert (tmp_path / "checkpoints" / "best" / "manifest.json").is_file()


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_is_bit_identical(tmp_path, counting_task, accum):
    torch.manual_seed(0)
    straight = _model()
    Trainer(straight, counting_task, _cfg(grad_accum=accum), tmp_path / "a").fit()

    torch.manual_seed(0)
    first = _model()
    Trainer(first, counting_task, _cfg(grad_accum=accum, max_steps=12), tmp_path / "b").fit()
    # pretend the run stopped after step 8: drop later checkpoints, then resume from a fresh process state
    for p in complete_checkpoints(tmp_path / "b" / "checkpoints"):
        if int(p.name.split("-")[1]) > 8:
            shutil.rmtree(p)
    torch.manual_seed(1234)  # a resumed process starts with different RNG state and weights
    resumed = _model()
    Trainer(resumed, counting_task, _cfg(grad_accum=accum), tmp_path / "b").fit(resume=True)
    assert _digest(resumed) == _digest(straight)


class NaNAt:
    def __init__(self, task, step):
        self.task, self.step, self.calls = task, step, 0

    def batch(self, *a, **k):
        return self.task.batch(*a, **k)

    def tokens(self, b):
        return self.task.tokens(b)

    def loss(self, model, batch):
        loss = self.task.loss(model, batch)
        if model.training:
            self.calls += 1
            if self.calls == self.step:
                return loss * float("nan")
        return loss


def test_nan_stops_with_step_and_last_checkpoint(tmp_path, counting_task):
    torch.manual_seed(0)
    tr = Trainer(_model(), NaNAt(counting_task, 6), _cfg(), tmp_path)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 5; the last good checkpoint is .*step-00000004"):
        tr.fit()


def test_nan_skip_leaves_weights_bit_identical(tmp_path, counting_task):
    torch.manual_seed(0)
    model = _model()
    tr = Trainer(model, NaNAt(counting_task, 3), _cfg(max_steps=2, on_nan="skip"), tmp_path)
    tr.fit()
    before = _digest(model)
    loss, _ = tr.train_step()  # third training call: NaN injected
    assert loss != loss and tr.skipped == 1
    assert _digest(model) == before


def test_schedule_warms_up_then_decays():
    cfg = _cfg(max_steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] >= 0.1


def test_schedule_fitted_to_the_time_budget(tmp_path, counting_task):
    """max_steps=0: the first steps are timed, then the cosine schedule is sized to max_minutes
    and ends (at min_lr) inside the budget; a resume keeps the fitted length."""
    torch.manual_seed(0)
    cfg = _cfg(max_steps=0, max_minutes=0.05, warmup_steps=10, eval_every=1000)
    tr = Trainer(_model(), counting_task, cfg, tmp_path)
    out = tr.fit()
    assert tr.total_steps is not None and tr.total_steps > 10 and out["steps"] <= tr.total_steps
    # the fit is to the budget; a slower stretch afterwards ends it by max_minutes instead
    assert out["stop_reason"] in ("max_steps", "max_minutes") and out["train_seconds"] <= 0.05 * 60 * 1.5
    assert lr_at(tr.total_steps - 1, cfg, tr.total_steps) == pytest.approx(cfg.min_lr, rel=1e-2)
    again = Trainer(_model(), counting_task, cfg, tmp_path)
    again.resume()
    assert again.total_steps == tr.total_steps


def test_schedule_refitted_when_steps_slow_down(tmp_path, counting_task):
    """Steps that become much slower after the fit (another job arrives on the machine) would leave
    the cosine schedule half done when the time runs out; the refit at each evaluation shortens
    it, so it still ends at min_lr."""

    class SlowsDown(type(counting_task)):
        def __init__(self, at: int, delay: float):
            super().__init__()
            self.at, self.delay, self.calls = at, delay, 0

        def loss(self, model, batch):
            if model.training:
                self.calls += 1
                if self.calls > self.at:
                    time.sleep(self.delay)
            return super().loss(model, batch)

    cfg = _cfg(max_steps=0, max_minutes=0.05, warmup_steps=10, eval_every=5)
    tr = Trainer(_model(), SlowsDown(at=25, delay=0.03), cfg, tmp_path)
    tr.fit()
    fitted = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # the budget may run out a step or two before the refitted end (refits happen at evaluations)
    assert tr.total_steps - tr.step <= max(2, 0.05 * tr.step), \
        f"stopped at {tr.step} of {tr.total_steps}: schedule not refitted"
    last_lr = [r["lr"] for r in fitted if "lr" in r][-1]
    assert last_lr <= cfg.min_lr + 0.05 * (cfg.lr - cfg.min_lr), f"lr still {last_lr:.2e} at the end"


def test_fitted_schedule_needs_a_budget():
    with pytest.raises(ValueError, match="max_minutes > 0"):
        _cfg(max_steps=0)


def test_weight_decay_groups_keep_biases_norms_and_named_parameters_out():
    from selfattn.models import ViT, ViTConfig
    from selfattn.train import weight_decay_groups

    vit = ViT(ViTConfig(image_size=8, patch_size=4, n_classes=3, d_model=16, n_layer=1, n_head=2))
    decay, no_decay = weight_decay_groups(vit, 0.1)
    names = {id(p): n for n, p in vit.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} >= {"cls_token", "pos_grid", "pos_cls"}
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert not any(names[id(p)].startswith(("pos_", "cls_token")) for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0


def test_a_run_stopped_before_its_first_evaluation_says_so():
    from selfattn.train import describe_best_val

    assert describe_best_val(1.23456) == "best validation loss 1.2346"
    assert "before the first evaluation" in describe_best_val(float("inf"))
