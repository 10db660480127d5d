"""EmbeddingTransformer: look-ups, scikit-learn contract, pipelines, and the training path."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _synthetic import grouped_categories
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from embedkit import transformer as transformer_mod
from embedkit.datasets import FLIGHTS_CATEGORICAL, FLIGHTS_CONTINUOUS, FLIGHTS_TARGET, flights
from embedkit.exceptions import DataError, NotFittedError
from embedkit.preprocessing import MISSING, UNKNOWN, CategoryVocab, Preprocessor
from embedkit.spec import FeatureSpec
from embedkit.tables import (
    EmbeddingTable,
    EmbeddingTables,
    load_tables,
    tables_from_preprocessor,
    write_tables,
)
from embedkit.transformer import EmbeddingTransformer, align_table

CATS = ["city", "rooms", "flag", "day"]
DIMS = {"city": 3, "rooms": 2, "flag": 2, "day": 4}


def make_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "city": pd.Series(rng.choice(["paris", "oslo", "rome", "lima"], n), dtype="str"),
            "rooms": rng.integers(1, 6, n),
            "flag": rng.random(n) < 0.5,
            "day": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 5, n), unit="D"),
            "price": rng.normal(size=n),
        }
    )


def make_tables(df: pd.DataFrame | None = None, seed: int = 0) -> EmbeddingTables:
    df = make_frame() if df is None else df
    rng = np.random.default_rng(seed)
    tabs = []
    for c in CATS:
        vocab = CategoryVocab.fit(c, df[c])
        tabs.append(EmbeddingTable(vocab, rng.standard_normal((vocab.n_codes, DIMS[c]))))
    return EmbeddingTables(tabs, source="test")


def expected_output(
    tables: EmbeddingTables, df: pd.DataFrame, columns=CATS, passthrough=("price",)
) -> np.ndarray:
    """The reference: CategoryVocab.encode (pandas get_indexer) + a row gather, column by column."""
    parts = [tables[c].weights[tables[c].vocab.encode(df[c])] for c in columns]
    parts += [df[[c]].to_numpy(dtype=np.float32) for c in passthrough]
    return np.hstack(parts)


@pytest.fixture(scope="module")
def tables() -> EmbeddingTables:
    return make_tables()


@pytest.fixture(scope="module")
def tables_dir(tmp_path_factory, tables) -> Path:
    return write_tables(tmp_path_factory.mktemp("tables") / "t", tables)


@pytest.fixture(scope="module")
def flights_example():
    ex = flights(n_rows=5000)
    spec = FeatureSpec(categorical=list(FLIGHTS_CATEGORICAL), continuous=[], dates=[])
    pre = Preprocessor(spec).fit(ex.train)
    rng = np.random.default_rng(0)
    weights = {c: rng.standard_normal((v.n_codes, 4)) for c, v in pre.vocabs_.items()}
    cols = FLIGHTS_CATEGORICAL + FLIGHTS_CONTINUOUS
    return (
        tables_from_preprocessor(pre, weights),
        ex.train[cols],
        ex.train[FLIGHTS_TARGET].to_numpy(),
        ex.valid[cols],
        ex.valid[FLIGHTS_TARGET].to_numpy(),
    )


# ---- look-ups -----------------------------------------------------------------------------------
def test_transform_is_the_vocabulary_lookup_plus_passthrough(tables, tables_dir):
    df = make_frame()
    query = make_frame(n=40, seed=1)
    for source in (tables, tables_dir, str(tables_dir)):
        et = EmbeddingTransformer(source).fit(df)
        out = et.transform(query)
        np.testing.assert_array_equal(out, expected_output(tables, query))
        assert out.dtype == np.float32 and out.flags.f_contiguous
    assert et.columns_ == CATS and et.passthrough_ == ["price"]
    assert et.tables_ == tables and et.n_features_in_ == 5
    assert list(et.feature_names_in_) == list(df.columns)


def test_missing_values_get_the_missing_vector(tables):
    df = pd.DataFrame(
        {
            "city": pd.Series([None, np.nan, "oslo"], dtype="str"),
            "rooms": pd.Series([pd.NA, 2, None], dtype="Int64"),
            "flag": pd.Series([None, True, pd.NA], dtype="boolean"),
            "day": pd.to_datetime([None, "2024-01-02", pd.NaT]),
            "price": [np.nan, 1.0, 2.0],
        }
    )
    out = EmbeddingTransformer(tables).fit(make_frame()).transform(df)
    layout = np.cumsum([0] + [DIMS[c] for c in CATS])
    missing_rows = {"city": [0, 1], "rooms": [0, 2], "flag": [0, 2], "day": [0, 2]}
    for j, c in enumerate(CATS):
        block = out[:, layout[j] : layout[j + 1]]
        for r in missing_rows[c]:
            np.testing.assert_array_equal(block[r], tables[c].weights[MISSING])
    assert np.isnan(out[0, -1]) and out[2, -1] == 2.0


def test_handle_unknown_value_gives_the_unknown_vector(tables):
    q = make_frame(n=3).assign(city=pd.Series(["atlantis", "oslo", "eldorado"], dtype="str"))
    out = EmbeddingTransformer(tables).fit(make_frame()).transform(q)
    np.testing.assert_array_equal(out[[0, 2], :3], tables["city"].weights[[UNKNOWN, UNKNOWN]])
    np.testing.assert_array_equal(
        out[1, :3], tables["city"].weights[tables["city"].vocab.encode(pd.Series(["oslo"]))[0]]
    )


def test_handle_unknown_error_names_the_column_and_values(tables):
    q = make_frame(n=8).assign(rooms=[1, 99, 98, 97, 96, 95, 94, 1], city=pd.Series([None] * 8, dtype="str"))
    et = EmbeddingTransformer(tables, handle_unknown="error").fit(make_frame())
    with pytest.raises(
        DataError,
        match=r"column 'rooms' has 6 value\(s\) not in its embedding table .* e\.g\. \[99, 98, 97, 96, 95\];",
    ) as err:
        et.transform(q)
    assert err.value.columns == ("rooms",)
    et.transform(make_frame(n=8).assign(city=pd.Series([None] * 8, dtype="str")))  # missing is not unknown


def test_handle_unknown_return_nan(tables):
    q = make_frame(n=4).assign(city=pd.Series(["atlantis", None, "oslo", "x"], dtype="str"))
    out = EmbeddingTransformer(tables, handle_unknown="return_nan").fit(make_frame()).transform(q)
    assert np.isnan(out[[0, 3], :3]).all()
    np.testing.assert_array_equal(out[1, :3], tables["city"].weights[MISSING])
    assert not np.isnan(out[:, 3:]).any()


def test_columns_remainder_and_feature_names(tables):
    df = make_frame()
    et = EmbeddingTransformer(tables, columns=["day", "city"], remainder="drop").fit(df)
    names = et.get_feature_names_out()
    assert names.dtype == object
    assert names.tolist() == [f"day__emb_{i}" for i in range(4)] + [f"city__emb_{i}" for i in range(3)]
    np.testing.assert_array_equal(et.transform(df), expected_output(tables, df, ["day", "city"], ()))
    et = EmbeddingTransformer(tables, columns="flag").fit(df)
    assert et.get_feature_names_out().tolist() == [
        "flag__emb_0",
        "flag__emb_1",
        "city",
        "rooms",
        "day",
        "price",
    ]
    assert et.passthrough_ == ["city", "rooms", "day", "price"]
    with pytest.raises(DataError, match=r"column 'city' is passed through .* holds str values, not numbers"):
        et.transform(df)


def test_get_feature_names_out_with_input_features(tables):
    et = EmbeddingTransformer(tables).fit(make_frame())
    assert et.get_feature_names_out(list(make_frame().columns))[-1] == "price"
    with pytest.raises(ValueError, match="input_features is not equal to feature_names_in_"):
        et.get_feature_names_out(["a", "b", "c", "d", "e"])


def test_float64_output(tables):
    df = make_frame()
    out = EmbeddingTransformer(tables, dtype="float64").fit(df).transform(df)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, expected_output(tables, df), rtol=1e-6)


@pytest.mark.floats
def test_threaded_gather_equals_single_thread(tables, monkeypatch):
    monkeypatch.setattr(transformer_mod, "_MIN_ROWS_PER_THREAD", 16)
    monkeypatch.setattr(transformer_mod, "_BLOCK_ROWS", 7)
    df = make_frame(n=100, seed=3)
    one = EmbeddingTransformer(tables, n_jobs=1).fit(df)
    many = EmbeddingTransformer(tables, n_jobs=3).fit(df)
    assert one._n_threads(100) == 1 and many._n_threads(100) == 3
    np.testing.assert_array_equal(many.transform(df), one.transform(df))
    np.testing.assert_array_equal(one.transform(df), expected_output(tables, df))
    with pytest.raises(DataError, match="column 'city' has 1 value"):
        EmbeddingTransformer(tables, n_jobs=2, handle_unknown="error").fit(df).transform(
            df.assign(city=df["city"].where(df.index != 90, "atlantis"))
        )


def test_empty_frame_transforms_to_no_rows(tables):
    et = EmbeddingTransformer(tables).fit(make_frame())
    assert et.transform(make_frame().iloc[:0]).shape == (0, 12)


def test_fit_with_tables_needs_only_the_columns(tables):
    df = make_frame()
    et = EmbeddingTransformer(tables).fit(df.iloc[:0])  # how a served pipeline is restored
    np.testing.assert_array_equal(et.transform(df), expected_output(tables, df))
    with pytest.raises(ValueError, match=r"Found array with 0 sample\(s\)"):
        EmbeddingTransformer().fit(df.iloc[:0], [])


# ---- errors -------------------------------------------------------------------------------------
def test_fit_needs_every_table_column(tables):
    with pytest.raises(
        DataError,
        match=r"column 'rooms' has an embedding table but is not in X \(X has columns "
        r"\['city', 'flag', 'day', 'price'\]\); add it .* or choose .* columns=\[...\]",
    ):
        EmbeddingTransformer(tables).fit(make_frame().drop(columns="rooms"))


def test_columns_must_have_tables(tables):
    with pytest.raises(DataError, match=r"columns=\['city', 'price'\]: \['price'\] have no embedding table"):
        EmbeddingTransformer(tables, columns=["city", "price"]).fit(make_frame())


def test_array_input_needs_tables_named_x0(tables):
    with pytest.raises(DataError, match=r"column 'city' .* \(X is an array, so its columns are named x0, x1"):
        EmbeddingTransformer(tables).fit(make_frame()[["price"]].to_numpy())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"handle_unknown": "ignore"},
            r"handle_unknown must be one of \('value', 'error', 'return_nan'\); got 'ignore'",
        ),
        ({"remainder": "keep"}, r"remainder must be one of \('passthrough', 'drop'\); got 'keep'"),
        ({"dtype": "int32"}, r"dtype must be a floating dtype .*; got 'int32'"),
        ({"n_jobs": 0}, r"n_jobs must be None or a non-zero integer; got 0"),
        ({"columns": [1, 2]}, r"columns must be a list of column names \(str\); got \[1, 2\]"),
    ],
)
def test_invalid_parameters_are_reported_by_fit(tables, params, message):
    et = EmbeddingTransformer(tables, **params)  # __init__ never validates
    with pytest.raises(ValueError, match=message):
        et.fit(make_frame())


def test_invalid_tables_argument():
    with pytest.raises(
        TypeError, match="tables must be a path to an embedding tables directory or an EmbeddingTables"
    ):
        EmbeddingTransformer(tables=42).fit(make_frame())


def test_not_fitted():
    with pytest.raises(NotFittedError, match=r"EmbeddingTransformer is not fitted yet; call fit\(X\) first"):
        EmbeddingTransformer().transform(make_frame())
    with pytest.raises(NotFittedError, match="not fitted yet"):
        EmbeddingTransformer().get_feature_names_out()


def test_columns_must_keep_their_names_and_order(tables):
    et = EmbeddingTransformer(tables).fit(make_frame())
    with pytest.raises(ValueError, match="Feature names must be in the same order as they were in fit"):
        et.transform(make_frame()[["price", *CATS]])
    with pytest.raises(ValueError, match="Feature names seen at fit time, yet now missing:\n- price"):
        et.transform(make_frame()[CATS])
    et = EmbeddingTransformer(_numeric_tables()).fit(np.ones((3, 2)))
    with pytest.raises(
        ValueError, match="X has 3 features, but EmbeddingTransformer is expecting 2 features"
    ):
        et.transform(np.ones((3, 3)))


def test_duplicated_column_names(tables):
    df = pd.concat([make_frame(), make_frame()[["price"]]], axis=1)
    with pytest.raises(DataError, match=r"X has duplicated column names \['price'\]; rename them"):
        EmbeddingTransformer(tables).fit(df)


def test_sparse_input_is_refused(tables):
    import scipy.sparse as sp

    with pytest.raises(TypeError, match="does not accept sparse input"):
        EmbeddingTransformer(tables).fit(sp.csr_matrix(np.ones((3, 2))))


# ---- scikit-learn contract ----------------------------------------------------------------------
def test_set_output_pandas_keeps_index_and_names(tables):
    df = make_frame().set_index(pd.RangeIndex(100, 160))
    et = EmbeddingTransformer(tables).set_output(transform="pandas").fit(df)
    out = et.transform(df)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == et.get_feature_names_out().tolist()
    assert out.index.equals(df.index)
    np.testing.assert_array_equal(out.to_numpy(), expected_output(tables, df))
    out2 = clone(et).fit_transform(df)
    assert isinstance(out2, pd.DataFrame) and out2.shape == out.shape


def test_clone_keeps_params_and_drops_fit(tables):
    et = EmbeddingTransformer(tables, columns=["city"], handle_unknown="error").fit(make_frame())
    c = clone(et)
    assert c.get_params()["columns"] == ["city"] and c.handle_unknown == "error"
    assert c.tables is tables  # tables are immutable values: clone shares them instead of copying
    assert not hasattr(c, "tables_")


def test_pickle_roundtrip_gives_equal_outputs(tables_dir, tmp_path):
    df = make_frame()
    et = EmbeddingTransformer(str(tables_dir), handle_unknown="return_nan").fit(df)
    before = et.transform(make_frame(seed=4))
    blob = pickle.dumps(et)
    restored = pickle.loads(blob)
    np.testing.assert_array_equal(restored.transform(make_frame(seed=4)), before)
    assert restored.tables_ == et.tables_


def test_column_transformer(tables):
    df = make_frame()
    ct = ColumnTransformer(
        [
            ("emb", EmbeddingTransformer(tables, remainder="drop"), ["city", "rooms"]),
            ("num", StandardScaler(), ["price"]),
        ],
        remainder="drop",
    ).set_output(transform="pandas")
    ct.set_params(emb__columns=["city", "rooms"])
    out = ct.fit_transform(df)
    assert list(out.columns) == [
        "emb__city__emb_0",
        "emb__city__emb_1",
        "emb__city__emb_2",
        "emb__rooms__emb_0",
        "emb__rooms__emb_1",
        "num__price",
    ]
    np.testing.assert_array_equal(
        out.iloc[:, :5].to_numpy(), expected_output(tables, df, ["city", "rooms"], ())
    )


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: RandomForestClassifier(n_estimators=20, random_state=0), id="random_forest"),
        pytest.param(lambda: KNeighborsClassifier(n_neighbors=15), id="knn"),
        pytest.param(
            lambda: pytest.importorskip("lightgbm").LGBMClassifier(
                n_estimators=30, verbose=-1, random_state=0
            ),
            id="lightgbm",
        ),
    ],
)
def test_pipeline_with_downstream_models(flights_example, model):
    tables, X, y, Xv, _ = flights_example
    pipe = make_pipeline(EmbeddingTransformer(tables), model())
    pipe.fit(X, y)
    proba = pipe.predict_proba(Xv)
    assert proba.shape == (len(Xv), 2) and np.isfinite(proba).all()
    assert pipe.score(X, y) > max(y.mean(), 1 - y.mean())  # learns something from the vectors
    pipe.set_output(transform="pandas")
    assert pipe[:-1].transform(Xv).columns[0] == "carrier__emb_0"


def test_grid_search(flights_example):
    tables, X, y, _, _ = flights_example
    pipe = Pipeline([("embed", EmbeddingTransformer(tables)), ("knn", KNeighborsClassifier())])
    grid = GridSearchCV(
        pipe,
        {"embed__remainder": ["passthrough", "drop"], "knn__n_neighbors": [5, 25]},
        cv=3,
        error_score="raise",
    )
    grid.fit(X.iloc[:1500], y[:1500])
    assert set(grid.best_params_) == {"embed__remainder", "knn__n_neighbors"}
    assert grid.predict(X.iloc[:10]).shape == (10,)


def _numeric_tables(name: str = "x0") -> EmbeddingTables:
    """A table for column x0 of an array holding the integers 0..9 (what sklearn's checks feed a
    transformer tagged categorical)."""
    vocab = CategoryVocab(name, "integer", list(range(10)), [5] * 10)
    return EmbeddingTables([EmbeddingTable(vocab, np.random.default_rng(0).standard_normal((12, 3)))])


_UNKNOWN_ERROR_REASON = (
    "handle_unknown='error' refuses the checks' random data: the weighted-equivalence check repeats "
    "rows of a float matrix, whose values are not in the table's integer vocabulary"
)


def _expected_failed_checks(est: EmbeddingTransformer) -> dict[str, str]:
    if est.handle_unknown == "error":
        return {"check_sample_weight_equivalence_on_dense_data": _UNKNOWN_ERROR_REASON}
    return {}


@parametrize_with_checks(
    [
        EmbeddingTransformer(_numeric_tables()),
        EmbeddingTransformer(
            _numeric_tables(), remainder="drop", handle_unknown="return_nan", dtype="float64"
        ),
        EmbeddingTransformer(_numeric_tables(), handle_unknown="error", n_jobs=1),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        check(estimator)


def test_numpy_input_with_x_named_tables():
    t = _numeric_tables()
    X = np.array([[1, 0.5], [3, 1.5], [42, 2.5], [np.nan, 3.5]])
    et = EmbeddingTransformer(t).fit(X)
    assert et.get_feature_names_out().tolist() == ["x0__emb_0", "x0__emb_1", "x0__emb_2", "x1"]
    w = t["x0"].weights
    np.testing.assert_array_equal(et.transform(X)[:, :3], w[[3, 5, UNKNOWN, MISSING]])
    # a frame with the fitted column names is positionally the same input
    with pytest.warns(UserWarning, match="X has feature names, but EmbeddingTransformer was fitted without"):
        np.testing.assert_array_equal(et.transform(pd.DataFrame(X, columns=["a", "b"])), et.transform(X))


# ---- transform-time code must not need torch ----------------------------------------------------
def test_transform_works_where_torch_cannot_be_imported(tables_dir):
    code = textwrap.dedent(
        f"""
        import sys

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
                return None

        sys.meta_path.insert(0, NoTorch())
        try:
            import torch  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("torch was importable")

        import numpy as np
        import pandas as pd
        import embedkit
        from embedkit.tables import load_tables
        from embedkit.transformer import EmbeddingTransformer, align_table

        tables = load_tables({str(tables_dir)!r})
        X = pd.DataFrame({{
            "city": pd.Series(["oslo", None, "atlantis"], dtype="str"),
            "rooms": [1, 2, 3],
            "flag": [True, False, True],
            "day": pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
            "price": [1.0, 2.0, 3.0],
        }})
        et = EmbeddingTransformer({str(tables_dir)!r}).set_output(transform="pandas").fit(X)
        out = et.transform(X)
        assert out.shape == (3, 12), out.shape
        assert "torch" not in sys.modules
        print("ok", out.shape)
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "ok (3, 12)"


# ---- training path, with a stand-in learner -----------------------------------------------------
def _fake_learner(calls: list[dict]) -> types.ModuleType:
    """A stand-in for embedkit.nn.learner: each 'net' is the per-category mean of y over its training
    rows (so the vectors reveal which rows a net saw)."""

    def fit_tables(X, y, *, columns, sample_weight, task, valid_fraction, epochs, random_state, device, **kw):
        calls.append(
            {
                "index": X.index.to_numpy(),
                "columns": columns,
                "kw": kw,
                "random_state": random_state,
                "task": task,
                "epochs": epochs,
                "device": device,
                "valid_fraction": valid_fraction,
            }
        )
        cols = columns or [c for c in X.columns if not pd.api.types.is_float_dtype(X[c])]
        y = np.asarray(y, dtype=float)
        tabs = []
        for c in cols:
            vocab = CategoryVocab.fit(c, X[c])
            codes = vocab.encode(X[c])
            w = np.zeros((vocab.n_codes, kw.get("emb_dims", {}).get(c, 1)), dtype=np.float32)
            for k in range(vocab.n_codes):
                w[k] = y[codes == k].mean() if (codes == k).any() else -1.0
            tabs.append(EmbeddingTable(vocab, w))
        return EmbeddingTables(tabs, source="fake")

    mod = types.ModuleType("embedkit.nn.learner")
    mod.fit_tables = fit_tables
    return mod


@pytest.fixture
def fake_learner(monkeypatch):
    calls: list[dict] = []
    monkeypatch.setitem(sys.modules, "embedkit.nn.learner", _fake_learner(calls))
    return calls


def test_fit_without_tables_trains_through_fit_tables(fake_learner):
    df = make_frame()
    y = (df["price"] > 0).astype(int).to_numpy()
    et = EmbeddingTransformer(
        task="binary", epochs=3, net_params={"lr": 0.1}, random_state=7, device="cpu", cv=None
    ).fit(df, y)
    assert len(fake_learner) == 1
    call = fake_learner[0]
    assert call["columns"] is None and call["kw"] == {"lr": 0.1} and call["random_state"] == 7
    assert (call["task"], call["epochs"], call["device"], call["valid_fraction"]) == ("binary", 3, "cpu", 0.1)
    assert et.columns_ == ["city", "rooms", "flag", "day"] and et.passthrough_ == ["price"]
    assert et.tables_.source == "fake"
    assert et.transform(df).shape == (len(df), 5)


def test_fit_without_tables_needs_y():
    with pytest.raises(DataError, match=r"no tables given, so fit trains a net on X and y: pass y"):
        EmbeddingTransformer().fit(make_frame())


def test_cross_fit_transforms_each_row_with_a_net_that_did_not_see_it(fake_learner):
    df = make_frame(n=90).drop(columns="day")
    y = (np.arange(90) % 2).astype(int)
    et = EmbeddingTransformer(columns=["city", "rooms"], cv=3, random_state=0)
    out = et.fit_transform(df, y)
    assert len(fake_learner) == 4  # the full net, then one per fold
    full, folds = fake_learner[0], fake_learner[1:]
    assert len(full["index"]) == 90
    # every net starts each category at the same vector: one value-keyed init seed for all of them
    assert isinstance(full["kw"]["emb_init_seed"], int)
    assert {c["kw"]["emb_init_seed"] for c in fake_learner} == {full["kw"]["emb_init_seed"]}
    seen = np.concatenate([np.setdiff1d(np.arange(90), f["index"]) for f in folds])
    assert sorted(seen.tolist()) == list(range(90))  # every row transformed by exactly one fold net
    for f in folds:
        assert f["columns"] == ["city", "rooms"] and f["kw"]["emb_dims"] == {"city": 1, "rooms": 1}
        held_out = np.setdiff1d(np.arange(90), f["index"])
        train_y = y[f["index"]]
        city_codes = et.tables_["city"].vocab.encode(df["city"])
        # each held-out row's vector is the fold net's (the mean of y over the fold's own rows of its
        # city), mapped into the full net's coordinates by one affine map per fold
        fold_means = []
        for r in held_out:
            same = f["index"][city_codes[f["index"]] == city_codes[r]]
            fold_means.append(y[same].mean() if len(same) else -1.0)
        slope, icept = np.polyfit(fold_means, out[held_out, 0], 1)
        np.testing.assert_allclose(out[held_out, 0], slope * np.array(fold_means) + icept, atol=1e-5)
        assert len(train_y) == 60
    in_sample = et.transform(df)
    assert out.shape == in_sample.shape and not np.allclose(out[:, :2], in_sample[:, :2])
    np.testing.assert_array_equal(out[:, 2:], df[["flag", "price"]].to_numpy(dtype=np.float32))


def test_cross_fit_without_random_state_is_repeatable(fake_learner):
    df = make_frame(n=60)
    y = (df["price"] > 0).astype(int).to_numpy()
    for _ in range(2):
        EmbeddingTransformer(cv=2).fit_transform(df, y)
    # one init seed for both fits' nets (the folds themselves follow scikit-learn: None shuffles anew)
    assert len({c["kw"]["emb_init_seed"] for c in fake_learner}) == 1


def test_cross_fit_keeps_an_init_seed_given_in_net_params(fake_learner):
    df = make_frame(n=60)
    y = (df["price"] > 0).astype(int).to_numpy()
    EmbeddingTransformer(cv=2, random_state=0, net_params={"emb_init_seed": 11}).fit_transform(df, y)
    assert [c["kw"]["emb_init_seed"] for c in fake_learner] == [11, 11, 11]


def test_cross_fit_is_used_by_pipeline_fit(fake_learner):
    df = make_frame(n=60)
    y = (df["price"] > 0).astype(int).to_numpy()
    pipe = make_pipeline(EmbeddingTransformer(cv=2, random_state=0), RandomForestClassifier(n_estimators=5))
    pipe.fit(df, y)
    assert len(fake_learner) == 3


def test_cross_fit_with_mismatched_widths_is_explained(monkeypatch):
    calls: list[dict] = []
    mod = _fake_learner(calls)
    real = mod.fit_tables

    def ignores_dims(*args, **kwargs):
        kwargs.pop("emb_dims", None)
        t = real(*args, **kwargs)
        if len(calls) > 1:  # fold nets come out wider
            return EmbeddingTables(
                [EmbeddingTable(v.vocab, np.hstack([v.weights, v.weights])) for v in t.values()]
            )
        return t

    mod.fit_tables = ignores_dims
    monkeypatch.setitem(sys.modules, "embedkit.nn.learner", mod)
    with pytest.raises(
        DataError, match=r"cross-fitting fold 0: .* another width, for \['city'\]; set the embedding"
    ):
        EmbeddingTransformer(columns=["city"], cv=2).fit_transform(make_frame(), np.arange(60) % 2)


# ---- training path, with the real learner ----
# a small, fixed-lr net (no LR finder), so that these tests train in a few seconds on a CPU
_SMALL_NET = {"lr": 1e-2, "layers": [32], "batch_size": 256}


def test_real_learner_fit_transform(flights_example):
    _, X, y, Xv, _ = flights_example
    et = EmbeddingTransformer(
        columns=FLIGHTS_CATEGORICAL, epochs=1, random_state=0, device="cpu", net_params=_SMALL_NET
    )
    out = et.fit(X.iloc[:1500], y[:1500]).transform(Xv)
    assert et.columns_ == FLIGHTS_CATEGORICAL
    assert out.shape == (len(Xv), sum(t.dim for t in et.tables_.values()) + len(FLIGHTS_CONTINUOUS))
    assert np.isfinite(out).all()


def test_real_learner_tables_roundtrip_and_transform_agree(flights_example, tmp_path):
    _, X, y, Xv, _ = flights_example
    cols = ["carrier", "dest"]
    et = EmbeddingTransformer(columns=cols, epochs=1, random_state=0, device="cpu", net_params=_SMALL_NET)
    et.fit(X[cols + FLIGHTS_CONTINUOUS].iloc[:1500], y[:1500])
    path = write_tables(tmp_path / "t", et.tables_)
    again = EmbeddingTransformer(str(path)).fit(X[cols + FLIGHTS_CONTINUOUS])
    Xq = Xv[cols + FLIGHTS_CONTINUOUS]
    np.testing.assert_array_equal(again.transform(Xq), et.transform(Xq))
    assert load_tables(path) == et.tables_


def test_real_learner_cross_fit(flights_example):
    _, X, y, _, _ = flights_example
    cols = ["carrier", "origin", "dest"]
    Xs, ys = X[cols + FLIGHTS_CONTINUOUS].iloc[:1500], y[:1500]
    et = EmbeddingTransformer(
        columns=cols, epochs=1, cv=2, random_state=0, device="cpu", net_params=_SMALL_NET
    )
    out = et.fit_transform(Xs, ys)
    in_sample = et.transform(Xs)
    assert out.shape == in_sample.shape
    assert not np.allclose(out, in_sample)


def test_real_learner_in_a_pipeline(flights_example):
    _, X, y, Xv, yv = flights_example
    pipe = make_pipeline(
        EmbeddingTransformer(
            columns=FLIGHTS_CATEGORICAL, epochs=1, cv=2, random_state=0, device="cpu", net_params=_SMALL_NET
        ),
        RandomForestClassifier(n_estimators=20, random_state=0),
    )
    pipe.fit(X.iloc[:1500], y[:1500])
    assert pipe.score(Xv, yv) > 0.5


def test_docstring_example_runs():
    import doctest

    result = doctest.testmod(transformer_mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("kind", "values"),
    [("string", ["a", "b", "c", "d", "e"]), ("integer", [3, 5, 8, 13, 21]), ("boolean", [0, 1])],
)
def test_align_table_undoes_an_affine_map(kind, values):
    rng = np.random.default_rng(len(values))
    n = len(values)
    dst = EmbeddingTable(CategoryVocab("c", kind, values, [5] * n), rng.normal(size=(n + 2, 3)))
    m = rng.normal(size=(3, 3)) + 3 * np.eye(3)
    kept = values[:-1] if n > 2 else values  # src lacks one category: fitted on the shared ones only
    src_w = dst.weights[: len(kept) + 2].astype(np.float64) @ np.linalg.inv(m) + 0.5
    src = EmbeddingTable(CategoryVocab("c", kind, kept, [5] * len(kept)), src_w)
    aligned = align_table(src, dst, ridge=1e-9)
    assert aligned.vocab == src.vocab and aligned.dim == dst.dim
    np.testing.assert_allclose(aligned.weights, dst.weights[: len(kept) + 2], atol=1e-4)


def test_cross_fit_keeps_a_memorised_noise_column_out_of_the_downstream_model():
    """A column of 1,000 random ids (2-3 rows each, unrelated to y): a net can memorise it, so its
    in-sample vectors carry the training rows' targets and a forest leans on them; cross-fitted
    vectors come from nets that never saw the row, so the forest learns to leave them alone."""
    df, _ = grouped_categories(n=3000, task="binary", seed=0)
    df["noise"] = pd.Series(
        [f"n{i}" for i in np.random.default_rng(10).integers(0, 1000, len(df))], dtype="str"
    )
    X, y = df[["cat", "noise", "x"]], df["y"].to_numpy()
    fit_rows, valid_rows = slice(0, 2000), slice(2000, None)
    # a small init and every id kept (min_frequency 1): what the net memorises is then all there is
    net = {
        "emb_dims": {"noise": 4, "cat": 2},
        "layers": [32, 16],
        "lr": 2e-2,
        "batch_size": 64,
        "emb_init_std": 0.01,
        "min_frequency": 1,
    }
    found = {}
    for cv in (None, 3):
        et = EmbeddingTransformer(
            columns=["cat", "noise"], epochs=6, cv=cv, random_state=0, device="cpu", net_params=net
        )
        train_vectors = et.fit_transform(X.iloc[fit_rows], y[fit_rows])
        rf = RandomForestClassifier(100, min_samples_leaf=3, random_state=0, n_jobs=1)
        rf.fit(train_vectors, y[fit_rows])
        noise = np.char.startswith(et.get_feature_names_out().astype(str), "noise__")
        auc = roc_auc_score(y[valid_rows], rf.predict_proba(et.transform(X.iloc[valid_rows]))[:, 1])
        found[cv] = (rf.feature_importances_[noise].sum(), auc)
    (leaky_importance, leaky_auc), (honest_importance, honest_auc) = found[None], found[3]
    assert honest_importance < 0.7 * leaky_importance
    assert honest_auc > leaky_auc
