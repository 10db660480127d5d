"""Kind "baseline" servables: a downstream baseline (ordinal / one-hot / target codes → an estimator)
packaged like the embedding models, so that register can choose it and the service can serve it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_service_support import build_baseline_servable, frame

from embedkit.exceptions import FormatError
from embedkit.servable import load_servable
from pipelines.sklearn_models import make_baseline
from service.app import create_app
from service.settings import Settings

CATS, CONTS = ["city", "level", "flag"], ["amount", "score"]


@pytest.mark.parametrize(
    ("encoder", "estimator"), [("ordinal", "lightgbm"), ("onehot", "knn"), ("target", "random_forest")]
)
def test_baseline_servable_predicts_what_the_fitted_pipeline_predicts(tmp_path, encoder, estimator):
    path = build_baseline_servable(tmp_path, estimator=estimator, encoder=encoder)
    servable = load_servable(path)
    assert servable.kind == "baseline" and dict(servable.tables) == {}
    df = frame(n=400)
    params = {"n_estimators": 20, "verbosity": -1} if estimator == "lightgbm" else {}
    model = make_baseline(encoder, estimator, "binary", CATS, CONTS, params, seed=0).fit(
        df[CATS + CONTS], df["y"]
    )
    new = frame(n=100, seed=7)
    np.testing.assert_allclose(
        servable.predict_proba(new)[:, 1], model.predict_proba(new[CATS + CONTS])[:, 1], rtol=1e-6
    )
    assert servable.predict(new).tolist() == model.predict(new[CATS + CONTS]).tolist()
    # unseen categories and missing values are scored, not refused
    odd = new.head(3).assign(city=["never-seen", None, "c1"])
    assert np.isfinite(servable.predict_proba(odd)).all()


def test_a_baseline_whose_file_names_a_foreign_type_is_refused(tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = build_baseline_servable(tmp_path)
    sio.dump(FunctionTransformer(func=Path), path / "encoder.skops")  # pathlib.Path: not on the allow-list
    with pytest.raises(FormatError, match="outside the allow-list"):
        load_servable(path)


def test_a_baseline_can_carry_embedding_tables_for_look_ups(tmp_path):
    from test_service_support import build_net_servable

    net = load_servable(build_net_servable(tmp_path / "net"))
    path = build_baseline_servable(tmp_path, tables=net.tables)
    servable = load_servable(path)
    assert list(servable.tables) == list(net.tables)
    vec, kind = servable.embedding("city", "c1")
    np.testing.assert_array_equal(vec, net.embedding("city", "c1")[0])
    assert kind == "value"


def test_the_service_serves_a_baseline_and_has_no_embeddings_for_it(tmp_path):
    path = build_baseline_servable(tmp_path)
    with TestClient(create_app(Settings(model_uri=str(path), compute_threads=None))) as client:
        for _ in range(200):
            if client.get("/ready").status_code == 200:
                break
        records = frame(n=5, seed=3)[CATS + CONTS].astype(object).where(lambda d: d.notna(), None)
        r = client.post("/predict", json={"records": records.to_dict("records")})
        assert r.status_code == 200, r.text
        expected = load_servable(path).predict_proba(frame(n=5, seed=3))
        np.testing.assert_allclose(np.array(r.json()["probabilities"]), expected, atol=1e-6)
        assert client.get("/embeddings/city/c1").status_code == 404
        meta = client.get("/metadata").json()
        assert meta["model"]["kind"] == "baseline" and meta["embeddings"] == []
