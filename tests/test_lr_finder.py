import numpy as np
import pytest
import torch
from _synthetic import grouped_categories

from embedkit import FeatureSpec
from embedkit.nn.learner import Learner
from embedkit.nn.lr_finder import lr_find, suggestions, valley
from embedkit.nn.model import NetConfig
from embedkit.nn.trainer import TrainConfig

SPEC = FeatureSpec(target="y", categorical=["cat", "other"], continuous=["x"], dates=[])


def _learn(seed=0):
    df, _ = grouped_categories(n=3000, seed=seed, task="binary")
    cfg = TrainConfig(epochs=4, batch_size=64, seed=seed)
    return Learner.from_frame(df, SPEC, net_config=NetConfig(layers=[32, 16]), train_config=cfg), df


def test_lr_find_restores_weights_and_returns_a_curve():
    learn, df = _learn()
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    res = learn.lr_find(df)
    after = learn.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(res.lrs) == len(res.losses) == len(res.smoothed) >= 10
    assert np.all(np.diff(res.lrs) > 0) and res.lrs[0] == pytest.approx(1e-7)
    assert set(res.alternatives) == {"valley", "minimum/10", "steepest"}
    assert res.suggestion == res.alternatives["minimum/10"]
    # the sweep stops once the smoothed loss passes 4x its best
    assert (res.lrs[-1] < 10 and res.smoothed[-1] > 4 * min(res.smoothed)) or len(res.lrs) == 100


def test_lr_find_steps_through_the_public_trainer_api_and_leaves_no_trace(monkeypatch):
    learn, df = _learn()
    trainer = learn.trainer
    rates = []
    real_step = trainer.train_step

    def recording(batch, lr=None):
        rates.append(lr)
        return real_step(batch, lr=lr)

    monkeypatch.setattr(trainer, "train_step", recording)
    before = trainer.snapshot()
    rng = torch.random.get_rng_state()
    res = lr_find(trainer, learn.tensors(df), num=30)
    assert rates[: len(res.lrs)] == res.lrs  # every rate of the sweep is one train_step at that rate
    after = trainer.snapshot()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.optimizer is None
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_suggested_rate_lies_where_training_converges():
    learn, df = _learn()
    res = learn.lr_find(df.iloc[:2400])
    # train at rates across the sweep; the suggestion must be among the rates that train well
    final = {}
    for lr in [1e-5, res.suggestion, 1.0, 5.0]:
        fresh, _ = _learn()
        fresh.fit(df.iloc[:2400], lr=lr)
        final[lr] = fresh.evaluate(df.iloc[2400:])["log_loss"]
    assert final[res.suggestion] < 0.45  # converged (a constant predictor scores ~0.69)
    assert final[res.suggestion] < final[1e-5]  # too small to learn in 4 epochs
    assert final[res.suggestion] <= min(final.values()) + 0.05


def test_plot_marks_the_suggestions(tmp_path):
    learn, df = _learn()
    fig = learn.lr_find(df).plot()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(lbl.startswith("valley") for lbl in labels)
    fig.savefig(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_keeps_the_matplotlib_backend():
    # a notebook's inline backend must survive plot(), or no later figure is shown
    import matplotlib
    import matplotlib.pyplot as plt

    from embedkit.nn.lr_finder import LRFinderResult

    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        res = LRFinderResult([1e-4, 1e-3, 1e-2], [0.7, 0.5, 0.9], [0.7, 0.6, 0.8], 1e-4, {"minimum/10": 1e-4})
        fig = res.plot()
        assert matplotlib.get_backend() == "svg"
        plt.close(fig)
    finally:
        plt.switch_backend(before)


def test_valley_and_steepest_on_a_known_curve():
    lrs = np.logspace(-6, 0, 61)
    loss = np.concatenate([np.full(20, 1.0), np.linspace(1.0, 0.2, 30), np.linspace(0.2, 3.0, 11)])
    v = valley(lrs, loss)
    assert lrs[20] <= v <= lrs[49]
    s = suggestions(lrs, loss)
    assert s["minimum/10"] == pytest.approx(lrs[int(np.argmin(loss))] / 10)
    assert lrs[19] <= s["steepest"] <= lrs[49]
