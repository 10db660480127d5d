"""The one inference path, torch-free: records or frames -> model input arrays -> prediction.

Everything that can be decided when a model loads is decided there: the value -> code tables (the
preprocessor's and the embedding tables' own, :meth:`~embedkit.preprocessing.CategoryVocab.code_table`),
the net's weight matrices laid out for the matmul, the downstream estimator unwrapped to a function of a
numpy array. A request is then a few array operations:

- a net (servable kind "net"): :meth:`Preprocessor.encode_records` (or ``transform`` for a frame) ->
  :class:`NetForward` (the embedding gather, the continuous batch norm, Linear/ReLU/BatchNorm blocks, the
  head and the output map, in numpy);
- embeddings -> an estimator (kind "pipeline"): the embedding tables' codes -> :func:`gather_embeddings`
  (the :class:`~embedkit.transformer.EmbeddingTransformer`'s output layout) -> the estimator on the array;
- a baseline (kind "baseline": a scikit-learn encoder of the raw columns, then an estimator): a small
  typed frame (:func:`records_frame`) through the encoder, then the estimator.

:class:`~embedkit.predictor.Predictor`, :mod:`embedkit.servable` (and through it the MLflow pyfunc model and
``embedkit score``) and the HTTP service all predict through this module. ``tests/test_inference.py``
holds it equal to ``Preprocessor.transform`` + the torch net and to ``EmbeddingTransformer.transform``.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .exceptions import DataError, FormatError
from .preprocessing import KIND_INTEGER, KIND_TIMESTAMP, UNKNOWN, Preprocessor, naive_utc

Record = Mapping[str, Any]
#: Rows per forward pass (bounds the activation memory of large batches).
FORWARD_BATCH = 65_536
#: Batch-norm epsilon of ``torch.nn.BatchNorm1d`` (the net's layers use the default).
BN_EPS = 1e-5


# ---- the net's forward pass ------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32, copy=False)


@dataclass(frozen=True)
class _Affine:
    """Eval-mode batch norm folded into ``x * scale + shift``."""

    scale: np.ndarray
    shift: np.ndarray

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray], prefix: str) -> _Affine:
        var = state[f"{prefix}.running_var"].astype(np.float64)
        mean = state[f"{prefix}.running_mean"].astype(np.float64)
        weight = state.get(f"{prefix}.weight")
        bias = state.get(f"{prefix}.bias")
        w = weight.astype(np.float64) if weight is not None else np.ones_like(var)
        b = bias.astype(np.float64) if bias is not None else np.zeros_like(var)
        scale = w / np.sqrt(var + BN_EPS)
        return cls(scale.astype(np.float32), (b - mean * scale).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x *= self.scale
        x += self.shift
        return x


@dataclass(frozen=True)
class _Linear:
    wt: np.ndarray  # [in, out], C-contiguous: x @ wt
    b: np.ndarray | None

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray], prefix: str) -> _Linear:
        b = state.get(f"{prefix}.bias")
        return cls(
            np.ascontiguousarray(state[f"{prefix}.weight"].astype(np.float32).T),
            None if b is None else b.astype(np.float32),
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.wt
        if self.b is not None:
            y += self.b
        return y


def _relu(x: np.ndarray) -> np.ndarray:
    np.maximum(x, 0, out=x)
    return x


class NetForward:
    """A trained :class:`~embedkit.nn.model.TabularNet`'s inference in numpy (float32, eval mode).

    Built from the bundle's architecture (``manifest.json``) and its weights (``model.safetensors``, read
    with ``safetensors.numpy``): ``predict(codes, cont)`` gives what ``to_prediction(task, net(codes,
    cont))`` gives in torch: P(class 1) for binary, class probabilities for multiclass, values for
    regression.
    """

    def __init__(self, architecture: Mapping[str, Any], state: Mapping[str, np.ndarray]) -> None:
        cfg = architecture["config"]
        self.task = str(cfg["task"])
        self.cat_names = list(architecture["cat_names"])
        self.n_cont = int(architecture["n_cont"])
        try:
            self.tables = [
                np.ascontiguousarray(state[f"embeds.{i}.weight"], dtype=np.float32)
                for i in range(len(self.cat_names))
            ]
            self.bn_cont = _Affine.from_state(state, "bn_cont") if "bn_cont.running_mean" in state else None
            self.steps: list[Callable[[np.ndarray], np.ndarray]] = []
            k = 0
            for width in cfg["layers"]:
                lin = _Linear.from_state(state, f"body.{k}")
                if lin.wt.shape[1] != int(width):
                    raise FormatError(f"layer body.{k} has {lin.wt.shape[1]} units, the config {width}")
                self.steps += [lin, _relu]
                k += 2  # Linear, ReLU
                if f"body.{k}.running_mean" in state:
                    self.steps.append(_Affine.from_state(state, f"body.{k}"))
                    k += 1
                if f"body.{k}.weight" not in state:
                    k += 1  # a Dropout module (or the end): no weights, the identity at inference
            self.head = _Linear.from_state(state, "head")
        except KeyError as exc:
            raise FormatError(f"the net's weights lack {exc.args[0]!r}; the bundle is damaged") from exc
        y_range = cfg.get("y_range")
        self.y_range = (float(y_range[0]), float(y_range[1])) if y_range is not None else None
        scaled = self.task == "regression" and cfg.get("y_std") is not None and self.y_range is None
        self.y_scale = (
            (np.asarray(cfg["y_std"], dtype=np.float32), np.asarray(cfg["y_mean"], dtype=np.float32))
            if scaled
            else None
        )
        self.out_dim = int(self.head.wt.shape[1])

    @classmethod
    def from_bundle(cls, contents: Any) -> NetForward:
        """From a read bundle (:class:`~embedkit.bundle.BundleContents`)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            state = load_file(str(contents.weights_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise FormatError(f"{contents.weights_path} is damaged: {exc}") from exc
        return cls(contents.architecture, state)

    def _embed_row(self, codes: np.ndarray) -> list[np.ndarray]:
        # one row: integer indexing gives views, ~10x cheaper than fancy indexing
        return [t[c] for t, c in zip(self.tables, codes[0].tolist(), strict=True)]

    def raw(self, codes: np.ndarray, cont: np.ndarray) -> np.ndarray:
        """The head's outputs after ``y_range`` / the target scale (logits for classifiers)."""
        cont_in = np.array(cont, dtype=np.float32)  # a copy: the batch norm works in place
        if self.bn_cont is not None and self.n_cont:
            cont_in = self.bn_cont(cont_in)
        if len(codes) == 1:
            parts = self._embed_row(codes)
            if self.n_cont:
                parts.append(cont_in[0])
            x = np.concatenate(parts)[None, :]
        else:
            cols = [t[codes[:, i]] for i, t in enumerate(self.tables)]
            if self.n_cont:
                cols.append(cont_in)
            x = np.concatenate(cols, axis=1) if len(cols) > 1 else np.array(cols[0])
        # an absurd input overflows to inf/NaN: the caller refuses non-finite outputs
        with np.errstate(over="ignore", invalid="ignore"):
            for step in self.steps:
                x = step(x)
            x = self.head(x)
            if self.y_range is not None:
                lo, hi = self.y_range
                x = _sigmoid(x) * (hi - lo) + lo
            elif self.y_scale is not None:
                x *= self.y_scale[0]
                x += self.y_scale[1]
        return x

    def predict(self, codes: np.ndarray, cont: np.ndarray) -> np.ndarray:
        """P(class 1) ``[n]``, class probabilities ``[n, k]`` or values ``[n]`` (``[n, t]`` for several
        targets); non-finite where an absurd input overflows (the caller decides what to do)."""
        n = len(codes)
        if n == 0:
            shape = (0, self.out_dim) if self.task == "multiclass" or self.out_dim > 1 else (0,)
            return np.empty(shape, dtype=np.float32)
        outs = [
            self._output(self.raw(codes[s : s + FORWARD_BATCH], cont[s : s + FORWARD_BATCH]))
            for s in range(0, n, FORWARD_BATCH)
        ]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _output(self, out: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            if self.task == "binary":
                return _sigmoid(out[:, 0])
            if self.task == "multiclass":
                z = out - out.max(axis=1, keepdims=True)
                np.exp(z, out=z)
                z /= z.sum(axis=1, keepdims=True)
                return z
            return out[:, 0] if out.shape[1] == 1 else out


# ---- embeddings -> a downstream estimator -----------------------------------------------------------
def gather_rows(transformer: Any) -> list[np.ndarray]:
    """Per embedded column of a fitted ``EmbeddingTransformer``, its table's weights in the transformer's
    dtype with one more row of NaN (the code ``n_codes`` that ``handle_unknown="return_nan"`` uses)."""
    dtype = np.dtype(transformer.dtype)
    out = []
    for c in transformer.columns_:
        w = transformer.tables_[c].weights
        out.append(np.vstack([w.astype(dtype), np.full((1, w.shape[1]), np.nan, dtype=dtype)]))
    return out


def gather_embeddings(
    rows: Sequence[np.ndarray], codes: Sequence[np.ndarray], passthrough: np.ndarray
) -> np.ndarray:
    """The transformer's output for rows given as codes: ``rows`` from :func:`gather_rows`, one code array
    per embedded column (after the ``handle_unknown`` rule), the passed-through columns ``[n, p]``."""
    n = len(passthrough)
    if n == 1:
        parts = [m[int(k[0])] for m, k in zip(rows, codes, strict=True)]
        if passthrough.shape[1]:
            parts.append(passthrough[0])
        dtype = rows[0].dtype if rows else passthrough.dtype
        return (np.concatenate(parts) if parts else np.empty(0, dtype=dtype)).astype(dtype, copy=False)[
            None, :
        ]
    blocks = [m[k] for m, k in zip(rows, codes, strict=True)]
    if passthrough.shape[1]:
        blocks.append(passthrough.astype(rows[0].dtype if rows else passthrough.dtype, copy=False))
    if not blocks:
        return np.empty((n, 0), dtype=np.float64)
    return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]


#: What the error of a served pipeline fitted with handle_unknown="error" says (its caller cannot refit it).
_UNKNOWN_REMEDY = "the model was fitted with handle_unknown='error'"


def transformer_codes(transformer: Any, records: Sequence[Record]) -> list[np.ndarray]:
    """Per embedded column, the codes of the records' values under the transformer's ``handle_unknown``
    rule (``"error"`` raises :class:`DataError` naming the column; ``"return_nan"`` points at the NaN row)."""
    out = []
    for c in transformer.columns_:
        table = transformer.tables_[c]
        values = [r[c] for r in records]
        k = table.vocab.encode_values(values).astype(np.intp)
        out.append(table.apply_unknown(k, values, c, transformer.handle_unknown, _UNKNOWN_REMEDY))
    return out


def passthrough_values(transformer: Any, records: Sequence[Record]) -> np.ndarray:
    """The passed-through columns of the records as float64 ``[n, len(passthrough_)]`` (None -> NaN)."""
    names = list(transformer.passthrough_)
    if not names:
        return np.empty((len(records), 0), dtype=np.float64)
    try:
        return np.array(
            [[np.nan if (v := r[c]) is None else float(v) for c in names] for r in records], dtype=np.float64
        ).reshape(len(records), len(names))
    except (TypeError, ValueError) as exc:
        bad = [c for c in names if not all(_is_number(r[c]) for r in records)]
        raise DataError(
            f"column(s) {bad or names} hold a value that is not a number: {exc}", columns=bad
        ) from exc


def _is_number(v: Any) -> bool:
    """Whether a passed-through value converts as :func:`passthrough_values` converts it (None: NaN)."""
    if v is None:
        return True
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


# ---- a downstream estimator as a function of an array -----------------------------------------------
#: Below this many rows LightGBM predicts on one thread (its OpenMP start-up costs more than it saves).
LGBM_SERIAL_ROWS = 1000


class LightGBMRow:
    """One-row predictions of a LightGBM ``Booster`` through its C API's fast path
    (``LGBM_BoosterPredictForMatSingleRowFast``), which the Python package does not wrap: the prediction
    parameters are parsed once here instead of on every call, so a row costs the trees' evaluation and
    little more (``Booster.predict`` spends ~100 µs per call building a predictor). The same C++ predictor
    as ``Booster.predict(x, num_threads=1)``, so the same numbers. One configuration per thread (the C
    side keeps per-configuration buffers)."""

    def __init__(self, booster: Any) -> None:
        from lightgbm.basic import _C_API_DTYPE_FLOAT32, _C_API_DTYPE_FLOAT64, _C_API_PREDICT_NORMAL, _LIB

        self._lib = _LIB
        self._booster = booster  # keeps the handle alive as long as the configurations
        self.n_features = int(booster.num_feature())
        self._dtypes = {
            np.dtype(np.float32): _C_API_DTYPE_FLOAT32,
            np.dtype(np.float64): _C_API_DTYPE_FLOAT64,
        }
        self._predict_type = _C_API_PREDICT_NORMAL
        # what Booster.predict passes by default: the best iteration (-1, or 0 for a loaded model: all trees)
        self._num_iteration = int(getattr(booster, "best_iteration", -1))
        self.n_out = max(1, int(booster.num_model_per_iteration()))
        self._local = threading.local()
        self._configs: list[ctypes.c_void_p] = []
        self._configs_lock = threading.Lock()
        weakref.finalize(self, _free_configs, _LIB, self._configs)

    def _config(self, dtype: np.dtype) -> tuple[ctypes.c_void_p, np.ndarray, ctypes.c_int64]:
        """This thread's configuration for rows of ``dtype`` (float32 or float64), made on first use."""
        states = getattr(self._local, "states", None)
        if states is None:
            states = self._local.states = {}
        state = states.get(dtype)
        if state is None:
            handle = ctypes.c_void_p()
            self._check(
                self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                    self._booster._handle,
                    ctypes.c_int(self._predict_type),
                    ctypes.c_int(0),
                    ctypes.c_int(self._num_iteration),
                    ctypes.c_int(self._dtypes[dtype]),
                    ctypes.c_int32(self.n_features),
                    ctypes.c_char_p(b"num_threads=1"),
                    ctypes.byref(handle),
                )
            )
            with self._configs_lock:
                self._configs.append(handle)
            state = states[dtype] = (handle, np.empty(self.n_out, dtype=np.float64), ctypes.c_int64(0))
        return state

    def _check(self, ret: int) -> None:
        if ret != 0:
            from lightgbm.basic import LightGBMError

            raise LightGBMError(self._lib.LGBM_GetLastError().decode("utf-8"))

    def __call__(self, row: np.ndarray) -> np.ndarray:
        """The prediction of one row ``[n_features]`` (a copy: ``[n_out]``)."""
        dtype = np.dtype(np.float32) if row.dtype == np.float32 else np.dtype(np.float64)
        x = np.ascontiguousarray(row, dtype=dtype)
        handle, out, out_len = self._config(dtype)
        if x.shape != (self.n_features,):
            raise ValueError(f"expected {self.n_features} features, got shape {x.shape}")
        self._check(
            self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                handle,
                x.ctypes.data_as(ctypes.c_void_p),
                ctypes.byref(out_len),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        return out[: out_len.value].copy()


def _free_configs(lib: Any, configs: list[ctypes.c_void_p]) -> None:
    for handle in configs:
        lib.LGBM_FastConfigFree(handle)
    configs.clear()


def estimator_function(
    estimator: Any, task: str, dtype: Any = np.float32
) -> Callable[[np.ndarray], np.ndarray]:
    """``f(x) -> raw``: P(class 1) for binary, class probabilities for multiclass, values for regression.

    ``estimator`` is a LightGBM ``Booster`` (or model) or a fitted scikit-learn estimator. A booster
    predicts one row through :class:`LightGBMRow` and small batches on one thread.
    """
    if type(estimator).__module__.split(".")[0] == "lightgbm":
        booster = estimator.booster_ if hasattr(estimator, "booster_") else estimator
        one_row = LightGBMRow(booster)

        def lgbm(x: np.ndarray) -> np.ndarray:
            if len(x) == 1:
                out = one_row(x[0])
                return out[None, :] if task == "multiclass" else out[:1]
            if len(x) < LGBM_SERIAL_ROWS:
                return np.asarray(booster.predict(x, num_threads=1))
            return np.asarray(booster.predict(x))

        lgbm.one_row = one_row  # type: ignore[attr-defined]
        lgbm.allow_nan = True  # type: ignore[attr-defined]  # a missing value takes the trees' default branch
        lgbm.name = "LightGBM"  # type: ignore[attr-defined]
        return lgbm
    forest = _forest_function(estimator, task)
    if forest is not None:
        return forest
    if task == "regression":
        fn = lambda x: np.asarray(estimator.predict(x))  # noqa: E731
    elif task == "binary":
        fn = lambda x: np.asarray(estimator.predict_proba(x))[:, 1]  # noqa: E731
    else:
        fn = lambda x: np.asarray(estimator.predict_proba(x))  # noqa: E731
    fn.allow_nan = _allows_nan(estimator)  # type: ignore[attr-defined]
    fn.name = type(estimator).__name__  # type: ignore[attr-defined]
    return fn


#: Up to this many rows a forest predicts tree by tree here; above, through scikit-learn (threads).
FOREST_DIRECT_ROWS = 1000


def _forest_function(estimator: Any, task: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """A random forest's (or extra trees') predictions on small batches straight from its trees' ``tree_``
    (the Cython ``Tree.predict``), the arithmetic of ``predict_proba`` / ``predict`` without their
    per-tree input checks and thread pool: a 100-tree forest scores one row in ~0.6 ms instead of ~5 ms,
    with the same numbers. ``None`` for any other estimator (or several outputs)."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    classifier = isinstance(estimator, RandomForestClassifier | ExtraTreesClassifier)
    if not (classifier or isinstance(estimator, RandomForestRegressor | ExtraTreesRegressor)):
        return None
    if getattr(estimator, "n_outputs_", 1) != 1 or (task == "regression") == classifier:
        return None
    trees = [t.tree_ for t in estimator.estimators_]
    n_classes = int(estimator.n_classes_) if classifier else 0

    def by_tree(x: np.ndarray) -> np.ndarray:
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        acc = None
        for tree in trees:
            p = tree.predict(x32)
            if classifier:  # DecisionTreeClassifier.predict_proba: the leaf's class weights, normalised
                p = p[:, :n_classes]
                norm = p.sum(axis=1, keepdims=True)
                norm[norm == 0.0] = 1.0
                p = p / norm
            else:
                p = p[:, 0]
            acc = p if acc is None else acc + p
        assert acc is not None
        return acc / len(trees)

    def forest(x: np.ndarray) -> np.ndarray:
        if len(x) > FOREST_DIRECT_ROWS or not len(trees) or np.isnan(x).any():  # NaN: sklearn's checks decide
            out = estimator.predict_proba(x) if classifier else estimator.predict(x)
        else:
            out = by_tree(x)
        out = np.asarray(out)
        return out[:, 1] if task == "binary" else out

    forest.allow_nan = _allows_nan(estimator)  # type: ignore[attr-defined]
    forest.name = type(estimator).__name__  # type: ignore[attr-defined]
    return forest


def _allows_nan(estimator: Any) -> bool:
    """Whether a scikit-learn estimator takes NaN in its input (its ``allow_nan`` tag)."""
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(estimator).input_tags.allow_nan)
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


# ---- records as a typed frame (for scikit-learn encoders) ---------------------------------------------
_MIN_TS, _MAX_TS = dt.datetime(1677, 9, 22), dt.datetime(2262, 4, 10)
#: Just inside pandas' range but below any vocabulary: stands for an out-of-range category.
_OUT_OF_RANGE = dt.datetime(1677, 9, 21, 0, 12, 44)


def records_frame(input_schema: Sequence[Mapping[str, Any]], records: Sequence[Record]) -> pd.DataFrame:
    """The records as a DataFrame typed by the model's input schema (what a scikit-learn encoder fitted on
    the training frame expects): numbers as float64, timestamps as datetime64[ns] (outside pandas' range a
    date is missing and a category unknown), integers that cannot be int64 as an impossible value."""
    data: dict[str, Any] = {}
    for col in input_schema:
        name, role, kind = col["name"], col["role"], col["kind"]
        values = [r[name] for r in records]
        if role == "date" or kind == KIND_TIMESTAMP:
            out = None if role == "date" else _OUT_OF_RANGE
            values = [
                None
                if v is None
                else (t if _MIN_TS <= (t := naive_utc(v)) <= _MAX_TS else out)
                if isinstance(v, dt.date)
                else v
                for v in values
            ]
            data[name] = pd.Series(values, dtype="datetime64[ns]")
        elif role == "continuous":
            data[name] = pd.Series(values, dtype="float64")
        elif kind == KIND_INTEGER:
            impossible = np.iinfo(np.int64).min
            data[name] = pd.Series(
                [v if not isinstance(v, int) or abs(v) < 2**62 else impossible for v in values], dtype=object
            )
        else:
            data[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(data, index=pd.RangeIndex(len(records)))


# ---- the models ---------------------------------------------------------------------------------------
class NetModel:
    """A net: preprocessor codes -> :class:`NetForward`."""

    kind = "net"

    def __init__(self, preprocessor: Preprocessor, forward: NetForward) -> None:
        self.preprocessor = preprocessor
        self.forward = forward
        self.embedded = list(preprocessor.spec_.categorical or [])
        self._positions = [preprocessor.cat_names_.index(c) for c in self.embedded]

    def inputs_from_records(self, records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray]:
        return self.preprocessor.encode_records(records)

    def inputs_from_frame(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return self.preprocessor.transform(df)

    def predict_raw(self, inputs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return self.forward.predict(*inputs)

    def unknown_counts(self, inputs: tuple[np.ndarray, np.ndarray]) -> dict[str, int]:
        codes = inputs[0]
        return {
            c: int((codes[:, j] == UNKNOWN).sum())
            for c, j in zip(self.embedded, self._positions, strict=True)
        }


class PipelineModel:
    """Embeddings -> an estimator: the transformer's codes and passed-through columns -> its output
    layout -> the estimator on the array."""

    kind = "pipeline"

    def __init__(self, transformer: Any, estimator: Callable[[np.ndarray], np.ndarray]) -> None:
        self.transformer = transformer
        self.estimator = estimator
        self.columns = [str(c) for c in transformer.feature_names_in_]
        self.embedded = list(transformer.columns_)
        self.rows = gather_rows(transformer)

    def inputs_from_records(self, records: Sequence[Record]) -> tuple[list[np.ndarray], np.ndarray]:
        return transformer_codes(self.transformer, records), passthrough_values(self.transformer, records)

    def inputs_from_frame(self, df: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.transformer.transform(df[self.columns]))

    def predict_raw(self, inputs: Any) -> np.ndarray:
        x = inputs if isinstance(inputs, np.ndarray) else gather_embeddings(self.rows, *inputs)
        if not getattr(self.estimator, "allow_nan", True) and np.isnan(x).any():
            columns = self._nan_columns(x)
            raise DataError(
                f"column(s) {columns} hold missing values (or values scored as NaN by "
                f"handle_unknown='return_nan'), which this model's estimator "
                f"({getattr(self.estimator, 'name', 'estimator')}) cannot take; fill them before scoring",
                columns=columns,
            )
        return np.asarray(self.estimator(x))

    def _nan_columns(self, x: np.ndarray) -> list[str]:
        """The input columns whose part of the transformer's output holds a NaN."""
        names = []
        for c in self.embedded:
            names += [c] * self.transformer.tables_[c].dim
        names += list(self.transformer.passthrough_)
        bad = np.isnan(x).any(axis=0)
        return list(dict.fromkeys(n for n, b in zip(names, bad, strict=False) if b))

    def unknown_counts(self, inputs: Any) -> dict[str, int]:
        if isinstance(inputs, np.ndarray):
            raise TypeError("unknown counts need the codes: use inputs_from_records or frame_unknown_counts")
        n_codes = [self.transformer.tables_[c].n_codes for c in self.embedded]
        return {
            c: int(((k == UNKNOWN) | (k == n)).sum())
            for c, k, n in zip(self.embedded, inputs[0], n_codes, strict=True)
        }

    def frame_unknown_counts(self, df: pd.DataFrame) -> dict[str, int]:
        return {c: int((self.transformer.tables_[c].encode(df[c]) == UNKNOWN).sum()) for c in self.embedded}


def _as_category_string(v: Any) -> str:
    """:func:`embedkit.servable.categories_as_strings` for one Python value."""
    if v is None or (isinstance(v, float) and v != v):
        return "<missing>"
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v)


def compile_baseline_encoder(
    encoder: Any, input_schema: Sequence[Mapping[str, Any]]
) -> Callable[[Sequence[Record]], np.ndarray] | None:
    """The baselines' encoder (``ColumnTransformer``: ``categories_as_strings`` then an ``OrdinalEncoder``
    or ``TargetEncoder`` on the categorical columns, the numbers passed through) as dictionary look-ups on
    records: ``f(records) -> array``, what ``encoder.transform(records_frame(records))`` gives, without a
    DataFrame. ``None`` for any other encoder (one-hot, dates, infrequent categories...): the frame path."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder, TargetEncoder

    from .servable import categories_as_strings

    if any(c.get("role") == "date" or c.get("kind") == KIND_TIMESTAMP for c in input_schema):
        return None
    ct = encoder.steps[0][1] if isinstance(encoder, Pipeline) and len(encoder.steps) == 1 else encoder
    if not isinstance(ct, ColumnTransformer) or getattr(ct, "sparse_output_", False):
        return None
    # each block: (columns, per column a value -> vector table and the unknown vector), or numbers
    blocks: list[tuple[str, list[str], list[tuple[dict[str, np.ndarray], np.ndarray]]]] = []
    for name, trans, cols in ct.transformers_:
        if trans == "drop" or (name == "remainder" and trans == "drop"):
            continue
        if not all(isinstance(c, str) for c in cols):
            return None
        # a fitted ColumnTransformer holds "passthrough" as an identity FunctionTransformer
        if trans == "passthrough" or (isinstance(trans, FunctionTransformer) and trans.func is None):
            blocks.append(("num", list(cols), []))
            continue
        steps = trans.steps if isinstance(trans, Pipeline) else []
        if (
            len(steps) != 2
            or not isinstance(steps[0][1], FunctionTransformer)
            or steps[0][1].func is not categories_as_strings
        ):
            return None
        enc = steps[1][1]
        tables = []
        if isinstance(enc, OrdinalEncoder):
            if enc.handle_unknown != "use_encoded_value" or getattr(enc, "infrequent_categories_", None):
                return None
            unknown = np.array([enc.unknown_value], dtype=np.float64)
            for cats in enc.categories_:
                tables.append(({str(c): np.array([float(i)]) for i, c in enumerate(cats.tolist())}, unknown))
        elif isinstance(enc, TargetEncoder):
            k = len(enc.classes_) if enc.target_type_ == "multiclass" else 1
            means = np.atleast_1d(np.asarray(enc.target_mean_, dtype=np.float64))
            for j, cats in enumerate(enc.categories_):
                values = np.column_stack([enc.encodings_[j * k + c] for c in range(k)]).astype(np.float64)
                tables.append(({str(c): values[i] for i, c in enumerate(cats.tolist())}, means))
        else:
            return None
        if not all(all(isinstance(c, str) for c in table) for table, _ in tables):
            return None
        blocks.append(("cat", list(cols), tables))

    def encode(records: Sequence[Record]) -> np.ndarray:
        parts = []
        for kind, cols, tables in blocks:
            if kind == "num":
                parts.append(
                    np.array(
                        [[np.nan if (v := r[c]) is None else float(v) for c in cols] for r in records],
                        dtype=np.float64,
                    ).reshape(len(records), len(cols))
                )
                continue
            for c, (table, unknown) in zip(cols, tables, strict=True):
                parts.append(np.stack([table.get(_as_category_string(r[c]), unknown) for r in records]))
        return np.concatenate(parts, axis=1) if parts else np.empty((len(records), 0))

    return encode


class BaselineModel:
    """Raw columns -> a scikit-learn encoder -> an estimator (one typed frame per batch)."""

    kind = "baseline"

    def __init__(
        self,
        encoder: Any,
        estimator: Callable[[np.ndarray], np.ndarray],
        columns: Sequence[str],
        input_schema: Sequence[Mapping[str, Any]],
        tables: Mapping[str, Any],
    ) -> None:
        self.encoder = encoder
        self.estimator = estimator
        self.columns = list(columns)
        self.input_schema = list(input_schema)
        #: the train run's embedding tables (for look-ups and the unknown counts; not for predicting)
        self.tables = tables
        self.embedded = [c for c in tables if c in self.columns]
        self.compiled = compile_baseline_encoder(encoder, input_schema)

    def inputs_from_records(self, records: Sequence[Record]) -> Any:
        if self.compiled is None:
            return records_frame(self.input_schema, records)
        codes = {c: self.tables[c].vocab.encode_values([r[c] for r in records]) for c in self.embedded}
        return self.compiled(records), codes

    def inputs_from_frame(self, df: pd.DataFrame) -> pd.DataFrame:
        return df

    def predict_raw(self, inputs: Any) -> np.ndarray:
        x = self.encoder.transform(inputs[self.columns]) if isinstance(inputs, pd.DataFrame) else inputs[0]
        return np.asarray(self.estimator(x))

    def unknown_counts(self, inputs: Any) -> dict[str, int]:
        if isinstance(inputs, pd.DataFrame):
            return {c: int((self.tables[c].encode(inputs[c]) == UNKNOWN).sum()) for c in self.embedded}
        return {c: int((k == UNKNOWN).sum()) for c, k in inputs[1].items()}


def set_compute_threads(n: int | None) -> None:
    """Threads of numpy's BLAS and of OpenMP (LightGBM's predictions) for this process; ``None`` leaves
    the libraries' defaults."""
    if n is None:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
