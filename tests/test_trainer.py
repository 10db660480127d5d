import math

import numpy as np
import pytest
import torch
from _synthetic import grouped_categories

from embedkit import FeatureSpec, TrainingDivergedError
from embedkit.nn.callbacks import Callback
from embedkit.nn.learner import Learner
from embedkit.nn.model import NetConfig
from embedkit.nn.trainer import CHECKPOINT_NAME, TrainConfig, read_checkpoint

SPEC = FeatureSpec(target="y", categorical=["cat", "other"], continuous=["x"], dates=[])


def _learner(task="regression", seed=0, n=2000, **cfg):
    df, _ = grouped_categories(n=n, task=task, seed=seed)
    tc = TrainConfig(**{"epochs": 3, "batch_size": 128, "lr": 1e-2, "seed": seed, **cfg})
    return Learner.from_frame(df, SPEC, net_config=NetConfig(layers=[32, 16]), train_config=tc), df


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer):
        self.events.append("train_begin")

    def on_epoch_begin(self, trainer, epoch):
        self.events.append(f"epoch_begin:{epoch}")

    def on_batch_end(self, trainer, step, loss):
        assert math.isfinite(loss)
        if "batch" not in self.events[-1]:
            self.events.append("batch")

    def on_epoch_end(self, trainer, epoch, logs):
        self.events.append(f"epoch_end:{epoch}:{sorted(k for k in logs if k.startswith('valid_'))}")

    def on_train_end(self, trainer):
        self.events.append("train_end")


def test_training_learns_and_callbacks_fire_in_order():
    learn, df = _learner(epochs=8)
    rec = Recorder()
    learn.trainer.callbacks.callbacks.append(rec)
    hist = learn.fit(df.iloc[:1600], df.iloc[1600:])
    assert len(hist.epochs) == 8
    assert rec.events[0] == "train_begin" and rec.events[-1] == "train_end"
    assert rec.events[1:4] == ["epoch_begin:0", "batch", "epoch_end:0:['valid_mae', 'valid_rmse']"]
    # the target's std is ~1.7 and its noise 0.3: the group structure makes it predictable
    assert hist.epochs[-1]["valid_rmse"] < 0.5


def test_seed_makes_cpu_training_reproducible():
    preds = []
    for _ in range(2):
        learn, df = _learner(task="binary")
        learn.fit(df.iloc[:1600], df.iloc[1600:])
        preds.append(learn.predict_proba(df.iloc[1600:]))
    assert np.array_equal(preds[0], preds[1])


def test_early_stopping_and_restore_best():
    learn, df = _learner(epochs=30, lr=0.05, early_stopping_patience=2)
    hist = learn.fit(df.iloc[:1600], df.iloc[1600:])
    assert len(hist.epochs) < 30
    assert len(hist.epochs) - 1 - hist.best_epoch == 2
    best = hist.epochs[hist.best_epoch]["valid_rmse"]
    assert learn.evaluate(df.iloc[1600:])["rmse"] == pytest.approx(best, rel=1e-4)


@pytest.mark.floats
def test_checkpoint_every_epoch_and_resume_to_completion(tmp_path):
    class StopAfterFirst(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            trainer.stop_training = True

    learn, df = _learner(checkpoint_dir=str(tmp_path), restore_best=False)
    learn.trainer.callbacks.callbacks.append(StopAfterFirst())
    learn.fit(df.iloc[:1600], df.iloc[1600:])
    ckpt = tmp_path / CHECKPOINT_NAME
    assert read_checkpoint(ckpt)["next_epoch"] == 1

    resumed, _ = _learner(checkpoint_dir=str(tmp_path), restore_best=False)
    hist = resumed.fit(df.iloc[:1600], df.iloc[1600:], resume_from=tmp_path)
    assert [e["epoch"] for e in hist.epochs] == [1, 2, 3]
    assert read_checkpoint(ckpt)["next_epoch"] == 3

    straight, _ = _learner(restore_best=False)
    straight.fit(df.iloc[:1600], df.iloc[1600:])
    a = resumed.predict(df.iloc[1600:])
    b = straight.predict(df.iloc[1600:])
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path):
    class Poison(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 0:  # corrupt a weight after the first epoch's checkpoint
                with torch.no_grad():
                    trainer.model.head.weight.fill_(float("nan"))

    learn, df = _learner(checkpoint_dir=str(tmp_path))
    learn.trainer.callbacks.callbacks.append(Poison())
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 2.*last good checkpoint"):
        learn.fit(df.iloc[:1600], df.iloc[1600:])
    state = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state["next_epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_cuda_out_of_memory_retries_with_half_the_batch(monkeypatch):
    learn, df = _learner(epochs=1, batch_size=256)
    trainer = learn.trainer
    calls = {"n": 0}
    real_step = trainer.train_step

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", flaky)
    hist = trainer.fit(learn.tensors(df.iloc[:1600]), lr=1e-2)
    assert trainer.batch_size == 128
    assert hist.epochs[-1]["batch_size"] == 128


def test_unknown_row_is_trained_by_code_swapping():
    learn, df = _learner(unknown_swap_prob=0.05)
    before = learn.model.embeds[0].weight.detach().clone()
    learn.fit(df.iloc[:1600])
    after = learn.model.embeds[0].weight.detach()
    assert not torch.equal(before[1], after[1])  # the unknown row moved
    learn2, _ = _learner(unknown_swap_prob=0.0)
    b2 = learn2.model.embeds[0].weight.detach().clone()
    learn2.fit(df.iloc[:1600])
    assert torch.equal(b2[1], learn2.model.embeds[0].weight.detach()[1])  # never seen → untouched


# ---- the public step and weights in memory ---------------------------------------------------------
def test_train_step_takes_one_step_at_the_given_rate_and_trains():
    learn, df = _learner(task="binary")
    trainer = learn.trainer
    batch = learn.tensors(df.iloc[:256]).to(trainer.device)
    with pytest.raises(RuntimeError, match="needs an optimizer"):
        trainer.train_step(batch, lr=1e-2)
    trainer.optimizer = trainer.new_optimizer(1.0)
    before = trainer.snapshot()
    losses = [float(trainer.train_step(batch, lr=1e-2)) for _ in range(40)]
    assert all(g["lr"] == 1e-2 for g in trainer.optimizer.param_groups)  # the rate given, not 1.0
    assert losses[-1] < 0.5 * losses[0]  # the same batch again and again: its loss falls
    assert not torch.equal(before["head.weight"], trainer.model.state_dict()["head.weight"])


def test_snapshot_is_a_copy_and_restore_puts_it_back():
    learn, df = _learner()
    trainer = learn.trainer
    snap = trainer.snapshot()
    kept = {k: v.clone() for k, v in snap.items()}
    learn.fit(df.iloc[:1000])  # trains the weights in place
    now = trainer.model.state_dict()
    assert not all(torch.equal(snap[k], now[k]) for k in snap)
    assert all(torch.equal(snap[k], kept[k]) for k in snap)  # training did not write into the snapshot
    trainer.restore(snap)
    assert all(torch.equal(trainer.model.state_dict()[k], kept[k]) for k in kept)


def test_a_resumed_fit_continues_at_the_checkpoints_rate(tmp_path):
    learn, df = _learner(checkpoint_dir=str(tmp_path), epochs=2)
    learn.trainer.fit(learn.tensors(df.iloc[:1600]), lr=3e-3)
    again, _ = _learner(checkpoint_dir=str(tmp_path), epochs=3, lr=None)
    again.trainer.fit(again.tensors(df.iloc[:1600]), resume_from=tmp_path)  # no rate needed
    assert again.trainer.lr_max == 3e-3
    assert len(again.history.epochs) == 3
