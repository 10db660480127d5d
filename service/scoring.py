"""Scoring ``/predict`` bodies with one loaded model: validate, encode, predict.

Two encoders give the same codes as :meth:`embedkit.preprocessing.Preprocessor.transform`:

- :class:`NetEncoder`, for nets without date inputs: plain dict look-ups per value and one numpy array
  per batch, then the torch module directly. No pandas on the request path, so a 1-row request costs
  tens of microseconds here instead of milliseconds.
- :class:`FrameScorer`, for everything else (downstream-estimator pipelines, nets with date columns):
  the records become a DataFrame for :meth:`embedkit.servable.Servable.predict_raw`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from embedkit.preprocessing import (
    KIND_BOOLEAN,
    KIND_INTEGER,
    KIND_STRING,
    KIND_TIMESTAMP,
    MISSING,
    N_RESERVED,
    UNKNOWN,
    CategoryVocab,
)
from embedkit.servable import Servable

from .fastnet import compile_net
from .schemas import predict_request_type, record_type

Record = dict[str, Any]

_EPOCH = dt.datetime(1970, 1, 1)
#: The datetime64[ns] range pandas computes in (to the day); the marker, just inside pandas' range but
#: below this one, stands for an out-of-range category (no vocabulary holds it).
_MIN_TS, _MAX_TS = dt.datetime(1677, 9, 22), dt.datetime(2262, 4, 10)
_OUT_OF_RANGE = dt.datetime(1677, 9, 21, 0, 12, 44)
_ONE_US = dt.timedelta(microseconds=1)
#: Rows per torch forward pass for very large requests (bounds the activation memory).
FORWARD_BATCH = 65_536
#: Batches up to this many rows go through the numpy copy of the net (single-threaded, it is faster than
#: torch below ~1,000 rows); larger ones through torch.
NUMPY_MAX_ROWS = 1024
#: See :func:`continuous_bounds`.
RANGE_SCALE = 1e6


def continuous_bounds(preprocessor: Any) -> dict[str, tuple[float, float]]:
    """The accepted range of each continuous input: the training mean ± ``RANGE_SCALE`` times the larger of
    its standard deviation, its mean and 1. Beyond it a value is refused (422) rather than scored: a
    million standard deviations away, no prediction means anything, and the net's float32 arithmetic
    would overflow."""
    out = {}
    for name in preprocessor.spec_.continuous or []:
        st = preprocessor.cont_stats_[name]
        half = RANGE_SCALE * max(st.std, abs(st.mean), 1.0)
        out[name] = (st.mean - half, st.mean + half)
    return out


class UnscorableRows(ValueError):
    """The model gave a non-finite prediction: some number is far outside anything seen in training."""

    def __init__(self, rows: list[int]) -> None:
        super().__init__(
            "the model gives no finite prediction for this record: a number in it is too far "
            "outside the training data's range"
        )
        self.rows = rows


class TooManyRows(ValueError):
    def __init__(self, n: int, limit: int) -> None:
        super().__init__(f"{n} records exceed the limit of {limit} per request")
        self.n = n
        self.limit = limit


@dataclass(frozen=True)
class Scores:
    """What ``/predict`` answers, as plain Python values."""

    predictions: list[Any]
    probabilities: list[list[float]] | None
    unknown: dict[str, int]

    @property
    def rows(self) -> int:
        return len(self.predictions)


def naive_utc(v: dt.date) -> dt.datetime:
    """A date or datetime as a naive UTC datetime (what pandas compares against the vocabulary)."""
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).replace(tzinfo=None) if v.tzinfo is not None else v
    return dt.datetime(v.year, v.month, v.day)


def _timestamp_key(v: dt.date) -> int:
    # Nanoseconds since the epoch, as in a datetime64[ns] index; exact integer arithmetic for any year.
    return (naive_utc(v) - _EPOCH) // _ONE_US * 1000


def _lookup(vocab: CategoryVocab) -> dict[Any, int]:
    if vocab.kind == KIND_TIMESTAMP:
        keys: list[Any] = [int(k) for k in vocab.index.asi8]
    elif vocab.kind in (KIND_STRING, KIND_INTEGER, KIND_BOOLEAN):
        keys = list(vocab.values)
    else:
        raise ValueError(f"unknown category kind {vocab.kind!r}")
    return {k: i + N_RESERVED for i, k in enumerate(keys)}


class NetEncoder:
    """Encodes records for a net (kind "net") exactly as its Preprocessor would, without pandas."""

    def __init__(self, predictor: Any) -> None:
        import torch

        from embedkit.nn.model import to_prediction

        pre = predictor.preprocessor
        self._torch = torch
        self._to_prediction = to_prediction
        self.model = predictor.model
        self.task = predictor.task
        self.numpy_net = compile_net(self.model, self.task)
        self.cat = [
            (c, _lookup(pre.vocabs_[c]), pre.vocabs_[c].kind == KIND_TIMESTAMP) for c in pre.cat_names_
        ]
        stats = pre.cont_stats_
        self.cont_names = list(stats)
        self.fill = np.array([stats[c].fill for c in self.cont_names], dtype=np.float64)
        self.mean = np.array([stats[c].mean for c in self.cont_names], dtype=np.float64)
        self.std = np.array([stats[c].std for c in self.cont_names], dtype=np.float64)
        self.na_cols = np.array([j for j, c in enumerate(self.cont_names) if stats[c].has_na], dtype=np.int64)

    @staticmethod
    def supports(servable: Servable) -> bool:
        pred = getattr(servable, "predictor", None)
        return pred is not None and not (pred.preprocessor.spec_.dates or [])

    def encode(self, records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray]:
        n = len(records)
        codes = np.empty((n, len(self.cat)), dtype=np.int64)
        for j, (col, table, is_ts) in enumerate(self.cat):
            if is_ts:
                codes[:, j] = [
                    MISSING if (v := r[col]) is None else table.get(_timestamp_key(v), UNKNOWN)
                    for r in records
                ]
            else:
                codes[:, j] = [MISSING if (v := r[col]) is None else table.get(v, UNKNOWN) for r in records]
        if not self.cont_names:
            return codes, np.empty((n, 0), dtype=np.float32)
        # None becomes NaN in a float array; the validator has already refused NaN and infinities.
        raw = np.array([[r[c] for c in self.cont_names] for r in records], dtype=np.float64).reshape(n, -1)
        isna = np.isnan(raw)
        with np.errstate(over="ignore", invalid="ignore"):  # absurd values overflow: caught after predicting
            cont = ((np.where(isna, self.fill, raw) - self.mean) / self.std).astype(np.float32)
        if len(self.na_cols):
            cont = np.concatenate([cont, isna[:, self.na_cols].astype(np.float32)], axis=1)
        return codes, cont

    def predict_raw(self, codes: np.ndarray, cont: np.ndarray) -> np.ndarray:
        if self.numpy_net is not None and len(codes) <= NUMPY_MAX_ROWS:
            return self.numpy_net.predict(codes, cont)
        torch = self._torch
        outs = []
        with torch.inference_mode():
            for s in range(0, len(codes), FORWARD_BATCH):
                out = self.model(
                    torch.from_numpy(codes[s : s + FORWARD_BATCH]),
                    torch.from_numpy(cont[s : s + FORWARD_BATCH]),
                )
                outs.append(self._to_prediction(self.task, out).numpy())
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def unknown_counts(self, codes: np.ndarray) -> dict[str, int]:
        counts = (codes == UNKNOWN).sum(axis=0).tolist()
        return {col: int(c) for (col, _, _), c in zip(self.cat, counts, strict=True)}


class FrameScorer:
    """Scores records through a DataFrame and :class:`~embedkit.servable.Servable` (any servable kind)."""

    def __init__(self, servable: Servable) -> None:
        self.servable = servable
        self.schema = servable.input_schema

    def frame(self, records: Sequence[Record]) -> Any:
        import pandas as pd

        data: dict[str, Any] = {}
        for col in self.schema:
            name, role, kind = col["name"], col["role"], col["kind"]
            values = [r[name] for r in records]
            if role == "date" or kind == KIND_TIMESTAMP:
                # Outside pandas' nanosecond range: a date is scored as missing, a category as unknown.
                out = None if role == "date" else _OUT_OF_RANGE
                values = [
                    None if v is None else (t if _MIN_TS <= (t := naive_utc(v)) <= _MAX_TS else out)
                    for v in values
                ]
                data[name] = pd.Series(values, dtype="datetime64[ns]")
            elif role == "continuous":
                data[name] = pd.Series(values, dtype="float64")
            elif kind == KIND_INTEGER:
                # Out of int64's range cannot be a training value: keep it unknown, not an overflow.
                out_of_range = np.iinfo(np.int64).min
                data[name] = pd.Series(
                    [v if v is None or abs(v) < 2**62 else out_of_range for v in values], dtype=object
                )
            else:
                data[name] = pd.Series(values, dtype=object)
        return pd.DataFrame(data)

    def score(self, records: Sequence[Record]) -> tuple[np.ndarray, dict[str, int]]:
        df = self.frame(records)
        return self.servable.predict_raw(df), self.servable.unknown_counts(df)


class Scorer:
    """Validates a ``/predict`` body against one model's input schema and scores it."""

    def __init__(self, servable: Servable, *, max_rows: int, extra_columns: str) -> None:
        self.servable = servable
        self.max_rows = max_rows
        self.task = servable.task
        self.classes = servable.classes
        pred = getattr(servable, "predictor", None)
        bounds = continuous_bounds(pred.preprocessor) if pred is not None else None
        self.record_type = record_type(servable.input_schema, extra_columns, bounds)
        self.request_type = predict_request_type(self.record_type, max_rows)
        self._adapter: TypeAdapter[Any] = TypeAdapter(self.request_type)
        self.net = NetEncoder(servable.predictor) if NetEncoder.supports(servable) else None
        self.frame_scorer = FrameScorer(servable)
        self._labels = np.asarray(self.classes, dtype=object) if self.classes else None

    # ---- the request body ------------------------------------------------------------------------
    def parse(self, body: bytes) -> list[Record]:
        """The records of a JSON body; raises ``pydantic.ValidationError`` (or :class:`TooManyRows`)."""
        from pydantic import ValidationError

        try:
            return self._adapter.validate_json(body)["records"]
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                if err["type"] == "too_long" and tuple(err["loc"]) == ("records",):
                    raise TooManyRows(
                        (err.get("ctx") or {}).get("actual_length", -1), self.max_rows
                    ) from None
            raise

    def request_json_schema(self, ref_template: str) -> dict[str, Any]:
        return self._adapter.json_schema(ref_template=ref_template)

    # ---- scoring ---------------------------------------------------------------------------------
    def score(self, records: Sequence[Record]) -> Scores:
        if self.net is not None:
            codes, cont = self.net.encode(records)
            raw = self.net.predict_raw(codes, cont)
            unknown = self.net.unknown_counts(codes)
        else:
            raw, unknown = self.frame_scorer.score(records)
            raw = np.asarray(raw)
        finite = np.isfinite(raw.reshape(len(raw), -1)).all(axis=1)
        if not finite.all():
            raise UnscorableRows(np.flatnonzero(~finite).tolist())
        return self._scores(raw, unknown)

    def score_body(self, body: bytes) -> Scores:
        """``parse`` then ``score``: the whole CPU-bound part of a request, for a worker thread."""
        return self.score(self.parse(body))

    def _scores(self, raw: np.ndarray, unknown: dict[str, int]) -> Scores:
        if self.task == "regression":
            return Scores(raw.tolist(), None, unknown)
        if self.task == "binary":
            p = raw.reshape(-1)
            idx = (p > 0.5).astype(np.int64)
            proba = np.column_stack([1 - p, p])
        else:
            idx = raw.argmax(axis=1)
            proba = raw
        labels = self._labels[idx].tolist() if self._labels is not None else idx.tolist()
        return Scores(labels, proba.tolist(), unknown)


def set_compute_threads(n: int | None) -> None:
    """Threads of torch and of numpy's BLAS for this process (``None``: leave the libraries' defaults)."""
    if n is None:
        return
    import torch

    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        return
    threadpool_limits(limits=n, user_api="blas")
