"""Turning raw model outputs into what users ask for; shared by the Predictor and the servable (no torch)."""

from __future__ import annotations

from typing import Any

import numpy as np


def proba_from_raw(task: str, raw: np.ndarray) -> np.ndarray:
    """Class probabilities ``[n, n_classes]`` from P(class 1) (binary) or probabilities (multiclass)."""
    if task == "regression":
        raise AttributeError("predict_proba is for classifiers; this model does regression")
    return np.column_stack([1 - raw, raw]) if task == "binary" else raw


def class_index(task: str, raw: np.ndarray) -> np.ndarray:
    """The predicted class id of each row (threshold 0.5 for binary, argmax for multiclass)."""
    return (raw > 0.5).astype(np.int64) if task == "binary" else raw.argmax(axis=1)


def labels_of(classes: list[Any] | None, idx: np.ndarray) -> np.ndarray:
    """Class labels of class ids: a numeric array when every label is a number, else an object array."""
    numeric = bool(classes) and all(isinstance(c, int | float | bool | np.number) for c in classes or [])
    return np.asarray(classes)[idx] if numeric else np.asarray(classes, dtype=object)[idx]


class Predictions:
    """``predict`` and ``predict_proba`` from a class's ``predict_raw(X)``, ``task`` and ``classes``."""

    @property
    def task(self) -> str:  # pragma: no cover - the subclass's
        raise NotImplementedError

    @property
    def classes(self) -> list[Any] | None:  # pragma: no cover - the subclass's
        raise NotImplementedError

    def predict_raw(self, X: Any) -> np.ndarray:  # pragma: no cover - the subclass's
        raise NotImplementedError

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[n, n_classes]``, columns in ``classes`` order."""
        return proba_from_raw(self.task, self.predict_raw(X))

    def predict(self, X: Any) -> np.ndarray:
        """Class labels for classifiers, values for regression."""
        raw = self.predict_raw(X)
        if self.task == "regression":
            return raw
        return labels_of(self.classes, class_index(self.task, raw))
