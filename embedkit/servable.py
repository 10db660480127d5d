"""The servable model: one directory format for "the net" and for "embeddings → a downstream model".

This is the contract between training (``pipelines/``, which writes it) and serving (``service/`` and the
MLflow pyfunc wrapper, which read it). It holds only safe formats: JSON, Parquet embedding tables,
safetensors (the net), LightGBM's text model, and skops for other scikit-learn estimators (loaded with an
explicit allow-list of types, never plain pickle).

Layout::

    servable.json     format version, kind ("net" | "pipeline" | "baseline"), task, classes, input
                      schema, details
    bundle/           kind "net": the model bundle (embedkit.bundle)
    tables/           kind "pipeline": the embedding tables the transformer reads
    encoder.skops     kind "baseline": the scikit-learn encoder of the raw columns (ordinal, one-hot or
                      target encoding)
    tables/           kind "baseline", optional: the train run's embedding tables, for the embedding
                      look-ups of the service and ``score --embeddings``; its predictions do not use them
    estimator.txt     kinds "pipeline" and "baseline" with LightGBM: the booster's text model
    estimator.skops   kinds "pipeline" and "baseline" with another scikit-learn estimator

A "baseline" is one of the comparison models of the downstream step (an encoding other than the
embeddings, then LightGBM, a random forest or k-NN): packaged so that the pipeline's register step can
choose it when it beats the embedding models, and serve it the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._io import atomic_dir, read_json_file
from ._version import __version__
from .exceptions import DataError, FormatError
from .outputs import Predictions
from .preprocessing import UNKNOWN

SERVABLE_FORMAT_VERSION = 1
SERVABLE_FILE = "servable.json"

#: What a skops file may name beyond the types skops itself trusts (scikit-learn's estimators and plain
#: containers): exact names only, never a prefix (a prefix such as ``builtins.`` or ``numpy.`` admits
#: functions, e.g. ``builtins.eval``, which skops would call while loading). These are the types the
#: downstream models and baselines of the pipelines hold: a tree's nodes, k-NN's search structures and
#: one-hot training matrix, the target encoder's folds, and a baseline encoder's string cast.
TRUSTED_SKOPS_TYPES = frozenset(
    {
        "embedkit.servable.categories_as_strings",
        "numpy.dtype",
        "scipy.sparse._csr.csr_matrix",
        "scipy.sparse._csc.csc_matrix",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.model_selection._split.KFold",
        "sklearn.model_selection._split.StratifiedKFold",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.tree._tree.Tree",
    }
)


def categories_as_strings(X: Any) -> np.ndarray:
    """Categorical values as strings (missing values as ``"<missing>"``): what scikit-learn's encoders
    want. The first step of a baseline's encoder, here so that a servable names no training code.

    A whole-number float is written as the integer (``1.0`` -> ``"1"``): an integer column with gaps
    arrives as float64 in training and as Python ints in a JSON request, and both must give one string.
    """
    df = pd.DataFrame(X)
    values = df.to_numpy(dtype=object)
    missing = df.isna().to_numpy()
    out = np.empty(values.shape, dtype=object)
    for idx, v in np.ndenumerate(values):
        if missing[idx]:
            out[idx] = "<missing>"
        elif isinstance(v, float | np.floating) and float(v).is_integer():
            out[idx] = str(int(v))
        else:
            out[idx] = str(v)
    return out


def input_schema_from_preprocessor(pre: Any) -> list[dict[str, Any]]:
    """One entry per input column: name, role (categorical/continuous/date) and value kind."""
    spec = pre.spec_
    out: list[dict[str, Any]] = []
    for c in spec.categorical or []:
        out.append({"name": c, "role": "categorical", "kind": pre.vocabs_[c].kind})
    for c in spec.continuous or []:
        out.append({"name": c, "role": "continuous", "kind": "number"})
    for c in spec.dates or []:
        out.append({"name": c, "role": "date", "kind": "timestamp"})
    return out


class Servable(Predictions):
    """A loaded servable model. ``predict`` gives labels/values; ``predict_proba`` class probabilities.

    Predictions go through :mod:`embedkit.inference` (``model``: a ``NetModel``, ``PipelineModel`` or
    ``BaselineModel``); :meth:`score_records` takes records (dicts of column -> value) without pandas.
    """

    def __init__(self, path: Path, meta: dict[str, Any], tables: Any, model: Any) -> None:
        self.path = path
        self.meta = meta
        self.tables = tables
        self.model = model

    # ---- description ---------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def classes(self) -> list[Any] | None:
        return self.meta.get("classes")

    @property
    def input_schema(self) -> list[dict[str, Any]]:
        return list(self.meta["input_schema"])

    @property
    def feature_columns(self) -> list[str]:
        return [c["name"] for c in self.input_schema]

    # ---- prediction ----------------------------------------------------------------------------
    def _check(self, df: pd.DataFrame) -> None:
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
        missing = [c for c in self.feature_columns if c not in df.columns]
        if missing:
            raise DataError(
                f"column(s) {missing} missing from the input; the model needs {self.feature_columns}"
            )

    def predict_raw(self, df: pd.DataFrame) -> np.ndarray:
        """P(class 1) for binary, class probabilities for multiclass, values for regression."""
        self._check(df)
        return np.asarray(self.model.predict_raw(self.model.inputs_from_frame(df)))

    def score_records(self, records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, dict[str, int]]:
        """Raw predictions (as :meth:`predict_raw`) of records holding every input column, and per
        embedded column how many values were unknown."""
        inputs = self.model.inputs_from_records(records)
        return np.asarray(self.model.predict_raw(inputs)), self.model.unknown_counts(inputs)

    def unknown_counts(self, df: pd.DataFrame) -> dict[str, int]:
        """How many values per embedded column are unknown (never seen in training, or too rare)."""
        out = {}
        for name, table in self.tables.items():
            if name in df.columns:
                out[name] = int((table.encode(df[name]) == UNKNOWN).sum())
        return out

    # ---- embeddings ----------------------------------------------------------------------------
    def embedding(self, column: str, value: Any) -> tuple[np.ndarray, str]:
        """The vector of ``value`` in ``column`` and which row it came from (value/missing/unknown)."""
        table = self._table(column)
        code = int(table.vocab.encode(pd.Series([value], dtype=object))[0])
        kind = "missing" if code == 0 else "unknown" if code == 1 else "value"
        return table.weights[code], kind

    def neighbors(self, column: str, value: Any, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` categories of ``column`` nearest to ``value`` by cosine similarity (itself excluded)."""
        table = self._table(column)
        vec, _ = self.embedding(column, value)
        w = table.weights[2:]
        norms = np.linalg.norm(w, axis=1) * max(float(np.linalg.norm(vec)), 1e-12)
        sims = (w @ vec) / np.maximum(norms, 1e-12)
        code = int(table.vocab.encode(pd.Series([value], dtype=object))[0])
        if code >= 2:
            sims[code - 2] = -np.inf
        k = max(0, min(k, len(sims) - (1 if code >= 2 else 0)))
        top = np.argpartition(-sims, k - 1)[:k] if k else np.array([], dtype=int)
        top = top[np.argsort(-sims[top], kind="stable")]
        values = table.vocab.decode_values()
        return [{"category": _jsonable(values.iloc[i]), "similarity": float(sims[i])} for i in top]

    def _table(self, column: str) -> Any:
        if column not in self.tables:
            raise KeyError(column)
        return self.tables[column]


def _jsonable(v: Any) -> Any:
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return v.item() if hasattr(v, "item") else v


# ---- writing -------------------------------------------------------------------------------------
def save_net_servable(
    path: str | Path,
    bundle_path: str | Path,
    *,
    name: str | None = None,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Package a model bundle as a servable (kind "net")."""
    import shutil

    from .bundle import read_bundle

    contents = read_bundle(bundle_path)
    meta = _meta(
        "net",
        name,
        contents.target.task,
        contents.target.classes,
        input_schema_from_preprocessor(contents.preprocessor),
        metrics,
        {"bundle": "bundle"},
    )
    with atomic_dir(path) as tmp:
        shutil.copytree(bundle_path, tmp / "bundle")
        (tmp / SERVABLE_FILE).write_text(json.dumps(meta, indent=2))
    return Path(path)


def save_pipeline_servable(
    path: str | Path,
    *,
    transformer: Any,
    estimator: Any,
    task: str,
    classes: list[Any] | None,
    input_schema: list[dict[str, Any]],
    name: str | None = None,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Package a fitted ``EmbeddingTransformer`` and a fitted downstream estimator (kind "pipeline").

    The estimator must have been fitted on ``transformer.transform(X)`` with the target encoded as
    class ids ``0..k-1`` (classifiers) or values (regression).
    """
    details: dict[str, Any] = {
        "transformer": {
            "params": _transformer_params(transformer),
            "feature_names_in": [str(c) for c in transformer.feature_names_in_],
        },
    }
    meta = ("pipeline", name, task, classes, input_schema, metrics)
    return _write_with_estimator(path, meta, details, estimator, transformer.tables_)


def save_baseline_servable(
    path: str | Path,
    *,
    encoder: Any,
    estimator: Any,
    task: str,
    classes: list[Any] | None,
    input_schema: list[dict[str, Any]],
    name: str | None = None,
    metrics: dict[str, float] | None = None,
    tables: Any = None,
) -> Path:
    """Package a fitted scikit-learn encoder of the raw columns and the estimator fitted on its output
    (kind "baseline"). The encoder takes a DataFrame of the ``input_schema`` columns; the estimator was
    fitted with the target as class ids ``0..k-1`` (classifiers) or values (regression). ``tables``
    (optional): embedding tables served alongside for look-ups (the baseline does not use them)."""
    import skops.io as sio

    details: dict[str, Any] = {
        "feature_columns": [c["name"] for c in input_schema],
        "encoder": {"format": "skops", "file": "encoder.skops"},
    }
    meta = ("baseline", name, task, classes, input_schema, metrics)
    return _write_with_estimator(
        path, meta, details, estimator, tables, lambda tmp: sio.dump(encoder, tmp / "encoder.skops")
    )


def _write_with_estimator(
    path: str | Path,
    meta: tuple[str, str | None, str, list[Any] | None, list[dict[str, Any]], dict[str, float] | None],
    details: dict[str, Any],
    estimator: Any,
    tables: Any,
    write_more: Any = None,
) -> Path:
    """Write a servable of kind "pipeline" or "baseline" atomically: the tables (when any), what
    ``write_more(folder)`` adds, the estimator, then ``servable.json`` from ``meta`` (kind, name, task,
    classes, input schema, metrics) and ``details``."""
    from .tables import write_tables

    details = {**details, "estimator_class": f"{type(estimator).__module__}.{type(estimator).__name__}"}
    with atomic_dir(path) as tmp:
        if tables is not None and len(tables):
            write_tables(tmp / "tables", tables, source=getattr(tables, "source", None))
        if write_more is not None:
            write_more(tmp)
        details["estimator"] = _save_estimator(estimator, tmp)
        (tmp / SERVABLE_FILE).write_text(json.dumps(_meta(*meta, details), indent=2, default=str))
    return Path(path)


def _save_estimator(estimator: Any, folder: Path) -> dict[str, str]:
    """LightGBM as its booster's text model, any other scikit-learn estimator with skops."""
    if type(estimator).__module__.split(".")[0] == "lightgbm":
        booster = estimator.booster_ if hasattr(estimator, "booster_") else estimator
        booster.save_model(str(folder / "estimator.txt"))
        return {"format": "lightgbm", "file": "estimator.txt"}
    import skops.io as sio

    sio.dump(estimator, folder / "estimator.skops")
    return {"format": "skops", "file": "estimator.skops"}


def _load_skops(file: Path) -> Any:
    """A skops file whose every type is on the allow-list (else FormatError, before anything loads)."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=file)
    refused = [t for t in untrusted if t not in TRUSTED_SKOPS_TYPES]
    if refused:
        raise FormatError(f"{file} contains types outside the allow-list: {refused}")
    return sio.load(file, trusted=untrusted)


def _load_estimator(path: Path, est: dict[str, Any], task: str) -> Any:
    """``f(x) -> raw`` of a saved estimator (:func:`embedkit.inference.estimator_function`)."""
    from .inference import estimator_function

    if est["format"] == "lightgbm":
        import lightgbm as lgb

        return estimator_function(lgb.Booster(model_file=str(path / est["file"])), task)
    if est["format"] == "skops":
        return estimator_function(_load_skops(path / est["file"]), task)
    raise FormatError(f"{path}: unknown estimator format {est['format']!r}")


def _transformer_params(transformer: Any) -> dict[str, Any]:
    params = {k: v for k, v in transformer.get_params(deep=False).items() if k != "tables"}
    return json.loads(json.dumps(params, default=str))


def _meta(
    kind: str,
    name: str | None,
    task: str,
    classes: list[Any] | None,
    schema: list[dict[str, Any]],
    metrics: dict[str, float] | None,
    details: dict[str, Any],
) -> dict[str, Any]:
    import datetime as _dt

    return {
        "format_version": SERVABLE_FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "task": task,
        "classes": classes,
        "input_schema": schema,
        "metrics": metrics or {},
        "embedkit_version": __version__,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(),
        **details,
    }


# ---- loading -------------------------------------------------------------------------------------
def load_servable(path: str | Path) -> Servable:
    """Load a servable directory written by :func:`save_net_servable`, :func:`save_pipeline_servable` or
    :func:`save_baseline_servable`."""
    path = Path(path)
    f = path / SERVABLE_FILE
    meta = read_json_file(f, f"{path} is not an embedkit servable model: {SERVABLE_FILE} is missing")
    if meta.get("format_version") != SERVABLE_FORMAT_VERSION:
        raise FormatError(
            f"{f} has format_version {meta.get('format_version')!r}; this embedkit reads "
            f"{SERVABLE_FORMAT_VERSION}"
        )
    if meta["kind"] == "net":
        return _load_net(path, meta)
    if meta["kind"] == "pipeline":
        return _load_pipeline(path, meta)
    if meta["kind"] == "baseline":
        return _load_baseline(path, meta)
    raise FormatError(f"{f}: unknown servable kind {meta['kind']!r}")


def _load_net(path: Path, meta: dict[str, Any]) -> Servable:
    from .bundle import read_bundle
    from .inference import NetForward, NetModel
    from .tables import load_tables

    contents = read_bundle(path / meta["bundle"])
    model = NetModel(contents.preprocessor, NetForward.from_bundle(contents))
    return Servable(path, meta, load_tables(contents.tables_path), model)


def _load_pipeline(path: Path, meta: dict[str, Any]) -> Servable:
    from .inference import PipelineModel
    from .tables import load_tables
    from .transformer import EmbeddingTransformer

    tables = load_tables(path / "tables")
    tmeta = meta["transformer"]
    transformer = EmbeddingTransformer(tables=tables, **tmeta["params"])
    empty = pd.DataFrame({c: pd.Series([], dtype=_dtype_for(c, meta)) for c in tmeta["feature_names_in"]})
    transformer.fit(empty)
    model = PipelineModel(transformer, _load_estimator(path, meta["estimator"], meta["task"]))
    return Servable(path, meta, tables, model)


def _load_baseline(path: Path, meta: dict[str, Any]) -> Servable:
    from .inference import BaselineModel
    from .tables import EmbeddingTables, load_tables

    encoder = _load_skops(path / meta["encoder"]["file"])
    estimator = _load_estimator(path, meta["estimator"], meta["task"])
    tables = load_tables(path / "tables") if (path / "tables").exists() else EmbeddingTables([])
    model = BaselineModel(encoder, estimator, meta["feature_columns"], meta["input_schema"], tables)
    return Servable(path, meta, tables, model)


def _dtype_for(column: str, meta: dict[str, Any]) -> str:
    for c in meta["input_schema"]:
        if c["name"] == column:
            return {
                "string": "str",
                "integer": "int64",
                "boolean": "bool",
                "timestamp": "datetime64[ns]",
                "number": "float64",
            }.get(c["kind"], "object")
    return "float64"
