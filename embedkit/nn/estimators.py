"""The net as scikit-learn estimators, so it can sit in the same comparisons as RF, LightGBM and KNN.

``TabularNetClassifier`` and ``TabularNetRegressor`` wrap :class:`embedkit.nn.learner.Learner`; their ``fit`` is
essentially :func:`embedkit.nn.learner.fit_net` once per net.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ..exceptions import DataError
from ..outputs import proba_from_raw
from ..spec import FeatureSpec

#: ``n_nets="auto"``: average this many nets below ``ENSEMBLE_MAX_ROWS`` rows, else train one. On the
#: two ~2,000-row tables of bench/suite.py one net's score varied widely with its seed (movie ratings:
#: log loss 0.987 to 1.062 over 6 seeds); the average of 5 scored 0.932 and RMSE 2.080 (one net: 1.062
#: and 2.091), where a net costs seconds
ENSEMBLE_NETS = 5
ENSEMBLE_MAX_ROWS = 10_000
ENSEMBLE_SEED_STRIDE = 7_919


def _as_frame(X: Any, feature_names: list[str] | None = None) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X.reset_index(drop=True)
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise DataError(f"expected 2-D input (n_samples, n_features), got an array of shape {arr.shape}")
    names = feature_names or [f"x{i}" for i in range(arr.shape[1])]
    return pd.DataFrame(arr, columns=names)


class _TabularNetBase(BaseEstimator):
    """Shared parameters and ``fit`` of :class:`TabularNetClassifier` and :class:`TabularNetRegressor`.

    Every default holds for any table (``bench/suite.py`` measures them on five): ``batch_size`` and
    ``epochs`` of None follow the number of rows (:func:`embedkit.nn.schedule.auto_batch_size` and
    ``auto_epochs``), ``valid_fraction`` of the rows is held out and the best epoch on it kept,
    ``lr=None`` runs the LR finder, a regression target is standardised inside the net, and below
    10,000 rows the predictions are the average of 5 nets (``n_nets="auto"``), each with its own seed
    and held-out slice: on such tables one net's score depends on its seed more than on anything else.
    """

    _task: str | None = None

    def __init__(
        self,
        *,
        categorical: list[str] | None = None,
        continuous: list[str] | None = None,
        layers: tuple[int, ...] = (200, 100),
        dropout: float | None = None,
        emb_dropout: float | None = None,
        emb_dims: dict[str, int] | None = None,
        max_emb_dim: int | None = None,
        emb_init_std: float | None = None,
        y_range: tuple[float, float] | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        weight_decay: float = 0.01,
        valid_fraction: float = 0.1,
        early_stopping_patience: int | None = None,
        min_frequency: int = 2,
        random_state: int | None = None,
        device: str = "auto",
        threads: int | None = None,
        n_nets: int | str = "auto",
    ) -> None:
        self.categorical = categorical
        self.continuous = continuous
        self.layers = layers
        self.dropout = dropout
        self.emb_dropout = emb_dropout
        self.emb_dims = emb_dims
        self.max_emb_dim = max_emb_dim
        self.emb_init_std = emb_init_std
        self.y_range = y_range
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.valid_fraction = valid_fraction
        self.early_stopping_patience = early_stopping_patience
        self.min_frequency = min_frequency
        self.random_state = random_state
        self.device = device
        self.threads = threads
        self.n_nets = n_nets

    def _net_config(self) -> Any:
        from .model import NetConfig

        # None: NetConfig's default (one place for every default of the net)
        given: dict[str, Any] = {
            "dropout": self.dropout,
            "emb_dropout": self.emb_dropout,
            "max_emb_dim": self.max_emb_dim,
            "emb_init_std": self.emb_init_std,
            "y_range": self.y_range,
        }
        return NetConfig(
            layers=list(self.layers),
            emb_dims=dict(self.emb_dims or {}),
            **{k: v for k, v in given.items() if v is not None},
        )

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:
        from .learner import fit_net, target_column
        from .trainer import TrainConfig

        frame = _as_frame(X)
        y_arr = np.asarray(y)
        if len(y_arr) != len(frame):
            raise DataError(f"X has {len(frame)} rows but y has {len(y_arr)}; pass one target per row")
        self._check_target(y_arr)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        df = frame.copy()
        target = target_column(frame)
        df[target] = y_arr
        spec = FeatureSpec(
            target=target,
            categorical=self.categorical,
            continuous=self.continuous,
            dates=None if self.categorical is None and self.continuous is None else [],
        )
        if self.categorical is not None and self.continuous is None:
            spec.continuous = [c for c in frame.columns if c not in self.categorical]
        if self.continuous is not None and self.categorical is None:
            spec.categorical = [c for c in frame.columns if c not in self.continuous]
        seed = 0 if self.random_state is None else int(self.random_state)
        self.n_nets_ = self._resolve_n_nets(len(df))
        task = self._task_for(y_arr)
        self.learners_ = []
        for k in range(self.n_nets_):
            # each net its own seed: its own held-out slice, initial weights, batches and dropout
            cfg = TrainConfig(
                epochs=self.epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                weight_decay=self.weight_decay,
                early_stopping_patience=self.early_stopping_patience,
                seed=seed + ENSEMBLE_SEED_STRIDE * k,
                device=self.device,
                threads=self.threads,
            )
            self.learners_.append(
                fit_net(
                    df,
                    spec,
                    task=task,
                    net_config=self._net_config(),
                    train_config=cfg,
                    min_frequency=self.min_frequency,
                    valid_fraction=self.valid_fraction,
                    sample_weight=sample_weight,
                )
            )
        self.learner_ = self.learners_[0]
        self.history_ = self.learner_.history.to_dict()
        return self

    def _resolve_n_nets(self, n_rows: int) -> int:
        if self.n_nets == "auto":
            return ENSEMBLE_NETS if n_rows < ENSEMBLE_MAX_ROWS else 1
        if isinstance(self.n_nets, bool) or not isinstance(self.n_nets, int | np.integer) or self.n_nets < 1:
            raise ValueError(f"n_nets must be 'auto' or an integer >= 1; got {self.n_nets!r}")
        return int(self.n_nets)

    def _raw(self, frame: pd.DataFrame) -> np.ndarray:
        """The members' raw predictions (P(class 1), class probabilities or values), averaged."""
        return np.mean([learn.predictor().predict_raw(frame) for learn in self.learners_], axis=0)

    def _check_target(self, y: np.ndarray) -> None:
        pass

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
        """Write the fitted net as a model bundle (see :mod:`embedkit.bundle`). A bundle holds one net:
        an estimator that averages several (``n_nets_ > 1``) is refused with what to do instead."""
        check_is_fitted(self, "learner_")
        if self.n_nets_ > 1:
            raise DataError(
                f"this estimator averages {self.n_nets_} nets (n_nets={self.n_nets!r}) and a model bundle "
                "holds one: refit with n_nets=1 to save a bundle, save one member with "
                "estimator.learners_[i].save(path), or persist the whole estimator with pickle or skops"
            )
        return self.learner_.save(path)


class TabularNetClassifier(ClassifierMixin, _TabularNetBase):
    """Entity-embedding net for binary or multi-class classification (softmax head), sklearn-style.

    Attributes
    ----------
    classes_ : ndarray of the class labels
    n_nets_ : how many nets are averaged (``n_nets``; "auto": 5 below 10,000 rows, else 1)
    learners_ : the fitted :class:`embedkit.nn.learner.Learner` of each net (seeds ``random_state + 7919 k``)
    learner_ : the first of them (its net's embedding tables: ``learner_.embedding_tables()``)
    history_ : the first net's per-epoch training and validation metrics

    Example
    -------
    >>> from embedkit.datasets import flights
    >>> ex = flights(n_rows=2000)
    >>> X, y = ex.train.drop(columns="late"), ex.train["late"]
    >>> clf = TabularNetClassifier(categorical=ex.spec.categorical, epochs=1, lr=1e-2).fit(X, y)
    >>> clf.predict_proba(X.head(3)).shape
    (3, 2)
    """

    def _check_target(self, y: np.ndarray) -> None:
        # scikit-learn's rule and message: a float target with non-integral values is continuous
        # ("Unknown label type: continuous ..."): use TabularNetRegressor for it
        check_classification_targets(y)

    def _task_for(self, y: np.ndarray) -> str:
        return "binary" if len(pd.unique(y)) == 2 else "multiclass"

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> TabularNetClassifier:
        super().fit(X, y, sample_weight)
        self.classes_ = np.asarray(self.learner_.target.classes)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        frame = self._frame(X)
        return proba_from_raw(self.learner_.target.task, self._raw(frame))

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class TabularNetRegressor(RegressorMixin, _TabularNetBase):
    """Entity-embedding net for regression, sklearn-style (see :class:`TabularNetClassifier`)."""

    _task = "regression"

    def predict(self, X: Any) -> np.ndarray:
        frame = self._frame(X)
        return np.asarray(self._raw(frame), dtype=np.float64)
