import json

import numpy as np
import pytest
from _synthetic import grouped_categories, mixed_frame

from embedkit import FeatureSpec, FormatError
from embedkit.bundle import MANIFEST, PREPROCESSOR, WEIGHTS, read_bundle
from embedkit.nn.learner import Learner
from embedkit.nn.model import NetConfig
from embedkit.nn.trainer import TrainConfig
from embedkit.predictor import Predictor
from embedkit.tables import load_tables


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    df, _ = grouped_categories(n=1500, task="binary")
    spec = FeatureSpec(target="y", categorical=["cat", "other"], continuous=["x"], dates=[])
    learn = Learner.from_frame(
        df,
        spec,
        net_config=NetConfig(layers=[16, 8], dropout=0.0),
        train_config=TrainConfig(epochs=2, lr=1e-2, batch_size=128),
    )
    learn.fit(df)
    path = learn.save(tmp_path_factory.mktemp("b") / "bundle", metrics={"auc": 0.9})
    return learn, df, path


def test_save_load_identical_predictions(trained):
    learn, df, path = trained
    pred = Predictor.load(path)
    np.testing.assert_array_equal(pred.predict_proba(df), learn.predict_proba(df))
    np.testing.assert_array_equal(pred.predict(df), learn.predict(df))
    assert set(pred.predict(df)) <= {0, 1}


def test_bundle_layout_has_no_pickle(trained):
    _, _, path = trained
    names = {p.name for p in path.iterdir()}
    assert {MANIFEST, PREPROCESSOR, WEIGHTS, "tables"} <= names
    assert not any(p.suffix in (".pkl", ".pickle", ".pt", ".joblib") for p in path.rglob("*"))
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["format_version"] == 1 and manifest["metrics"] == {"auc": 0.9}
    assert manifest["architecture"]["cat_names"] == ["cat", "other"]
    tables = load_tables(path / "tables")
    w = learn_weights = trained[0].embedding_weights()["cat"]
    np.testing.assert_array_equal(tables["cat"].weights, learn_weights)
    assert w.shape[0] == trained[0].preprocessor.vocabs_["cat"].n_codes


def test_damaged_bundle_is_refused(trained, tmp_path):
    import shutil

    _, _, path = trained
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    data = bytearray((copy / WEIGHTS).read_bytes())
    data[-10] ^= 0xFF
    (copy / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(FormatError, match="damaged or was modified"):
        Predictor.load(copy)
    (copy / MANIFEST).unlink()
    with pytest.raises(FormatError, match="manifest.json is missing"):
        read_bundle(copy)


def test_wrong_format_version(trained, tmp_path):
    import shutil

    _, _, path = trained
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    m = json.loads((copy / MANIFEST).read_text())
    m["format_version"] = 99
    (copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(FormatError, match="format_version 99"):
        read_bundle(copy)


def test_dates_and_every_column_kind_roundtrip(tmp_path):
    df = mixed_frame(400)
    spec = FeatureSpec(target="y", categorical=["s", "i", "b"], continuous=["f", "g"], dates=["d"])
    learn = Learner.from_frame(
        df,
        spec,
        net_config=NetConfig(layers=[8], dropout=0.0),
        train_config=TrainConfig(epochs=1, lr=1e-2, batch_size=64),
    )
    learn.fit(df)
    p = Predictor.load(learn.save(tmp_path / "b"))
    np.testing.assert_array_equal(p.predict(df), learn.predict(df))


def test_overwrite_is_atomic(trained, tmp_path):
    learn, df, _ = trained
    path = learn.save(tmp_path / "b")
    before = (path / WEIGHTS).read_bytes()

    class Boom(Exception):
        pass

    import embedkit.bundle as bundle_mod

    real = bundle_mod.sha256_file

    def fail(*a, **k):
        raise Boom()

    bundle_mod.sha256_file = fail
    try:
        with pytest.raises(Boom):
            learn.save(path)
    finally:
        bundle_mod.sha256_file = real
    assert (path / WEIGHTS).read_bytes() == before  # the old bundle is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temp dir left behind
