import numpy as np
import pandas as pd
import pytest
from _synthetic import grouped_categories

from embedkit import DataError, FeatureSpec
from embedkit.nn.callbacks import Callback
from embedkit.nn.learner import Learner, fit_net
from embedkit.nn.model import NetConfig
from embedkit.nn.trainer import TrainConfig

SPEC = FeatureSpec(target="y", categorical=["cat", "other"], continuous=["x"], dates=[])


def _fit(df, task=None, epochs=6, **tc):
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=2e-2, **tc)
    # a small init spread: what the vectors show is then what training put there (at the default 1.0,
    # six epochs leave most of each category's random start in place)
    net = NetConfig(layers=[32, 16], emb_init_std=0.01)
    learn = Learner.from_frame(df, SPEC, task=task, net_config=net, train_config=cfg)
    learn.fit(df)
    return learn


def _nearest_same_group_rate(w: np.ndarray, groups: np.ndarray) -> float:
    z = w / np.linalg.norm(w, axis=1, keepdims=True)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    return float((groups[sim.argmax(1)] == groups).mean())


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_learned_embeddings_cluster_by_hidden_group(task):
    df, groups = grouped_categories(n=4000, n_cats=24, n_groups=3, task=task)
    learn = _fit(df, task=task)
    vocab = learn.preprocessor.vocabs_["cat"]
    w = learn.embedding_weights()["cat"][2:]  # value rows, in vocab order
    g = np.array([groups[int(v[1:])] for v in vocab.values])
    # chance is 1/3 (rather 7/23); the learned vectors put each category next to its group
    assert _nearest_same_group_rate(w, g) >= 0.9


def test_multiclass_predicts_labels_and_probabilities():
    df, _ = grouped_categories(n=3000, task="multiclass")
    learn = _fit(df, task="multiclass")
    p = learn.predict_proba(df.head(50))
    assert p.shape == (50, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    labels = learn.predict(df.head(200))
    assert set(labels) <= {"high", "low", "mid"}
    assert (labels == df["y"].head(200).to_numpy()).mean() > 0.9


def test_sample_weight_zero_rows_are_ignored():
    df, _ = grouped_categories(n=2000, task="regression")
    flipped = df.copy()
    flipped.loc[:999, "y"] = -flipped.loc[:999, "y"] * 10  # garbage in the first half
    w = np.r_[np.zeros(1000), np.ones(1000)]
    cfg = TrainConfig(epochs=8, batch_size=128, lr=2e-2)
    learn = Learner.from_frame(flipped, SPEC, net_config=NetConfig(layers=[32, 16]), train_config=cfg)
    learn.fit(flipped, sample_weight=w)
    assert learn.evaluate(df.iloc[1000:])["rmse"] < 0.6


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda df: df.drop(columns=["y"]), "target column 'y' is not in the data"),
        (
            lambda df: df.assign(y=np.where(np.arange(len(df)) == 3, np.nan, df["y"])),
            "target 'y' has 1 missing",
        ),
        (lambda df: df.assign(x="not a number"), "continuous column 'x' has non-numeric values"),
        (lambda df: df.iloc[:0], "empty"),
        (lambda df: df.assign(x=np.nan), "column 'x' is entirely missing"),
    ],
)
def test_bad_training_input(make, match):
    df, _ = grouped_categories(n=200)
    with pytest.raises(DataError, match=match):
        Learner.from_frame(make(df), SPEC, train_config=TrainConfig(epochs=1, lr=1e-2))


def test_column_missing_at_predict_time_is_named():
    df, _ = grouped_categories(n=500)
    learn = _fit(df, epochs=1)
    with pytest.raises(DataError, match=r"column\(s\) \['x'\] missing from the input"):
        learn.predict(df.drop(columns=["x"]))


def test_unknown_emb_dims_column_is_named():
    df, _ = grouped_categories(n=200)
    with pytest.raises(DataError, match="emb_dims names column"):
        Learner.from_frame(df, SPEC, net_config=NetConfig(emb_dims={"nope": 3}))


def test_lr_none_uses_the_finder_suggestion():
    df, _ = grouped_categories(n=1000)
    learn = Learner.from_frame(
        df, SPEC, net_config=NetConfig(layers=[16]), train_config=TrainConfig(epochs=1, batch_size=64)
    )
    learn.fit(df)
    assert learn.lr_finder is not None
    assert learn.trainer.lr_max == learn.lr_finder.suggestion


class HearRate(Callback):
    def __init__(self):
        self.heard = []

    def on_lr_found(self, trainer, lr, finder):
        self.heard.append((lr, finder))


def _small(df, lr=None, callbacks=None, **tc):
    cfg = TrainConfig(epochs=1, batch_size=64, lr=lr, **tc)
    return Learner.from_frame(
        df, SPEC, net_config=NetConfig(layers=[16]), train_config=cfg, callbacks=callbacks
    )


def test_fit_chooses_the_rate_in_one_place_and_the_callbacks_hear_it():
    df, _ = grouped_categories(n=1000)
    # no rate anywhere: the finder's suggestion, from the sweep already run on this learner
    cb = HearRate()
    learn = _small(df, callbacks=[cb])
    found = learn.lr_find(df, num=20)
    learn.fit(df)
    assert learn.lr_finder is found and learn.trainer.lr_max == found.suggestion
    assert len(cb.heard) == 1 and cb.heard[0][0] == found.suggestion and cb.heard[0][1] is found
    # the config's rate: no sweep
    cb = HearRate()
    learn = _small(df, lr=1e-2, callbacks=[cb])
    learn.fit(df)
    assert learn.lr_finder is None and cb.heard == [(1e-2, None)]
    # the finder's arguments given: it sweeps with them, for its plot, and the config's rate stays
    cb = HearRate()
    learn = _small(df, lr=1e-2, callbacks=[cb])
    learn.fit(df, lr_find={"num": 12})
    assert learn.lr_finder is not None and len(learn.lr_finder.lrs) <= 12
    assert learn.trainer.lr_max == 1e-2 and cb.heard == [(1e-2, learn.lr_finder)]
    # fit's own rate wins over the config's
    learn = _small(df, lr=1e-2)
    learn.fit(df, lr=3e-3)
    assert learn.trainer.lr_max == 3e-3


def test_fit_net_on_a_validation_frame_trains_as_the_finder_then_fit_by_hand():
    df, _ = grouped_categories(n=1200, task="binary")
    train, valid = df.iloc[:1000], df.iloc[1000:]
    net = NetConfig(layers=[16])
    started = []
    learn = fit_net(
        train,
        SPEC,
        valid=valid,
        valid_fraction=0.5,  # not used: the validation rows are given
        net_config=net,
        train_config=TrainConfig(epochs=2, batch_size=128, seed=1),
        lr_find={"num": 30},
        on_start=lambda lrn: started.append((lrn, lrn.lr_finder, len(lrn.history.epochs))),
    )
    assert started == [(learn, None, 0)]  # once, with the built net, before the sweep and training
    assert learn.trainer._n_train == 1000 and "valid_auc" in learn.history.epochs[0]
    by_hand = Learner.from_frame(
        train, SPEC, net_config=net, train_config=TrainConfig(epochs=2, batch_size=128, seed=1)
    )
    found = by_hand.lr_find(train, num=30)
    by_hand.fit(train, valid, lr=found.suggestion)
    assert learn.trainer.lr_max == found.suggestion
    assert learn.history.epochs[-1]["valid_log_loss"] == by_hand.history.epochs[-1]["valid_log_loss"]
    np.testing.assert_allclose(learn.predict_proba(valid), by_hand.predict_proba(valid), rtol=1e-6)


def test_fit_net_resumes_a_checkpoint_at_its_rate_without_a_sweep(tmp_path):
    class StopAfterFirst(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            trainer.stop_training = True

    df, _ = grouped_categories(n=1200, task="binary")
    train, valid = df.iloc[:1000], df.iloc[1000:]

    def run(callbacks, **kw):
        cfg = TrainConfig(epochs=3, batch_size=128, restore_best=False, **kw)
        return fit_net(
            train, SPEC, valid=valid, net_config=NetConfig(layers=[16]), train_config=cfg, callbacks=callbacks
        )

    first = run([StopAfterFirst()], checkpoint_dir=str(tmp_path))
    cb = HearRate()
    cfg = TrainConfig(epochs=3, batch_size=128, restore_best=False, checkpoint_dir=str(tmp_path))
    resumed = fit_net(
        train,
        SPEC,
        valid=valid,
        net_config=NetConfig(layers=[16]),
        train_config=cfg,
        callbacks=[cb],
        resume_from=tmp_path,
        lr_find={"num": 20},
    )
    assert resumed.lr_finder is None and cb.heard == []
    assert resumed.trainer.lr_max == first.trainer.lr_max
    assert [e["epoch"] for e in resumed.history.epochs] == [1, 2, 3]
    straight = run([])
    np.testing.assert_allclose(
        resumed.predict_proba(valid), straight.predict_proba(valid), rtol=1e-4, atol=1e-5
    )


def test_unseen_category_at_predict_time_uses_the_unknown_vector():
    df, _ = grouped_categories(n=500)
    learn = _fit(df, epochs=1)
    row = df.head(1).copy()
    a = learn.predict(row.assign(cat=pd.Series(["never-seen"], dtype="str")))
    b = learn.predict(row.assign(cat=pd.Series(["also-new"], dtype="str")))
    assert np.isfinite(a).all() and a == pytest.approx(b)


def test_module_docstring_example_runs():
    import doctest

    import embedkit.nn.learner

    result = doctest.testmod(embedkit.nn.learner, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
