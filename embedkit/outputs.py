"""Turning raw model outputs into what users ask for; shared by the Predictor and the servable (no torch)."""

from __future__ import annotations

import numpy as np


def proba_from_raw(task: str, raw: np.ndarray) -> np.ndarray:
    """Class probabilities ``[n, n_classes]`` from P(class 1) (binary) or probabilities (multiclass)."""
    if task == "regression":
        raise AttributeError("predict_proba is for classifiers; this model does regression")
    return np.column_stack([1 - raw, raw]) if task == "binary" else raw


def class_index(task: str, raw: np.ndarray) -> np.ndarray:
    """The predicted class id of each row (threshold 0.5 for binary, argmax for multiclass)."""
    return (raw > 0.5).astype(np.int64) if task == "binary" else raw.argmax(axis=1)
