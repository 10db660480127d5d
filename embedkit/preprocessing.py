"""Turn a DataFrame into integer category codes and float32 continuous inputs (pandas/numpy only).

Every categorical column gets a :class:`CategoryVocab` whose code layout is fixed:

- code ``0`` (:data:`MISSING`): the value was missing (NaN/None/NaT);
- code ``1`` (:data:`UNKNOWN`): the value was never seen in training, or is rarer than ``min_frequency``;
- codes ``2..`` : the kept training values, in sorted order.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from .exceptions import DataError, NotFittedError
from .spec import FeatureSpec

MISSING = 0
UNKNOWN = 1
N_RESERVED = 2

KIND_STRING = "string"
KIND_INTEGER = "integer"
KIND_BOOLEAN = "boolean"
KIND_TIMESTAMP = "timestamp"

DATE_CAT_PARTS = (
    "year",
    "month",
    "week",
    "day",
    "dayofweek",
    "dayofyear",
    "is_month_end",
    "is_month_start",
    "is_quarter_end",
    "is_quarter_start",
    "is_year_end",
    "is_year_start",
)


#: The datetime64[ns] range pandas computes in, as nanoseconds since the epoch: a value outside it cannot be a
#: training value (a category gets "unknown", a date is missing), as in :func:`_coerce`.
_NS_MIN, _NS_MAX = int(pd.Timestamp.min.value), int(pd.Timestamp.max.value)
_EPOCH = dt.datetime(1970, 1, 1)
_ONE_US = dt.timedelta(microseconds=1)
#: Returned by a record key function for a value it leaves to the pandas rules (:meth:`CategoryVocab.encode`).
_GENERIC = object()


def naive_utc(v: dt.date) -> dt.datetime:
    """A date or datetime as a naive UTC datetime (what pandas compares timestamps as)."""
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).replace(tzinfo=None) if v.tzinfo is not None else v
    return dt.datetime(v.year, v.month, v.day)


def _ns_since_epoch(v: dt.date) -> int | None:
    """Nanoseconds since the epoch of a plain ``datetime``/``date`` (exact integer arithmetic), or None
    outside pandas' range."""
    ns = (naive_utc(v) - _EPOCH) // _ONE_US * 1000
    return ns if _NS_MIN <= ns <= _NS_MAX else None


def _is_missing_fast(v: Any) -> bool:
    return v is None or (type(v) is float and v != v)


def _record_key(kind: str) -> Callable[[Any], Any]:
    """The vocabulary key of one Python value of its column's natural type (``str`` for strings, ``int``
    for integers, ``bool`` for booleans, ``datetime``/``date`` for timestamps), ``None`` for a value that
    cannot be in the vocabulary, or ``_GENERIC`` for any other type (left to the pandas rules)."""
    if kind == KIND_STRING:
        return lambda v: v if type(v) is str else _GENERIC
    if kind == KIND_INTEGER:
        return lambda v: v if type(v) is int else _GENERIC
    if kind == KIND_BOOLEAN:
        return lambda v: int(v) if type(v) is bool else _GENERIC
    if kind == KIND_TIMESTAMP:
        return lambda v: _ns_since_epoch(v) if type(v) in (dt.datetime, dt.date) else _GENERIC
    raise ValueError(f"unknown category kind {kind!r}")


def _kind_of(s: pd.Series) -> str:
    if ptypes.is_bool_dtype(s):
        return KIND_BOOLEAN
    if isinstance(s.dtype, pd.CategoricalDtype):
        return _kind_of(pd.Series(s.cat.categories))
    if ptypes.is_integer_dtype(s):
        return KIND_INTEGER
    if ptypes.is_datetime64_any_dtype(s):
        return KIND_TIMESTAMP
    if ptypes.is_float_dtype(s):
        vals = s.dropna().to_numpy()
        if len(vals) and np.all(np.isfinite(vals)) and np.all(np.mod(vals, 1) == 0):
            return KIND_INTEGER
        return KIND_STRING
    return KIND_STRING


def _coerce(values: pd.Series, kind: str) -> pd.Series:
    """Bring values to the vocabulary's kind; values that cannot be brought there become an
    impossible marker (never missing), so that they map to UNKNOWN rather than MISSING."""
    if kind == KIND_STRING:
        if ptypes.is_string_dtype(values) and not ptypes.is_object_dtype(values):
            return values
        return values.astype("str")
    if kind == KIND_INTEGER:
        if ptypes.is_integer_dtype(values) and not ptypes.is_bool_dtype(values):
            return values.astype("int64")
        num = pd.to_numeric(values, errors="coerce") if not ptypes.is_numeric_dtype(values) else values
        arr = np.asarray(num, dtype="float64")
        with np.errstate(invalid="ignore"):  # inf: not finite, refused below
            ok = np.isfinite(arr) & (np.mod(arr, 1) == 0) & (np.abs(arr) < 2**62)
        out = np.full(len(arr), np.iinfo(np.int64).min, dtype=np.int64)
        out[ok] = arr[ok].astype(np.int64)
        return pd.Series(out, index=values.index)
    if kind == KIND_BOOLEAN:
        if ptypes.is_bool_dtype(values):
            return values.astype("bool")
        lowered = values.astype("str").str.lower()
        mapped = lowered.map({"true": 1, "false": 0, "1": 1, "0": 0, "1.0": 1, "0.0": 0})
        return pd.Series(np.asarray(mapped.fillna(-1), dtype=np.int64), index=values.index)
    if kind == KIND_TIMESTAMP:
        ts = pd.to_datetime(values, errors="coerce")
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_convert(None)
        return ts.astype("datetime64[ns]")
    raise ValueError(f"unknown category kind {kind!r}")


@dataclass
class CategoryVocab:
    """The vocabulary of one categorical column (see the module docstring for the code layout)."""

    name: str
    kind: str
    values: list[Any]
    counts: list[int]
    missing_count: int = 0
    unknown_count: int = 0
    _index: pd.Index | None = field(default=None, init=False, repr=False, compare=False)
    _codes: dict[Any, int] | None = field(default=None, init=False, repr=False, compare=False)
    _key: Callable[[Any], Any] | None = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        # the look-up caches are rebuilt on demand (the key function is a closure: not picklable)
        return {**self.__dict__, "_index": None, "_codes": None, "_key": None}

    @property
    def n_codes(self) -> int:
        return len(self.values) + N_RESERVED

    @property
    def index(self) -> pd.Index:
        if self._index is None:
            if self.kind == KIND_TIMESTAMP:
                self._index = pd.DatetimeIndex(pd.to_datetime(self.values)).astype("datetime64[ns]")
            elif self.kind == KIND_INTEGER or self.kind == KIND_BOOLEAN:
                self._index = pd.Index(np.asarray(self.values, dtype=np.int64))
            else:
                self._index = pd.Index(pd.array(self.values, dtype="str"))
        return self._index

    @classmethod
    def fit(cls, name: str, s: pd.Series, min_frequency: int = 1) -> CategoryVocab:
        kind = _kind_of(s)
        missing = int(s.isna().sum())
        vals = _coerce(s.dropna(), kind)
        if kind == KIND_BOOLEAN:
            vals = vals.astype(np.int64)
        vc = vals.value_counts(sort=False)
        keep = vc[vc >= min_frequency]
        unknown = int(vc[vc < min_frequency].sum())
        keep = keep.sort_index()
        if kind == KIND_TIMESTAMP:
            values: list[Any] = [t.isoformat() for t in pd.DatetimeIndex(keep.index)]
        elif kind in (KIND_INTEGER, KIND_BOOLEAN):
            values = [int(v) for v in keep.index]
        else:
            values = [str(v) for v in keep.index]
        if kind == KIND_BOOLEAN:
            values = [bool(v) for v in values]
        return cls(name, kind, values, [int(c) for c in keep.to_numpy()], missing, unknown)

    def encode(self, s: pd.Series) -> np.ndarray:
        """Map values to codes (int32), vectorised. Pandas category codes are never trusted."""
        if isinstance(s.dtype, pd.CategoricalDtype):
            cats = pd.Series(s.cat.categories)
            cat_codes = self.encode(cats)
            raw = s.cat.codes.to_numpy()
            out = np.where(raw < 0, MISSING, cat_codes[np.maximum(raw, 0)]).astype(np.int32)
            return out
        missing = s.isna().to_numpy()
        coerced = _coerce(s, self.kind)
        if self.kind == KIND_BOOLEAN:
            coerced = coerced.astype(np.int64)
        pos = self.index.get_indexer(pd.Index(coerced))
        out = (pos + N_RESERVED).astype(np.int32)
        out[pos < 0] = UNKNOWN
        out[missing] = MISSING
        return out

    def code_table(self) -> dict[Any, int]:
        """Value -> code for the kept values (cached): the key is the value itself for strings and
        integers, ``int(value)`` for booleans, nanoseconds since the epoch for timestamps."""
        if self._codes is None:
            keys = self.index.asi8.tolist() if self.kind == KIND_TIMESTAMP else self.index.tolist()
            self._codes = {k: i + N_RESERVED for i, k in enumerate(keys)}
        return self._codes

    def encode_values(self, values: Sequence[Any]) -> np.ndarray:
        """Codes (int32) of Python values, e.g. one column of JSON records: what :meth:`encode` gives for
        ``pd.Series(values, dtype=object)``, without pandas for the column's natural type (``str``,
        ``int``, ``bool``, ``datetime``/``date``) and for None/NaN; other values go through :meth:`encode`."""
        table = self._codes if self._codes is not None else self.code_table()
        key = self._key
        if key is None:
            key = self._key = _record_key(self.kind)
        out = np.empty(len(values), dtype=np.int32)
        generic: list[int] = []
        for i, v in enumerate(values):
            if _is_missing_fast(v):
                out[i] = MISSING
                continue
            k = key(v)
            if k is _GENERIC:
                generic.append(i)
            else:
                out[i] = UNKNOWN if k is None else table.get(k, UNKNOWN)
        if generic:
            out[generic] = self.encode(pd.Series([values[i] for i in generic], dtype=object))
        return out

    def decode_values(self) -> pd.Series:
        """The kept values in code order (codes 2..), in their original type."""
        if self.kind == KIND_TIMESTAMP:
            return pd.Series(pd.to_datetime(self.values), dtype="datetime64[ns]")
        if self.kind == KIND_INTEGER:
            return pd.Series(self.values, dtype="int64")
        if self.kind == KIND_BOOLEAN:
            return pd.Series(self.values, dtype="bool")
        return pd.Series(self.values, dtype="str")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "values": self.values,
            "counts": self.counts,
            "missing_count": self.missing_count,
            "unknown_count": self.unknown_count,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoryVocab:
        return cls(
            d["name"],
            d["kind"],
            list(d["values"]),
            [int(c) for c in d["counts"]],
            int(d["missing_count"]),
            int(d["unknown_count"]),
        )


def _date_parts(s: pd.Series, name: str) -> tuple[dict[str, pd.Series], pd.Series]:
    """Expand a date column into categorical parts and an elapsed-seconds continuous column."""
    ts = pd.to_datetime(s, errors="coerce")
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert(None)
    dt = ts.dt
    parts: dict[str, pd.Series] = {}
    for p in DATE_CAT_PARTS:
        if p == "week":
            v = dt.isocalendar().week.astype("Int64")
        else:
            v = getattr(dt, {"dayofweek": "day_of_week", "dayofyear": "day_of_year"}.get(p, p))
        if p.startswith("is_"):
            v = v.astype("Int64").where(ts.notna())
        parts[f"{name}_{p}"] = pd.Series(v, index=s.index).astype("Float64").astype("float64")
    elapsed = pd.Series(
        np.where(ts.notna(), ts.astype("datetime64[ns]").astype("int64") / 1e9, np.nan), index=s.index
    )
    return parts, elapsed


def _parts_of(t: dt.datetime) -> tuple[float, ...]:
    """The :data:`DATE_CAT_PARTS` of a naive datetime, as ``_date_parts`` computes them."""
    last = calendar.monthrange(t.year, t.month)[1]
    month_end, month_start = t.day == last, t.day == 1
    return (
        t.year,
        t.month,
        t.isocalendar()[1],
        t.day,
        t.weekday(),
        t.timetuple().tm_yday,
        month_end,
        month_start,
        month_end and t.month % 3 == 0,
        month_start and t.month % 3 == 1,
        t.month == 12 and t.day == 31,
        t.month == 1 and t.day == 1,
    )


_NO_PARTS = (math.nan,) * len(DATE_CAT_PARTS)


def _record_date_parts(values: Sequence[Any], name: str) -> tuple[dict[str, list[Any]], np.ndarray]:
    """:func:`_date_parts` for Python values: plain ``datetime``/``date`` values (missing outside pandas'
    nanosecond range) and None without pandas, anything else through ``_date_parts`` itself."""
    rows: list[tuple[float, ...]] = []
    elapsed = np.empty(len(values), dtype=np.float64)
    generic: list[int] = []
    for i, v in enumerate(values):
        if type(v) in (dt.datetime, dt.date):
            ns = _ns_since_epoch(v)
            # outside pandas' nanosecond range a date is missing
            rows.append(_NO_PARTS if ns is None else _parts_of(naive_utc(v)))
            elapsed[i] = np.nan if ns is None else ns / 1e9
        elif _is_missing_fast(v):
            rows.append(_NO_PARTS)
            elapsed[i] = np.nan
        else:
            rows.append(_NO_PARTS)
            generic.append(i)
    if generic:
        parts, el = _date_parts(pd.Series([values[i] for i in generic], dtype=object), name)
        table = np.column_stack([parts[f"{name}_{p}"].to_numpy() for p in DATE_CAT_PARTS])
        for j, i in enumerate(generic):
            rows[i] = tuple(table[j].tolist())
        elapsed[generic] = el.to_numpy()
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in DATE_CAT_PARTS]
    return {f"{name}_{p}": list(col) for p, col in zip(DATE_CAT_PARTS, columns, strict=True)}, elapsed


def _record_numbers(values: Sequence[Any], col: str) -> np.ndarray:
    """:func:`_numeric` for Python values: plain numbers and None without pandas."""
    try:
        if all(v is None or type(v) in (float, int, bool) for v in values):
            arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
            return np.where(np.isinf(arr), np.nan, arr)
    except OverflowError:  # an int beyond float64: the pandas rules decide
        pass
    return _numeric(pd.Series(list(values), dtype=object), col)


def _check_columns(df: pd.DataFrame, cols: list[str], what: str) -> None:
    _refuse_missing([c for c in cols if c not in df.columns], what)


def _refuse_missing(missing: list[str], what: str) -> None:
    if missing:
        raise DataError(
            f"column(s) {missing} missing from the {what} data; the model was fitted with them. "
            "Add them (a column of missing values is allowed) or refit without them."
        )


def _numeric(s: pd.Series, col: str) -> np.ndarray:
    if ptypes.is_bool_dtype(s):
        return s.astype("float64").to_numpy()
    if not ptypes.is_numeric_dtype(s):
        conv = pd.to_numeric(s, errors="coerce")
        bad = conv.isna() & s.notna()
        if bad.any():
            example = s[bad].iloc[0]
            raise DataError(
                f"continuous column {col!r} has non-numeric values (e.g. {example!r}); convert it with "
                "pd.to_numeric or list the column as categorical"
            )
        s = conv
    arr = np.asarray(s, dtype="float64")
    arr = np.where(np.isinf(arr), np.nan, arr)
    return arr


def _check_not_all_missing(df: pd.DataFrame, spec: FeatureSpec) -> None:
    for c in spec.feature_columns:
        if df[c].isna().all():
            raise DataError(
                f"column {c!r} is entirely missing in the training data; drop it or fill it before fitting"
            )


def _finite(arr: np.ndarray, col: str) -> np.ndarray:
    finite = arr[~np.isnan(arr)]
    if finite.size == 0:
        raise DataError(f"column {col!r} has no finite values in the training data; drop it or fill it")
    return finite


def check_training_frame(df: pd.DataFrame, spec: FeatureSpec) -> None:
    """The checks :meth:`Preprocessor.fit` makes on its training rows, without fitting: no feature column
    entirely missing, every continuous column numeric with a finite value. ``spec`` must be resolved.
    Raises :class:`DataError` naming the column (the pipelines call this before any MLflow run starts)."""
    _check_not_all_missing(df, spec)
    for col in spec.continuous or []:
        _finite(_numeric(df[col], col), col)


@dataclass
class ContinuousStats:
    fill: float
    mean: float
    std: float
    has_na: bool

    def to_dict(self) -> dict[str, Any]:
        return {"fill": self.fill, "mean": self.mean, "std": self.std, "has_na": self.has_na}


class Preprocessor:
    """Fit on training rows; transform any frame into ``(codes int32 [n, n_cat], cont float32 [n, n_cont])``.

    Parameters
    ----------
    spec : FeatureSpec
        Roles of the columns; roles left as ``None`` are inferred at ``fit``.
    min_frequency : int
        Categories seen fewer times than this in training fold into the ``unknown`` row.

    Attributes (after ``fit``)
    --------------------------
    spec_ : resolved FeatureSpec
    vocabs_ : dict of column name to :class:`CategoryVocab` (including date parts)
    cat_names_, cont_names_ : names of the output columns, in order
    cont_stats_ : fill value, mean and std per continuous input column
    """

    def __init__(self, spec: FeatureSpec | None = None, min_frequency: int = 1) -> None:
        self.spec = spec or FeatureSpec()
        self.min_frequency = min_frequency

    # ---- fitting -------------------------------------------------------------------------------
    def fit(self, df: pd.DataFrame) -> Preprocessor:
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
        if len(df) == 0:
            raise DataError("the training frame is empty (0 rows); pass at least one row")
        if self.min_frequency < 1:
            raise DataError(f"min_frequency must be >= 1, got {self.min_frequency}")
        spec = self.spec.resolve(df)
        if not spec.feature_columns:
            raise DataError(
                "no feature columns: list categorical/continuous/dates columns in the FeatureSpec"
            )
        _check_not_all_missing(df, spec)
        self.spec_ = spec
        self.vocabs_: dict[str, CategoryVocab] = {}
        self.cont_stats_: dict[str, ContinuousStats] = {}
        cat_frame, cont_frame = self._expand(df, spec)
        for col, s in cat_frame.items():
            self.vocabs_[col] = CategoryVocab.fit(col, s, self.min_frequency)
        for col, arr in cont_frame.items():
            finite = _finite(arr, col)
            fill = float(np.median(finite))
            filled = np.where(np.isnan(arr), fill, arr)
            std = float(filled.std())
            self.cont_stats_[col] = ContinuousStats(
                fill, float(filled.mean()), std if std > 0 else 1.0, bool(np.isnan(arr).any())
            )
        self._set_names()
        return self

    def _set_names(self) -> None:
        self.cat_names_ = list(self.vocabs_)
        self.cont_names_ = list(self.cont_stats_) + [
            f"{c}_na" for c, st in self.cont_stats_.items() if st.has_na
        ]

    @staticmethod
    def _expand(df: pd.DataFrame, spec: FeatureSpec) -> tuple[dict[str, pd.Series], dict[str, np.ndarray]]:
        cats: dict[str, pd.Series] = {c: df[c] for c in spec.categorical or []}
        conts: dict[str, np.ndarray] = {c: _numeric(df[c], c) for c in spec.continuous or []}
        for d in spec.dates or []:
            parts, elapsed = _date_parts(df[d], d)
            cats.update(parts)
            conts[f"{d}_elapsed"] = elapsed.to_numpy()
        return cats, conts

    # ---- transforming --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "vocabs_"):
            raise NotFittedError("this Preprocessor is not fitted yet; call fit(train_df) first")

    def transform(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
        _check_columns(df, self.spec_.feature_columns, "input")
        cat_frame, cont_frame = self._expand(df, self.spec_)
        codes = np.empty((len(df), len(self.cat_names_)), dtype=np.int32)
        for j, col in enumerate(self.cat_names_):
            codes[:, j] = self.vocabs_[col].encode(cat_frame[col])
        return codes, self._scale(cont_frame, len(df))

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`transform` for records (dicts of input column -> Python value, e.g. parsed JSON): the
        same ``(codes, cont)`` as ``transform`` on a frame of the records' values (object columns), with
        no pandas for plain ``str``/``int``/``float``/``bool``/``datetime``/``date``/None values."""
        self._check_fitted()
        spec = self.spec_
        _refuse_missing([c for c in spec.feature_columns if any(c not in r for r in records)], "input")
        cats: dict[str, Sequence[Any]] = {c: [r[c] for r in records] for c in spec.categorical or []}
        conts = {c: _record_numbers([r[c] for r in records], c) for c in spec.continuous or []}
        for d in spec.dates or []:
            parts, elapsed = _record_date_parts([r[d] for r in records], d)
            cats.update(parts)
            conts[f"{d}_elapsed"] = elapsed
        codes = np.empty((len(records), len(self.cat_names_)), dtype=np.int32)
        for j, col in enumerate(self.cat_names_):
            codes[:, j] = self.vocabs_[col].encode_values(cats[col])
        return codes, self._scale(conts, len(records))

    def _scale(self, raw: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """Continuous inputs (float64 per column, NaN for missing) -> filled, standardised float32 columns,
        then one missing-indicator column per input that had missing values in training."""
        cont = np.empty((n, len(self.cont_names_)), dtype=np.float32)
        na_cols = []
        with np.errstate(
            over="ignore", invalid="ignore"
        ):  # absurd values overflow float32: inf, not an error
            for j, (col, st) in enumerate(self.cont_stats_.items()):
                arr = raw[col]
                isna = np.isnan(arr)
                cont[:, j] = (np.where(isna, st.fill, arr) - st.mean) / st.std
                if st.has_na:
                    na_cols.append(isna)
        for k, isna in enumerate(na_cols):
            cont[:, len(self.cont_stats_) + k] = isna
        return cont

    def fit_transform(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return self.fit(df).transform(df)

    # ---- introspection -------------------------------------------------------------------------
    @property
    def cardinalities(self) -> list[int]:
        self._check_fitted()
        return [self.vocabs_[c].n_codes for c in self.cat_names_]

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "min_frequency": self.min_frequency,
            "spec": self.spec_.to_dict(),
            "vocabs": [v.to_dict() for v in self.vocabs_.values()],
            "continuous": {c: st.to_dict() for c, st in self.cont_stats_.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        spec = FeatureSpec.from_dict(d["spec"])
        p = cls(spec, int(d["min_frequency"]))
        p.spec_ = spec
        p.vocabs_ = {v["name"]: CategoryVocab.from_dict(v) for v in d["vocabs"]}
        p.cont_stats_ = {
            c: ContinuousStats(float(s["fill"]), float(s["mean"]), float(s["std"]), bool(s["has_na"]))
            for c, s in d["continuous"].items()
        }
        for st in p.cont_stats_.values():
            if not all(math.isfinite(x) for x in (st.fill, st.mean, st.std)):
                raise DataError("preprocessor state holds a non-finite statistic; the file is damaged")
        p._set_names()
        return p
