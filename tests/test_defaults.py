"""The defaults that must work on a user's own table: target standardisation, the training-length rule,
the LR finder's guards, the width cap and the transformer's cross-fitting by default."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from _synthetic import grouped_categories

from embedkit.nn.estimators import TabularNetClassifier, TabularNetRegressor
from embedkit.nn.learner import Learner, fit_net, target_moments
from embedkit.nn.lr_finder import FALLBACK_LR, MIN_USABLE_LR, suggestions, usable_suggestion
from embedkit.nn.model import NetConfig, TabularNet, auto_dropout, default_emb_dim
from embedkit.nn.schedule import MIN_TOTAL_STEPS, auto_batch_size, auto_epochs
from embedkit.nn.trainer import TrainConfig
from embedkit.predictor import Predictor
from embedkit.spec import FeatureSpec
from embedkit.transformer import EmbeddingTransformer

XCOLS = ["cat", "other", "x"]


# ---- 1. regression: the target is standardised inside the net ------------------------------------
def test_a_target_shifted_by_1000_reaches_the_same_rmse_relative_to_its_spread():
    df, _ = grouped_categories(n=1_500, task="regression", seed=3)
    test, _ = grouped_categories(n=1_000, task="regression", seed=4)
    out = []
    for shift in (0.0, 1000.0):
        # every default: the schedule chosen from the rows, the LR finder; only the offset differs
        reg = TabularNetRegressor(categorical=["cat", "other"], random_state=0, device="cpu")
        reg.fit(df[XCOLS], df["y"] + shift)
        err = reg.predict(test[XCOLS]) - (test["y"] + shift)
        out.append(float(np.sqrt(np.mean(err**2)) / test["y"].std()))
        cfg = reg.learner_.model.config
        assert cfg.y_mean[0] == pytest.approx(float((df["y"] + shift).mean()), abs=0.1)
        assert cfg.y_std[0] == pytest.approx(float(df["y"].std()), rel=0.1)
    # the noise alone is 0.3 / std(y) ~ 0.2 of the spread; before the target was standardised, the
    # +1000 net stayed near its initial outputs (a relative RMSE in the hundreds)
    assert out[0] < 0.3 and out[1] < 0.3, out
    assert out[1] == pytest.approx(out[0], rel=0.1, abs=0.02), out


def test_target_scale_is_recorded_in_the_bundle_and_inverted_at_predict_time(tmp_path):
    df, _ = grouped_categories(n=1200, task="regression")
    df["y"] = df["y"] * 50 + 12_000
    spec = FeatureSpec(target="y", categorical=["cat", "other"], continuous=["x"], dates=[])
    learn = Learner.from_frame(df, spec, train_config=TrainConfig(epochs=3, lr=1e-2, device="cpu"))
    assert learn.model.config.y_mean is None  # set from the training rows by fit
    learn.fit(df)
    cfg = learn.model.config
    assert cfg.y_mean[0] == pytest.approx(df["y"].mean()) and cfg.y_std[0] == pytest.approx(
        df["y"].std(ddof=0)
    )
    path = learn.save(tmp_path / "bundle")
    loaded = Predictor.load(path)
    std, mean = loaded.forward.y_scale  # the numpy forward pass applies the recorded scale
    np.testing.assert_allclose(std, cfg.y_std, rtol=1e-6)
    np.testing.assert_allclose(mean, cfg.y_mean, rtol=1e-6)
    pred = loaded.predict(df)
    np.testing.assert_allclose(pred, learn.predict(df), rtol=1e-5)
    assert abs(float(np.mean(pred)) - 12_000) < 100  # in the target's units, not standardised ones


def test_weighted_target_moments_and_a_constant_target():
    mean, std = target_moments(np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 1.0]))
    assert mean == [15.0] and std == [5.0]
    assert target_moments(np.full(10, 3.0))[1] == [1.0]


def test_y_range_squashes_predictions_and_standardisation_can_be_turned_off():
    df, _ = grouped_categories(n=1200, task="regression")
    reg = TabularNetRegressor(categorical=["cat", "other"], y_range=(-0.5, 0.5), random_state=0, epochs=3)
    pred = reg.fit(df[XCOLS], df["y"]).predict(df[XCOLS])
    assert pred.min() >= -0.5 and pred.max() <= 0.5
    spec = FeatureSpec(target="y", categorical=["cat"], continuous=["x"], dates=[])
    learn = Learner.from_frame(
        df, spec, net_config=NetConfig(standardize_target=False), train_config=TrainConfig(epochs=1, lr=1e-2)
    )
    learn.fit(df)
    assert learn.model.config.y_mean is None and learn.model.y_std is None


def test_a_resumed_regression_keeps_its_checkpoints_target_scale(tmp_path):
    df, _ = grouped_categories(n=1200, task="regression")
    df["y"] = df["y"] + 500
    spec = FeatureSpec(target="y", categorical=["cat", "other"], continuous=["x"], dates=[])

    def learner(epochs):
        cfg = TrainConfig(epochs=epochs, lr=1e-2, checkpoint_dir=str(tmp_path), restore_best=False)
        return Learner.from_frame(df, spec, train_config=cfg)

    learner(1).fit(df)
    resumed = learner(2)
    resumed.fit(df.assign(y=df["y"] + 1e6), resume_from=tmp_path)  # other targets: the checkpoint wins
    assert resumed.model.config.y_mean[0] == pytest.approx(df["y"].mean())


# ---- 2. training length follows the data ----------------------------------------------------------
def test_batch_size_and_epochs_follow_the_number_of_rows():
    assert [auto_batch_size(n) for n in (100, 2_000, 8_000, 20_000, 65_536, 300_000)] == [
        32, 32, 64, 256, 1024, 1024
    ]  # fmt: skip
    for n in (500, 2_000, 8_000, 50_000, 300_000):
        b = auto_batch_size(n)
        e = auto_epochs(n, b)
        assert 5 <= e <= 20
        # enough optimizer steps, unless the epochs hit their cap
        assert e * -(-n // b) >= MIN_TOTAL_STEPS or e == 20
    assert auto_epochs(300_000, 1024) == 5


def test_a_small_table_gets_hundreds_of_steps_and_keeps_its_best_held_out_epoch():
    df, _ = grouped_categories(n=2_000, task="binary")
    clf = TabularNetClassifier(categorical=["cat", "other"], random_state=0).fit(df[XCOLS], df["y"])
    trainer = clf.learner_.trainer
    n_train = len(df) - round(0.1 * len(df))  # valid_fraction=0.1 is held out
    assert trainer.batch_size == auto_batch_size(n_train) == 16 * 2
    epochs = clf.history_["epochs"]
    assert len(epochs) == auto_epochs(n_train, trainer.batch_size)
    assert len(epochs) * trainer.steps_per_epoch >= MIN_TOTAL_STEPS
    assert all("valid_log_loss" in e for e in epochs)  # validated on the held-out slice each epoch
    best = clf.history_["best_epoch"]
    assert clf.history_["best_score"] == min(e["valid_log_loss"] for e in epochs)
    assert epochs[best]["valid_log_loss"] == clf.history_["best_score"]


def test_explicit_batch_size_and_epochs_win_over_the_rule():
    df, _ = grouped_categories(n=1_000, task="binary")
    clf = TabularNetClassifier(categorical=["cat"], batch_size=200, epochs=2, lr=1e-2).fit(df[XCOLS], df["y"])
    assert clf.learner_.trainer.batch_size == 200 and len(clf.history_["epochs"]) == 2


def test_dropout_follows_the_number_of_rows():
    assert auto_dropout(2_000) == 0.2 and auto_dropout(500_000) == 0.1
    assert 0.1 < auto_dropout(30_000) < 0.2
    df, _ = grouped_categories(n=1_000, task="binary")
    spec = FeatureSpec(target="y", categorical=["cat"], continuous=["x"], dates=[])
    learn = Learner.from_frame(df, spec)
    assert learn.model.config.dropout == 0.2 and learn.model.config.emb_dropout == 0.2
    given = Learner.from_frame(df, spec, net_config=NetConfig(dropout=0.05, emb_dropout=0.0))
    assert given.model.config.dropout == 0.05 and given.model.config.emb_dropout == 0.0


# ---- the LR finder on small data ------------------------------------------------------------------
def test_lr_finder_ignores_a_lucky_first_batch():
    lrs = np.geomspace(1e-7, 10, 100)
    smoothed = np.r_[0.1, np.linspace(1.0, 0.5, 79), np.linspace(0.5, 3.0, 20)]  # the first value lowest
    alts = suggestions(lrs, smoothed)
    assert alts["minimum/10"] == pytest.approx(lrs[79] / 10)


def test_an_unusable_suggestion_warns_and_falls_back():
    with pytest.warns(UserWarning, match="no usable rate .* train.lr_find.num"):
        lr = usable_suggestion({"minimum/10": 3e-8, "valley": 2e-3, "steepest": 1e-7}, 20)
    assert lr == 2e-3
    with pytest.warns(UserWarning, match="training at 1.0e-03"):
        assert usable_suggestion({"minimum/10": 3e-8, "valley": 1e-7, "steepest": 1e-7}, 20) == FALLBACK_LR
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert usable_suggestion({"minimum/10": 1e-2, "valley": 1e-3, "steepest": 1e-3}, 100) == 1e-2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lr_finder_on_a_small_regression_table_suggests_a_usable_rate(seed):
    df, _ = grouped_categories(n=2_300, task="regression", seed=seed)
    df["y"] = df["y"] * 3 + 9
    spec = FeatureSpec(target="y", categorical=["cat", "other"], continuous=["x"], dates=[])
    learn = Learner.from_frame(df, spec, train_config=TrainConfig(seed=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback needed
        found = learn.lr_find(df)
    assert MIN_USABLE_LR <= found.suggestion <= 1.0
    assert learn.trainer.batch_size == auto_batch_size(len(df))  # swept at the batch size training uses


# ---- 3. widths and the transformer ----------------------------------------------------------------
def test_width_rule_has_a_cap_parameter():
    assert default_emb_dim(10_000) == 12  # the default cap
    assert default_emb_dim(10_000, max_dim=600) == round(1.6 * 10_000**0.56)
    net = TabularNet(["a", "b"], [50_000, 5], 0, NetConfig(max_emb_dim=4, emb_dims={"b": 7}))
    assert net.emb_dims == [4, 7]
    with pytest.raises(ValueError, match="max_emb_dim must be an integer >= 1"):
        NetConfig(max_emb_dim=0)
    df, _ = grouped_categories(n=600, task="binary")
    clf = TabularNetClassifier(categorical=["cat", "other"], max_emb_dim=3, epochs=1, lr=1e-2)
    assert clf.fit(df[XCOLS], df["y"]).learner_.model.emb_dims == [3, 3]


def test_transformer_cross_fits_by_default_when_it_trains_its_own_net():
    rng = np.random.default_rng(0)
    n = 1_500
    df, _ = grouped_categories(n=n, task="binary")
    df["id"] = [f"r{i}" for i in rng.integers(0, 400, n)]  # ids a net can memorise
    X = df[["cat", "id", "x"]]
    fast = {"epochs": 2, "net_params": {"lr": 1e-2, "batch_size": 128}}
    et = EmbeddingTransformer(columns=["cat", "id"], random_state=0, **fast)
    assert et.get_params()["cv"] == "auto"
    out = et.fit_transform(X, df["y"])
    assert et.cv_ == 5  # "auto": 5 folds below 50,000 rows
    in_sample = et.transform(X)
    # the fitted tables are the full net's; the rows it trained on got their folds' vectors instead
    assert out.shape == in_sample.shape
    assert not np.allclose(out[:, :-1], in_sample[:, :-1])
    np.testing.assert_array_equal(out[:, -1], in_sample[:, -1])  # the passed-through column
    one_net = EmbeddingTransformer(columns=["cat", "id"], random_state=0, cv=None, **fast)
    np.testing.assert_allclose(one_net.fit_transform(X, df["y"]), one_net.transform(X))


def test_transformer_auto_cv_trains_one_net_on_a_large_table(monkeypatch):
    import embedkit.transformer as mod

    monkeypatch.setattr(mod, "CV_AUTO_MAX_ROWS", 1_000)  # "large" for this test
    df, _ = grouped_categories(n=1_500, task="binary")
    et = EmbeddingTransformer(columns=["cat"], random_state=0, epochs=1, net_params={"lr": 1e-2})
    out = et.fit_transform(df[XCOLS], df["y"])
    assert et.cv_ is None
    np.testing.assert_array_equal(out, et.transform(df[XCOLS]))
    with pytest.raises(ValueError, match="cv must be 'auto', None, an integer >= 2"):
        EmbeddingTransformer(cv="five").fit(df[XCOLS], df["y"])


# ---- estimator hygiene ----------------------------------------------------------------------------
def test_classifier_refuses_a_continuous_target_as_scikit_learn_does():
    df, _ = grouped_categories(n=200, task="regression")
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        TabularNetClassifier(categorical=["cat"]).fit(df[XCOLS], df["y"])


def test_target_errors_name_y():
    df, _ = grouped_categories(n=200, task="binary")
    y = df["y"].astype(float)
    y.iloc[3] = np.nan
    with pytest.raises(Exception, match="target 'y' has 1 missing value") as info:
        TabularNetRegressor(categorical=["cat"]).fit(df[XCOLS], y)
    assert "__embedkit" not in str(info.value)
    # a feature called y: the target gets another name, and the feature stays a feature
    frame = df[XCOLS].assign(y=np.arange(len(df)) % 3)
    reg = TabularNetRegressor(categorical=["cat", "y"], epochs=1, lr=1e-2).fit(frame, df["x"])
    assert "y" in reg.learner_.preprocessor.cat_names_


def test_fit_net_holds_out_a_seeded_slice():
    df, _ = grouped_categories(n=1_000, task="binary")
    spec = FeatureSpec(target="y", categorical=["cat"], continuous=["x"], dates=[])
    a = fit_net(df, spec, train_config=TrainConfig(epochs=1, lr=1e-2, seed=3), valid_fraction=0.2)
    assert a.trainer._n_train == 800 and "valid_auc" in a.history.epochs[0]
    tiny = fit_net(df.head(10), spec, train_config=TrainConfig(epochs=1, lr=1e-2))
    assert tiny.trainer._n_train == 10  # too few rows to hold any out
    with pytest.raises(Exception, match="valid_fraction must be in"):
        fit_net(df, spec, valid_fraction=1.0)


def test_frame_pass_through_types_unchanged():
    # a pandas 3 string column and an integer column train as categories with the defaults
    df = pd.DataFrame(
        {"s": pd.Series(["a", "b"] * 50, dtype="str"), "i": np.arange(100) % 4, "y": np.arange(100) % 2}
    )
    clf = TabularNetClassifier(categorical=["s", "i"], epochs=1, lr=1e-2).fit(df[["s", "i"]], df["y"])
    assert clf.predict(df[["s", "i"]]).shape == (100,)


# ---- CPU threads ----------------------------------------------------------------------------------
def test_training_threads_follow_the_batch_size_and_the_cpus_the_process_may_use(monkeypatch):
    import embedkit.nn.device as dev

    monkeypatch.setattr(dev.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(dev, "_cgroup_cpu_quota", lambda: None)
    assert dev.available_cpus() == 6
    monkeypatch.setattr(dev, "_cgroup_cpu_quota", lambda: 2)  # a container allowed 2 CPUs
    assert dev.available_cpus() == 2
    assert dev.training_threads(None, 64) == 1 and dev.training_threads(None, 1024) == 2
    assert dev.training_threads(3, 64) == 3
    with pytest.raises(ValueError, match="threads must be >= 1"):
        dev.training_threads(0, 64)


def test_training_runs_with_the_chosen_threads_and_restores_torchs_setting():
    import torch

    from embedkit.nn.callbacks import Callback

    seen = []

    class Threads(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            seen.append(torch.get_num_threads())

    df, _ = grouped_categories(n=600, task="binary")
    spec = FeatureSpec(target="y", categorical=["cat"], continuous=["x"], dates=[])
    before = torch.get_num_threads()
    learn = Learner.from_frame(df, spec, train_config=TrainConfig(epochs=1, lr=1e-2), callbacks=[Threads()])
    learn.fit(df)  # batch 32 (auto): one thread
    threads2 = Learner.from_frame(
        df, spec, train_config=TrainConfig(epochs=1, lr=1e-2, threads=2), callbacks=[Threads()]
    )
    threads2.fit(df)
    assert seen == [1, 2]
    assert torch.get_num_threads() == before


def test_an_undefined_validation_metric_is_warned_about(caplog):
    df, _ = grouped_categories(n=300, task="binary")
    spec = FeatureSpec(target="y", categorical=["cat"], continuous=["x"], dates=[])
    one_class = df[df["y"] == 1].head(5)
    learn = Learner.from_frame(df, spec, train_config=TrainConfig(epochs=2, lr=1e-2))
    with caplog.at_level("WARNING", logger="embedkit"):
        learn.fit(df, one_class)
    assert "valid_auc" in caplog.text and "hold a single class" in caplog.text
    assert caplog.text.count("are undefined (NaN)") == 1  # once, not every epoch


def test_learner_fit_shows_epoch_lines_when_asked_and_estimators_stay_quiet(capsys):
    df, _ = grouped_categories(n=400, task="binary")
    spec = FeatureSpec(target="y", categorical=["cat"], continuous=["x"], dates=[])
    learn = Learner.from_frame(df, spec, train_config=TrainConfig(epochs=2, lr=1e-2))
    learn.fit(df, df, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2: train_loss" in err and "epoch 2/2:" in err and "valid_auc" in err
    assert learn.trainer.callbacks.callbacks == []  # the bar was for that fit only
    TabularNetClassifier(categorical=["cat"], epochs=1, lr=1e-2).fit(df[XCOLS], df["y"])
    assert "epoch" not in capsys.readouterr().err


# ---- compatibility and safety (review findings) ---------------------------------------------------
def test_a_bundle_from_before_the_width_cap_rebuilds_at_its_own_widths():
    old = NetConfig().to_dict()
    del old["max_emb_dim"]  # what a bundle written before the cap holds
    net = TabularNet(["a"], [200], 0, NetConfig.from_dict(old))
    assert net.emb_dims == [round(1.6 * 200**0.56)]  # 31, the uncapped rule of its time
    arch = TabularNet(["a", "b"], [200, 7], 1, NetConfig()).architecture()
    assert arch["config"]["emb_dims"] == {"a": 12, "b": default_emb_dim(7)}  # widths written out
    assert TabularNet.from_architecture(arch).emb_dims == [12, default_emb_dim(7)]


def test_resuming_trains_to_the_configured_epochs_and_keeps_a_checkpoint_without_a_scale(tmp_path):
    df, _ = grouped_categories(n=800, task="regression")
    spec = FeatureSpec(target="y", categorical=["cat"], continuous=["x"], dates=[])

    def learner(epochs, **net):
        cfg = TrainConfig(epochs=epochs, lr=1e-2, checkpoint_dir=str(tmp_path), restore_best=False)
        return Learner.from_frame(df, spec, net_config=NetConfig(**net), train_config=cfg)

    learner(1, standardize_target=False).fit(df)  # a checkpoint in raw units (as before this version)
    resumed = learner(3)
    history = resumed.fit(df, resume_from=tmp_path)
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3]  # the config's 3 epochs, not the checkpoint's 1
    assert resumed.model.config.y_mean is None and resumed.model.y_std is None  # the checkpoint's (no) scale


def test_a_skops_file_naming_a_builtin_function_is_refused_before_it_runs(tmp_path):
    import json
    import zipfile

    from embedkit.exceptions import FormatError
    from embedkit.servable import _load_skops

    ran = tmp_path / "ran"
    schema = {
        "__class__": "eval",
        "__module__": "builtins",
        "__loader__": "ObjectNode",
        "content": {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
                    "content": json.dumps(f"open({str(ran)!r}, 'w')"), "is_json": True},
        "protocol": 2,
        "_skops_version": "0.10.0",
    }  # fmt: skip
    path = tmp_path / "evil.skops"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("schema.json", json.dumps(schema))
    with pytest.raises(FormatError, match="outside the allow-list"):
        _load_skops(path)
    assert not ran.exists()


def test_baseline_string_cast_writes_whole_floats_as_integers():
    from embedkit.servable import categories_as_strings

    train = pd.DataFrame({"level": [1.0, 2.0, np.nan], "city": ["a", None, "b"]})
    served = pd.DataFrame({"level": pd.Series([1, None, 2], dtype=object), "city": ["a", "b", None]})
    assert categories_as_strings(train).tolist() == [["1", "a"], ["2", "<missing>"], ["<missing>", "b"]]
    assert categories_as_strings(served)[:, 0].tolist() == ["1", "<missing>", "2"]


def test_threads_respect_torchrun_and_omp_settings(monkeypatch):
    import embedkit.nn.device as dev

    monkeypatch.setattr(dev, "available_cpus", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert dev.training_threads(None, 1024) == 2  # 8 CPUs shared by 4 ranks
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert dev.training_threads(None, 1024) == 1


def test_auto_cv_falls_back_to_one_net_when_folds_cannot_be_made():
    et = EmbeddingTransformer()
    assert et._resolve_cv(8) is None  # too few rows for 5 folds
    assert et._resolve_cv(100, np.r_[np.zeros(97), np.ones(3)]) is None  # a class of 3 rows
    assert et._resolve_cv(100, np.arange(100) % 2) == 5


# ---- a small ensemble below 10,000 rows -----------------------------------------------------------
def test_small_tables_average_five_nets_and_their_probabilities():
    df, _ = grouped_categories(n=1_200, task="multiclass")
    clf = TabularNetClassifier(categorical=["cat", "other"], epochs=2, lr=1e-2, random_state=3)
    clf.fit(df[XCOLS], df["y"])
    assert clf.n_nets_ == 5 and len(clf.learners_) == 5 and clf.learner_ is clf.learners_[0]
    seeds = [learn.train_config.seed for learn in clf.learners_]
    assert len(set(seeds)) == 5 and seeds[0] == 3
    members = [learn.predict_proba(df[XCOLS]) for learn in clf.learners_]
    np.testing.assert_allclose(clf.predict_proba(df[XCOLS]), np.mean(members, axis=0), rtol=1e-6)
    assert clf.predict(df[XCOLS]).tolist() == list(clf.classes_[np.mean(members, axis=0).argmax(1)])
    with pytest.raises(Exception, match="averages 5 nets .* refit with n_nets=1"):
        clf.save("unused")
    one = TabularNetRegressor(categorical=["cat"], epochs=1, lr=1e-2, n_nets=1).fit(df[XCOLS], df["x"])
    assert one.n_nets_ == 1
    with pytest.raises(ValueError, match="n_nets must be 'auto' or an integer >= 1"):
        TabularNetRegressor(n_nets=0).fit(df[XCOLS], df["x"])


def test_large_tables_train_one_net(monkeypatch):
    import embedkit.nn.estimators as est

    monkeypatch.setattr(est, "ENSEMBLE_MAX_ROWS", 500)
    df, _ = grouped_categories(n=600, task="binary")
    clf = TabularNetClassifier(categorical=["cat"], epochs=1, lr=1e-2).fit(df[XCOLS], df["y"])
    assert clf.n_nets_ == 1


def test_bad_target_scale_settings_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="y_range must be \\(low, high\\) with low < high"):
        NetConfig(task="regression", y_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="y_mean and y_std go together"):
        NetConfig(task="regression", y_mean=[0.0])
    with pytest.raises(ValueError, match="y_std finite and > 0"):
        NetConfig(task="regression", y_mean=[0.0], y_std=[0.0])
