"""Scoring ``/predict`` bodies with one loaded model: validate, then :meth:`Servable.score_records`.

The request body is parsed and validated against the model's input schema (pydantic, strict types),
then scored through :mod:`embedkit.inference`: records -> codes and arrays -> the net's numpy forward
pass or the embedding gather and the downstream estimator. No DataFrame on the request path of a net
or an embedding pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from embedkit.servable import Servable

from .schemas import predict_request_type, record_type

Record = dict[str, Any]

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


class Scorer:
    """Validates a ``/predict`` body against one model's input schema and scores it."""

    def __init__(self, servable: Servable, *, max_rows: int, extra_columns: str) -> None:
        self.servable = servable
        self.max_rows = max_rows
        self.task = servable.task
        self.classes = servable.classes
        pre = getattr(servable.model, "preprocessor", None)
        bounds = continuous_bounds(pre) if pre is not None else None
        self.record_type = record_type(servable.input_schema, extra_columns, bounds)
        self.request_type = predict_request_type(self.record_type, max_rows)
        self._adapter: TypeAdapter[Any] = TypeAdapter(self.request_type)
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
        raw, unknown = self.servable.score_records(records)
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
