"""Validation metrics per task (numpy in, floats out). ``MONITOR`` names the metric early stopping watches."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

MONITOR = {"regression": ("rmse", "min"), "binary": ("log_loss", "min"), "multiclass": ("log_loss", "min")}


def task_metrics(
    task: str,
    y_true: np.ndarray,
    pred: np.ndarray,
    sample_weight: np.ndarray | None = None,
    n_classes: int | None = None,
) -> dict[str, float]:
    """RMSE/MAE for regression; AUC, log loss and accuracy for classification."""
    w = sample_weight
    if task == "regression":
        err = pred.reshape(y_true.shape) - y_true
        ww = np.ones(len(err)) if w is None else w
        return {
            "rmse": float(np.sqrt(np.average(err**2, weights=ww, axis=0).mean())),
            "mae": float(np.average(np.abs(err), weights=ww, axis=0).mean()),
        }
    if task == "binary":
        p = np.clip(pred.astype(np.float64), 1e-7, 1 - 1e-7)
        out = {
            "log_loss": float(skm.log_loss(y_true, p, labels=[0, 1], sample_weight=w)),
            "accuracy": float(skm.accuracy_score(y_true, p > 0.5, sample_weight=w)),
        }
        out["auc"] = (
            float(skm.roc_auc_score(y_true, p, sample_weight=w))
            if len(np.unique(y_true)) > 1
            else float("nan")
        )
        return out
    k = n_classes or pred.shape[1]
    p = np.clip(pred.astype(np.float64), 1e-7, 1)
    p = p / p.sum(axis=1, keepdims=True)
    out = {
        "log_loss": float(skm.log_loss(y_true, p, labels=list(range(k)), sample_weight=w)),
        "accuracy": float(skm.accuracy_score(y_true, p.argmax(1), sample_weight=w)),
    }
    present = np.unique(y_true)
    if len(present) == k:
        out["auc"] = float(
            skm.roc_auc_score(y_true, p, multi_class="ovr", labels=list(range(k)), sample_weight=w)
        )
    return out
