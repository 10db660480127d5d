"""The target column: its task (regression, binary, multiclass), classes and checks; no torch needed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from .exceptions import DataError


def infer_task(y: pd.Series) -> str:
    """``binary`` for two distinct values, ``multiclass`` for a few non-float labels, else ``regression``."""
    n_unique = y.nunique(dropna=True)
    if ptypes.is_bool_dtype(y) or n_unique <= 2:
        return "binary"
    if ptypes.is_float_dtype(y):
        return "regression"
    if not ptypes.is_numeric_dtype(y) or n_unique <= 50:
        return "multiclass"
    return "regression"


@dataclass
class TargetInfo:
    """How the target was encoded: the task and, for classifiers, the class labels (index = class id)."""

    name: str
    task: str
    classes: list[Any] | None = None

    @classmethod
    def fit(cls, y: pd.Series, task: str | None = None, name: str | None = None) -> TargetInfo:
        name = str(name if name is not None else (y.name if y.name is not None else "target"))
        check_target(y, name)
        task = task or infer_task(y)
        if task == "regression":
            if not ptypes.is_numeric_dtype(y) or ptypes.is_bool_dtype(y):
                raise DataError(
                    f"target {name!r} must be numeric for regression (got {y.dtype}); "
                    "convert it or use task='binary'/'multiclass'"
                )
            return cls(name, task)
        classes = sorted(pd.unique(y.dropna()).tolist(), key=lambda v: (str(type(v)), v))
        classes = [c.item() if hasattr(c, "item") else c for c in classes]
        if task == "binary" and len(classes) != 2:
            raise DataError(
                f"target {name!r} has {len(classes)} distinct values; binary needs exactly 2 "
                "(use task='multiclass' or 'regression')"
            )
        if task == "multiclass" and len(classes) < 2:
            raise DataError(f"target {name!r} has a single class; a classifier needs at least 2")
        return cls(name, task, classes)

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0

    def encode(self, y: pd.Series) -> np.ndarray:
        check_target(y, self.name)
        if self.task == "regression":
            return np.asarray(y, dtype=np.float32)
        idx = pd.Index(self.classes).get_indexer(pd.Index(y))
        if (idx < 0).any():
            bad = pd.unique(np.asarray(y)[idx < 0])[:5].tolist()
            raise DataError(
                f"target {self.name!r} has values {bad} not among the training classes {self.classes[:10]}"  # type: ignore
            )
        return idx.astype(np.float32 if self.task == "binary" else np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "classes": self.classes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetInfo:
        return cls(d["name"], d["task"], d.get("classes"))


def check_target(y: pd.Series, name: str) -> None:
    if len(y) == 0:
        raise DataError(f"target {name!r} is empty; pass at least one row")
    n_na = int(pd.isna(y).sum())
    if n_na:
        rows = np.flatnonzero(pd.isna(np.asarray(y, dtype=object)))[:5].tolist()
        raise DataError(
            f"target {name!r} has {n_na} missing value(s) (rows {rows}...); "
            "drop those rows or fill the target before training"
        )
    if ptypes.is_float_dtype(y) and not np.isfinite(np.asarray(y, dtype=np.float64)).all():
        raise DataError(f"target {name!r} has infinite values; drop or clip them before training")


def check_weights(w: Any, n: int) -> np.ndarray | None:
    if w is None:
        return None
    arr = np.asarray(w, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise DataError(f"sample_weight has {arr.shape[0]} values for {n} rows; pass one weight per row")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise DataError("sample_weight must be finite and non-negative")
    if arr.sum() <= 0:
        raise DataError("sample_weight sums to zero; at least one row needs a positive weight")
    return arr.astype(np.float32)
