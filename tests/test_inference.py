"""embedkit.inference (torch-free) gives what the training side gives: ``Preprocessor.transform`` + the
torch net, and ``EmbeddingTransformer.transform`` + the estimator, on any records."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_service_support import frame

from embedkit.exceptions import DataError
from embedkit.inference import NetForward
from embedkit.nn.learner import Learner
from embedkit.nn.model import NetConfig, load_net, to_prediction
from embedkit.nn.trainer import TrainConfig
from embedkit.preprocessing import _ns_since_epoch, naive_utc
from embedkit.servable import load_servable, save_net_servable, save_pipeline_servable
from embedkit.spec import FeatureSpec
from embedkit.transformer import EmbeddingTransformer
from service.scoring import Scorer

# numpy against torch, batches of several sizes: rerun by `make test` with ATEN_CPU_CAPABILITY=default
pytestmark = pytest.mark.floats

CATEGORICAL = ["city", "level", "flag", "day"]


def _frame(task: str = "binary") -> pd.DataFrame:
    """Every vocabulary kind (string, integer, boolean, timestamp), a date input, numbers with gaps."""
    df = frame(task=task, dates=True)
    rng = np.random.default_rng(1)
    df["day"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 6, len(df)), unit="D")
    return df


def _train(root: Path, task: str = "binary", net: NetConfig | None = None) -> Path:
    df = _frame(task)
    spec = FeatureSpec(target="y", categorical=CATEGORICAL, continuous=["amount", "score"], dates=["when"])
    learn = Learner.from_frame(
        df, spec, task=task, net_config=net, train_config=TrainConfig(epochs=1, lr=1e-2, batch_size=128)
    )
    learn.fit(df)
    return learn.save(root / "bundle")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("inference"))


@pytest.fixture(scope="module")
def servable(bundle: Path) -> Any:
    return load_servable(save_net_servable(bundle.parent / "servable", bundle))


# ---- records: seen, unseen, missing, out of range, odd types ---------------------------------------
_DAYS = [dt.datetime(2024, 1, d) for d in range(1, 8)]
_TZ = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5)), dt.timezone(dt.timedelta(hours=-7))])
_NAN = st.just(float("nan"))
_DATETIMES = st.one_of(
    st.sampled_from(_DAYS),
    st.builds(lambda d, tz: d.replace(hour=5, tzinfo=tz), st.sampled_from(_DAYS), _TZ),
    st.dates(dt.date(2023, 12, 25), dt.date(2024, 1, 10)),
    st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31)),  # most outside pandas' range
)
VALUES = {
    "city": st.one_of(
        st.sampled_from(["c0", "c3", "c7", "C1", "", "never"]), st.text(max_size=3), st.none(), _NAN,
        st.integers(-3, 9), st.booleans(), st.floats(allow_nan=False),
    ),
    "level": st.one_of(
        st.integers(-2, 6), st.integers(-(2**70), 2**70), st.none(), _NAN, st.booleans(),
        st.sampled_from([2.0, 2.5, float("inf")]), st.sampled_from(["3", "x", ""]),
    ),
    "flag": st.one_of(
        st.booleans(), st.none(), _NAN, st.sampled_from([0, 1, 2, 0.0, 1.0, "true", "False", "yes"]),
    ),
    "day": st.one_of(_DATETIMES, st.none()),
    "when": st.one_of(_DATETIMES, st.none()),
    "amount": st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**6), 10**6), st.none(), st.booleans(),
        st.sampled_from(["3.5", "1e3"]),
    ),
    "score": st.one_of(st.floats(-1e6, 1e6), st.none()),
}  # fmt: skip
RECORDS = st.lists(st.fixed_dictionaries(VALUES), min_size=1, max_size=40)


def as_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The frame the records stand for: each column's values as objects, except that date and timestamp
    values are naive UTC (pandas cannot mix time zones in a column) and, outside pandas' nanosecond
    range, missing (a date) or a value no vocabulary holds (a category)."""

    def when(v: Any, outside: Any) -> Any:
        if v is None:
            return None
        return pd.Timestamp(naive_utc(v)) if _ns_since_epoch(v) is not None else outside

    data = {c: pd.Series([r[c] for r in records], dtype=object) for c in VALUES}
    data["day"] = pd.Series(
        [when(r["day"], pd.Timestamp("1677-09-22")) for r in records], dtype="datetime64[ns]"
    )
    data["when"] = pd.Series([when(r["when"], None) for r in records], dtype="datetime64[ns]")
    return pd.DataFrame(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=RECORDS)
def test_records_encode_as_the_preprocessor_transforms(servable: Any, records: list[dict[str, Any]]) -> None:
    pre = servable.model.preprocessor
    try:
        want = pre.transform(as_frame(records))
    except DataError as exc:  # a continuous value that is not a number: refused the same way
        with pytest.raises(DataError, match="non-numeric"):
            pre.encode_records(records)
        assert "non-numeric" in str(exc)
        return
    codes, cont = pre.encode_records(records)
    np.testing.assert_array_equal(codes, want[0])
    np.testing.assert_array_equal(np.isnan(cont), np.isnan(want[1]))
    np.testing.assert_allclose(cont, want[1], rtol=1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=RECORDS)
def test_records_predict_as_the_torch_net(servable: Any, bundle: Path, records: list[dict[str, Any]]) -> None:
    net = _torch_net(bundle)
    try:
        codes, cont = servable.model.preprocessor.transform(as_frame(records))
    except DataError:
        return
    with torch.inference_mode():
        want = to_prediction("binary", net(torch.from_numpy(codes.astype(np.int64)), torch.from_numpy(cont)))
    raw, unknown = servable.score_records(records)
    finite = np.isfinite(want.numpy())
    np.testing.assert_allclose(raw[finite], want.numpy()[finite], atol=1e-5)
    assert unknown == {c: int((codes[:, j] == 1).sum()) for j, c in enumerate(CATEGORICAL)}


_NETS: dict[Path, Any] = {}


def _torch_net(bundle: Path) -> Any:
    from embedkit.bundle import read_bundle

    if bundle not in _NETS:
        _NETS[bundle] = load_net(read_bundle(bundle))
    return _NETS[bundle]


# ---- the net's forward pass -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "task,net",
    [
        ("multiclass", None),
        ("regression", None),
        ("regression", NetConfig(y_range=(-3.0, 3.0))),
        ("binary", NetConfig(layers=[16], dropout=0.0, use_bn=False, bn_cont=False)),
        ("binary", NetConfig(layers=[32, 16, 8], dropout=[0.3, 0.0, 0.1], use_bn=True)),
    ],
)
def test_numpy_forward_matches_torch(tmp_path: Path, task: str, net: NetConfig | None) -> None:
    from embedkit.bundle import read_bundle

    contents = read_bundle(_train(tmp_path, task, net))
    model = load_net(contents)
    forward = NetForward.from_bundle(contents)
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 300):
        codes = np.stack([rng.integers(0, c, n) for c in model.cardinalities], axis=1).astype(np.int64)
        cont = rng.normal(size=(n, model.n_cont)).astype(np.float32)
        with torch.inference_mode():
            want = to_prediction(task, model(torch.from_numpy(codes), torch.from_numpy(cont))).numpy()
        got = forward.predict(codes, cont)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_a_damaged_weights_file_is_a_format_error(tmp_path: Path) -> None:
    from embedkit.bundle import read_bundle
    from embedkit.exceptions import FormatError

    path = _train(tmp_path)
    (path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(FormatError, match="damaged"):
        NetForward.from_bundle(read_bundle(path, verify=False))


# ---- embeddings -> estimators ---------------------------------------------------------------------
def _pipeline(root: Path, bundle: Path, estimator: Any, task: str, handle_unknown: str = "value") -> Any:
    from embedkit.tables import load_tables

    df = _frame(task).fillna({"amount": 0.0})  # k-NN takes no missing numbers
    cols = ["city", "level", "flag", "amount", "score"]
    tr = EmbeddingTransformer(
        tables=load_tables(bundle / "tables"),
        columns=["city", "level", "flag"],
        handle_unknown=handle_unknown,
    ).fit(df[cols])
    estimator.fit(tr.transform(df[cols]), df["y"])
    schema = [{"name": c, "role": "categorical", "kind": tr.tables_[c].vocab.kind} for c in tr.columns_]
    schema += [{"name": c, "role": "continuous", "kind": "number"} for c in ("amount", "score")]
    path = save_pipeline_servable(
        root / f"pipe-{type(estimator).__name__}-{handle_unknown}",
        transformer=tr, estimator=estimator, task=task, classes=[0, 1], input_schema=schema,
    )  # fmt: skip
    return load_servable(path), tr, estimator


def _records(n: int, seed: int, gaps: bool = True) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    cities, levels = ["c0", "c3", "never", None], [0, 2, 9, None]
    return [
        {
            "city": cities[rng.integers(4)],
            "level": levels[rng.integers(4)],
            "flag": [True, False, None][rng.integers(3)],
            "amount": None if gaps and rng.random() < 0.2 else float(rng.normal(20, 10)),
            "score": float(rng.normal()),
        }
        for _ in range(n)
    ]


@pytest.mark.parametrize("name", ["lightgbm", "random_forest", "knn"])
def test_pipeline_records_predict_as_transform_then_estimator(
    tmp_path: Path, bundle: Path, name: str
) -> None:
    import lightgbm as lgb
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier

    est = {
        "lightgbm": lgb.LGBMClassifier(n_estimators=20, verbose=-1),
        "random_forest": RandomForestClassifier(n_estimators=10, random_state=0),
        "knn": KNeighborsClassifier(5),
    }[name]
    servable, tr, fitted = _pipeline(tmp_path, bundle, est, "binary")
    for n in (1, 3, 200):
        records = _records(n, seed=n, gaps=name != "knn")
        x = tr.transform(pd.DataFrame(records).astype({"amount": "float64", "score": "float64"}))
        want = fitted.predict_proba(x)[:, 1]
        raw, unknown = servable.score_records(records)
        np.testing.assert_allclose(raw, want, atol=1e-9)
        assert unknown["city"] == sum(r["city"] == "never" for r in records)
        assert unknown["level"] == sum(r["level"] == 9 for r in records)


def test_pipeline_handle_unknown_rules(tmp_path: Path, bundle: Path) -> None:
    import lightgbm as lgb

    records = [{"city": "never", "level": 0, "flag": True, "amount": 1.0, "score": 0.0}]
    servable, tr, fitted = _pipeline(
        tmp_path, bundle, lgb.LGBMClassifier(n_estimators=5, verbose=-1), "binary", "error"
    )
    with pytest.raises(
        DataError, match=r"column 'city' has 1 value\(s\) not in .* \['never'\]; the model was fitted with"
    ) as err:
        servable.score_records(records)
    assert err.value.columns == ("city",)
    servable, tr, fitted = _pipeline(
        tmp_path, bundle, lgb.LGBMClassifier(n_estimators=5, verbose=-1), "binary", "return_nan"
    )
    x = tr.transform(pd.DataFrame(records))
    assert np.isnan(x[0, : tr.tables_["city"].dim]).all()
    raw, unknown = servable.score_records(records)
    np.testing.assert_allclose(raw, fitted.predict_proba(x)[:, 1], atol=1e-9)
    assert unknown["city"] == 1


# ---- the service's scorer ---------------------------------------------------------------------------
def test_scorer_matches_the_servable(servable: Any) -> None:
    rng = np.random.default_rng(3)
    records = [
        {
            "city": ["c0", "c3", "never", None][rng.integers(4)],
            "level": [0, 2, 9, 2**63, None][rng.integers(5)],
            "flag": [True, False, None][rng.integers(3)],
            "day": [_DAYS[1], dt.datetime(9999, 1, 1), None][rng.integers(3)],
            "when": [_DAYS[2], dt.date(2024, 3, 1), None][rng.integers(3)],
            "amount": None if rng.random() < 0.2 else float(rng.normal(20, 10)),
            "score": float(rng.normal()),
        }
        for _ in range(300)
    ]
    body = {"records": [{**r, **{k: r[k] and r[k].isoformat() for k in ("day", "when")}} for r in records]}
    scorer = Scorer(servable, max_rows=1000, extra_columns="ignore")
    scores = scorer.score_body(json.dumps(body).encode())
    frame_ = as_frame(records)
    np.testing.assert_allclose(np.array(scores.probabilities), servable.predict_proba(frame_), atol=1e-6)
    assert scores.predictions == servable.predict(frame_).tolist()
    assert scores.unknown == servable.unknown_counts(frame_)


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 1, 3),
        dt.datetime(2024, 1, 3, 12, 30, 0, 123456),
        dt.datetime(1970, 1, 1),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
        dt.datetime(2024, 1, 3, 5, tzinfo=dt.timezone(dt.timedelta(hours=-7))),
        dt.date(2000, 2, 29),
    ],
)
def test_timestamp_keys_are_pandas_nanoseconds(value: dt.date) -> None:
    want = pd.Timestamp(value).tz_convert(None) if getattr(value, "tzinfo", None) else pd.Timestamp(value)
    assert _ns_since_epoch(value) == want.value
    assert _ns_since_epoch(dt.datetime(1, 1, 1)) is None and _ns_since_epoch(dt.datetime(2262, 4, 12)) is None


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_lightgbm_one_row_fast_path_gives_booster_predict(task: str) -> None:
    import threading

    import lightgbm as lgb

    from embedkit.inference import LightGBMRow, estimator_function

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = {
        "binary": x[:, 0] > 0,
        "multiclass": np.digitize(np.nan_to_num(x[:, 1]), [-0.5, 0.5]),
        "regression": x[:, 2],
    }[task]
    model = (lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier)(n_estimators=30, verbose=-1)
    booster = model.fit(x, np.nan_to_num(y)).booster_
    f = estimator_function(booster, task)
    fast = LightGBMRow(booster)
    for dtype in (np.float32, np.float64):
        rows = x[:50].astype(dtype)
        want = booster.predict(rows, num_threads=1)
        got = np.stack([fast(r) for r in rows])
        np.testing.assert_array_equal(got.reshape(want.shape), want)
        np.testing.assert_array_equal(np.concatenate([f(rows[i : i + 1]) for i in range(50)]), want)
    # one configuration per thread: concurrent calls give the same numbers
    results: list[np.ndarray] = []
    threads = [
        threading.Thread(target=lambda: results.append(np.stack([fast(r) for r in x[:200]])))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    want = booster.predict(x[:200], num_threads=1).reshape(200, -1)
    for r in results:
        np.testing.assert_array_equal(r.reshape(want.shape), want)
    with pytest.raises(ValueError, match="6 features"):
        fast(np.zeros(5))


def test_an_estimator_that_takes_no_missing_values_is_refused_them_by_name(
    tmp_path: Path, bundle: Path
) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    servable, _, _ = _pipeline(tmp_path, bundle, KNeighborsClassifier(5), "binary")
    record = {"city": "c0", "level": 0, "flag": True, "amount": None, "score": 0.0}
    with pytest.raises(DataError, match=r"\['amount'\].*KNeighborsClassifier"):
        servable.score_records([record])
    with pytest.raises(DataError, match=r"\['amount'\]"):
        servable.predict_raw(pd.DataFrame([record]).astype({"amount": "float64"}))
    assert servable.score_records([{**record, "amount": 1.0}])[0].shape == (1,)


@pytest.mark.parametrize("kind", ["rf-binary", "rf-multiclass", "rf-regression", "extra-binary"])
def test_forests_predict_tree_by_tree_as_scikit_learn(kind: str) -> None:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier, RandomForestRegressor

    from embedkit.inference import FOREST_DIRECT_ROWS, estimator_function

    rng = np.random.default_rng(0)
    x = rng.normal(size=(FOREST_DIRECT_ROWS + 200, 5)).astype(np.float32)
    task = kind.split("-")[1]
    y = {"binary": x[:, 0] > 0, "multiclass": np.digitize(x[:, 1], [-0.5, 0.5]), "regression": x[:, 2]}[task]
    model = {
        "rf": RandomForestRegressor if task == "regression" else RandomForestClassifier,
        "extra": ExtraTreesClassifier,
    }[kind.split("-")[0]](n_estimators=15, min_samples_leaf=3, random_state=0).fit(x[:500], y[:500])
    want = model.predict(x) if task == "regression" else model.predict_proba(x)
    want = want[:, 1] if task == "binary" else want
    f = estimator_function(model, task)
    for rows in (
        slice(0, 1),
        slice(0, 37),
        slice(None),
    ):  # tree by tree, and through scikit-learn above the limit
        np.testing.assert_allclose(f(x[rows]), want[rows], rtol=1e-12, atol=1e-12)
    with_nan = x[:3].copy()
    with_nan[1, 2] = np.nan  # scikit-learn's own missing-value rules decide
    got = f(with_nan)
    ref = model.predict(with_nan) if task == "regression" else model.predict_proba(with_nan)
    np.testing.assert_allclose(got, ref[:, 1] if task == "binary" else ref)


@pytest.mark.parametrize(
    "encoder,task",
    [
        ("ordinal", "binary"),
        ("target", "binary"),
        ("target", "multiclass"),
        ("target", "regression"),
        ("onehot", "binary"),
    ],
)
def test_baseline_encoders_compile_to_lookups_with_the_encoders_numbers(encoder: str, task: str) -> None:
    from embedkit.inference import compile_baseline_encoder, records_frame
    from pipelines.sklearn_models import make_baseline

    df = frame(task=task)
    cat, num = ["city", "level", "flag"], ["amount", "score"]
    model = make_baseline(encoder, "lightgbm", task, cat, num, {"n_estimators": 5, "verbose": -1}, seed=0)
    y = df["y"] if task != "multiclass" else df["y"].astype("category").cat.codes.astype("int64")
    model.fit(df[cat + num], y)
    enc = model[:-1]
    schema = [
        {"name": c, "role": "categorical", "kind": k}
        for c, k in zip(cat, ["string", "integer", "boolean"], strict=True)
    ]
    schema += [{"name": c, "role": "continuous", "kind": "number"} for c in num]
    compiled = compile_baseline_encoder(enc, schema)
    if encoder == "onehot":  # sparse output: left to scikit-learn
        assert compiled is None
        return
    assert compiled is not None
    rng = np.random.default_rng(1)
    records = [
        {
            "city": ["c0", "c3", "never", None][rng.integers(4)],
            "level": [0, 2, 9, None, 2**63][rng.integers(5)],
            "flag": [True, False, None][rng.integers(3)],
            "amount": None if rng.random() < 0.2 else float(rng.normal(20, 10)),
            "score": float(rng.normal()),
        }
        for _ in range(300)
    ]
    want = enc.transform(records_frame(schema, records))
    for rows in (slice(0, 1), slice(None)):
        np.testing.assert_array_equal(compiled(records[rows]), want[rows])


def test_a_passed_through_column_that_is_not_a_number_is_named() -> None:
    from types import SimpleNamespace

    from embedkit.inference import passthrough_values

    transformer = SimpleNamespace(passthrough_=["a", "b", "c"])
    records = [{"a": 1, "b": "x", "c": 2.5}, {"a": None, "b": 3, "c": "7"}]
    with pytest.raises(DataError, match=r"\['b'\] hold a value that is not a number") as exc:
        passthrough_values(transformer, records)
    assert exc.value.columns == ("b",)  # the service's loc; None and numeric text convert
    ok = passthrough_values(transformer, [{"a": None, "b": 1, "c": "7"}])
    np.testing.assert_array_equal(ok, [[np.nan, 1.0, 7.0]])
