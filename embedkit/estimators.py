"""The net as scikit-learn estimators, so it can sit in the same comparisons as RF, LightGBM and KNN.

``TabularNetClassifier`` and ``TabularNetRegressor`` wrap :class:`embedkit.learner.Learner`; their ``fit`` is
essentially ``Learner.from_frame(...).fit(...)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .data import check_weights
from .exceptions import DataError
from .spec import FeatureSpec

_TARGET = "__embedkit_target__"


def _as_frame(X: Any, feature_names: list[str] | None = None) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X.reset_index(drop=True)
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise DataError(f"expected 2-D input (n_samples, n_features), got an array of shape {arr.shape}")
    names = feature_names or [f"x{i}" for i in range(arr.shape[1])]
    return pd.DataFrame(arr, columns=names)


class _TabularNetBase(BaseEstimator):
    _task: str | None = None

    def __init__(
        self,
        *,
        categorical: list[str] | None = None,
        continuous: list[str] | None = None,
        layers: tuple[int, ...] = (200, 100),
        dropout: float = 0.01,
        emb_dropout: float = 0.04,
        emb_dims: dict[str, int] | None = None,
        emb_init_std: float = 0.01,
        epochs: int = 5,
        batch_size: int = 1024,
        lr: float | None = None,
        weight_decay: float = 0.01,
        valid_fraction: float = 0.0,
        early_stopping_patience: int | None = None,
        min_frequency: int = 1,
        random_state: int | None = None,
        device: str = "auto",
    ) -> None:
        self.categorical = categorical
        self.continuous = continuous
        self.layers = layers
        self.dropout = dropout
        self.emb_dropout = emb_dropout
        self.emb_dims = emb_dims
        self.emb_init_std = emb_init_std
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.valid_fraction = valid_fraction
        self.early_stopping_patience = early_stopping_patience
        self.min_frequency = min_frequency
        self.random_state = random_state
        self.device = device

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:
        from .learner import Learner
        from .model import NetConfig
        from .trainer import TrainConfig

        frame = _as_frame(X)
        y_arr = np.asarray(y)
        if len(y_arr) != len(frame):
            raise DataError(f"X has {len(frame)} rows but y has {len(y_arr)}; pass one target per row")
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        df = frame.copy()
        df[_TARGET] = y_arr
        spec = FeatureSpec(
            target=_TARGET,
            categorical=self.categorical,
            continuous=self.continuous,
            dates=None if self.categorical is None and self.continuous is None else [],
        )
        if self.categorical is not None and self.continuous is None:
            spec.continuous = [c for c in frame.columns if c not in self.categorical]
        if self.continuous is not None and self.categorical is None:
            spec.categorical = [c for c in frame.columns if c not in self.continuous]
        seed = 0 if self.random_state is None else int(self.random_state)
        net = NetConfig(
            layers=list(self.layers),
            dropout=self.dropout,
            emb_dropout=self.emb_dropout,
            emb_dims=dict(self.emb_dims or {}),
            emb_init_std=self.emb_init_std,
        )
        cfg = TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            early_stopping_patience=self.early_stopping_patience,
            seed=seed,
            device=self.device,
        )
        w = check_weights(sample_weight, len(df))
        n_valid = int(round(len(df) * self.valid_fraction)) if self.valid_fraction else 0
        order = np.random.default_rng(seed).permutation(len(df))
        tr, va = order[n_valid:], order[:n_valid]
        train = df.iloc[tr].reset_index(drop=True)
        valid = df.iloc[va].reset_index(drop=True) if n_valid else None
        self.learner_ = Learner.from_frame(
            train,
            spec,
            task=self._task_for(y_arr),
            net_config=net,
            train_config=cfg,
            min_frequency=self.min_frequency,
        )
        self.learner_.fit(
            train,
            valid,
            sample_weight=None if w is None else w[tr],
            valid_sample_weight=None if (w is None or not n_valid) else w[va],
        )
        self.history_ = self.learner_.history.to_dict()
        return self

    def _task_for(self, y: np.ndarray) -> str | None:
        return self._task

    def _frame(self, X: Any) -> pd.DataFrame:
        check_is_fitted(self, "learner_")
        frame = _as_frame(X, list(self.feature_names_in_) if not isinstance(X, pd.DataFrame) else None)
        if frame.shape[1] != self.n_features_in_ and not isinstance(X, pd.DataFrame):
            raise DataError(
                f"X has {frame.shape[1]} features, but this estimator was fitted with {self.n_features_in_}"
            )
        return frame

    def save(self, path: Any) -> Any:
        """Write the fitted net as a model bundle (see :mod:`embedkit.bundle`)."""
        check_is_fitted(self, "learner_")
        return self.learner_.save(path)


class TabularNetClassifier(ClassifierMixin, _TabularNetBase):
    """Entity-embedding net for binary or multi-class classification (softmax head), sklearn-style.

    Attributes
    ----------
    classes_ : ndarray of the class labels
    learner_ : the fitted :class:`embedkit.learner.Learner`
    history_ : per-epoch training and validation metrics

    Example
    -------
    >>> from embedkit.datasets import flights
    >>> ex = flights(n_rows=2000)
    >>> X, y = ex.train.drop(columns="late"), ex.train["late"]
    >>> clf = TabularNetClassifier(categorical=ex.spec.categorical, epochs=1, lr=1e-2).fit(X, y)
    >>> clf.predict_proba(X.head(3)).shape
    (3, 2)
    """

    def _task_for(self, y: np.ndarray) -> str:
        return "binary" if len(pd.unique(y)) == 2 else "multiclass"

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> TabularNetClassifier:
        super().fit(X, y, sample_weight)
        self.classes_ = np.asarray(self.learner_.target.classes)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        frame = self._frame(X)
        return self.learner_.predict_proba(frame)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class TabularNetRegressor(RegressorMixin, _TabularNetBase):
    """Entity-embedding net for regression, sklearn-style (see :class:`TabularNetClassifier`)."""

    _task = "regression"

    def predict(self, X: Any) -> np.ndarray:
        frame = self._frame(X)
        return np.asarray(self.learner_.predict(frame), dtype=np.float64)
