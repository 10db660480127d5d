"""``Learner``: the short path from a DataFrame to a trained net, a bundle and embedding tables.

It only wires the parts together (preprocessor → tensors → :class:`Trainer`); each part stays usable alone.

Under ``torchrun`` (a process group of more than one process, see :mod:`embedkit.nn.distributed`) every rank
calls the same methods with the same frames: rank 0 fits the preprocessor and the target encoding and runs
the LR finder, the other ranks receive the results, and :meth:`Learner.fit` trains with DDP. Saving is left
to the caller: do it on rank 0 only (``if distributed.is_main(): learn.save(...)``).

Example
-------
>>> from embedkit.datasets import flights
>>> from embedkit.nn.learner import Learner
>>> from embedkit.nn.trainer import TrainConfig
>>> ex = flights(n_rows=3000)
>>> learn = Learner.from_frame(ex.train, ex.spec, train_config=TrainConfig(epochs=1, lr=1e-2))
>>> history = learn.fit(ex.train, ex.valid)
>>> sorted(learn.evaluate(ex.valid))
['accuracy', 'auc', 'log_loss']
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ..bundle import save_bundle
from ..evaluation import task_metrics
from ..exceptions import DataError
from ..preprocessing import Preprocessor
from ..spec import FeatureSpec
from ..target import TargetInfo, check_weights
from . import distributed
from .callbacks import Callback, ProgressBar
from .lr_finder import LRFinderResult, lr_find
from .model import NetConfig, TabularNet, auto_dropout, value_keyed_init
from .tensors import TensorData
from .trainer import History, TrainConfig, Trainer

if TYPE_CHECKING:
    from ..predictor import Predictor
    from ..tables import EmbeddingTables


class Learner:
    """A fitted preprocessor, the target encoding, a :class:`TabularNet` and its :class:`Trainer`."""

    def __init__(
        self,
        preprocessor: Preprocessor,
        target: TargetInfo,
        model: TabularNet,
        train_config: TrainConfig | None = None,
        callbacks: list[Callback] | None = None,
    ) -> None:
        self.preprocessor = preprocessor
        self.target = target
        self.model = model
        self.train_config = train_config or TrainConfig()
        self.trainer = Trainer(model, target.task, self.train_config, callbacks)
        self.lr_finder: LRFinderResult | None = None

    @classmethod
    def from_frame(
        cls,
        train: pd.DataFrame,
        spec: FeatureSpec | str,
        *,
        task: str | None = None,
        net_config: NetConfig | None = None,
        train_config: TrainConfig | None = None,
        min_frequency: int = 2,
        callbacks: list[Callback] | None = None,
    ) -> Learner:
        """Fit the preprocessor and the target encoding on ``train`` and build the net.

        ``spec`` is a :class:`FeatureSpec` or just the target column's name (roles then inferred).
        ``min_frequency``: categories seen fewer times in ``train`` share the "unknown" row (the
        default 2 keeps values seen once from getting a vector of their own, which the net would only
        use to memorise their rows' targets).
        """
        if isinstance(spec, str):
            spec = FeatureSpec(target=spec)
        if spec.target is None:
            raise DataError("the FeatureSpec names no target column; set FeatureSpec(target=...)")
        _require_target(train, spec.target)
        target, pre = _fit_encoders(train, spec, task, min_frequency)
        cfg = NetConfig(**(net_config.to_dict() if net_config else {}))
        cfg.task = target.task
        if target.task == "multiclass":
            cfg.n_classes = target.n_classes
        rate = auto_dropout(len(train))
        cfg.dropout = rate if cfg.dropout is None else cfg.dropout
        cfg.emb_dropout = rate if cfg.emb_dropout is None else cfg.emb_dropout
        unknown = set(cfg.emb_dims) - set(pre.cat_names_)
        if unknown:
            raise DataError(
                f"emb_dims names column(s) {sorted(unknown)} that are not categorical inputs; "
                f"categorical inputs are {pre.cat_names_}"
            )
        seed = (train_config or TrainConfig()).seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the initial weights depend on the seed only
            model = TabularNet(pre.cat_names_, pre.cardinalities, len(pre.cont_names_), cfg)
        if cfg.emb_init_seed is not None:
            _init_by_value(model, pre, cfg.emb_init_seed, cfg.emb_init_std)
        return cls(pre, target, model, train_config, callbacks)

    # ---- data ----------------------------------------------------------------------------------
    def tensors(self, df: pd.DataFrame, sample_weight: Any = None) -> TensorData:
        """Inputs (and the target, when the frame has it) as tensors."""
        codes, cont = self.preprocessor.transform(df)
        y = None
        if self.target.name in df.columns:
            y = self.target.encode(df[self.target.name])
        return TensorData.from_numpy(codes, cont, y, check_weights(sample_weight, len(df)))

    # ---- training ------------------------------------------------------------------------------
    def lr_find(self, train: pd.DataFrame, sample_weight: Any = None, **kwargs: Any) -> LRFinderResult:
        """Run the LR finder on ``train`` (weights restored afterwards); keeps and returns the result."""
        _require_target(train, self.target.name)
        data = self.tensors(train, sample_weight)
        self._standardize_target(data)
        self.lr_finder = self._lr_find(lambda: data, **kwargs)
        return self.lr_finder

    def _standardize_target(self, data: TensorData) -> None:
        """Regression: give the net the training target's (weighted) mean and std, once (the first of
        lr_find and fit; a resumed or loaded net keeps its own), see ``NetConfig.y_mean``."""
        cfg = self.model.config
        if self.target.task != "regression" or not cfg.standardize_target or cfg.y_mean is not None:
            return
        assert data.y is not None
        w = None if data.w is None else data.w.cpu().numpy()
        self.model.set_target_scale(*target_moments(data.y.cpu().numpy(), w))

    def _lr_find(self, data: Callable[[], TensorData], **kwargs: Any) -> LRFinderResult:
        """The sweep; under DDP rank 0 runs it alone (its model is not wrapped: no gradient is shared)
        and every rank gets its result, so that every rank trains at the same rate."""
        if not distributed.is_active():
            return lr_find(self.trainer, data(), **kwargs)
        found = distributed.run_on_main(lambda: lr_find(self.trainer, data(), **kwargs).to_dict())
        return LRFinderResult(**found)

    def fit(
        self,
        train: pd.DataFrame,
        valid: pd.DataFrame | None = None,
        *,
        lr: float | None = None,
        sample_weight: Any = None,
        valid_sample_weight: Any = None,
        resume_from: str | Path | None = None,
        lr_find: dict[str, Any] | None = None,
        progress: bool | None = None,
    ) -> History:
        """Train at the peak rate ``lr``, else ``TrainConfig.lr``, else the LR finder's suggestion (a
        sweep of :meth:`lr_find` already run on this learner is reused); ``resume_from``: continue a
        checkpoint's run, at its own rate.

        ``lr_find``: arguments of the LR finder (``start_lr``, ``end_lr``, ``num``, ...); given, the sweep
        runs even when the rate is set, so that its plot can be looked at (``learner.lr_finder``; the
        callbacks' ``on_lr_found`` gets it). ``progress``: a progress bar per epoch and one line per
        epoch on stderr; None shows them when stderr is a terminal; a ProgressBar among the callbacks
        (the pipelines') takes its place, and :func:`fit_net` passes False (scikit-learn style, quiet).
        """
        _require_target(train, self.target.name)
        if valid is not None:
            _require_target(valid, self.target.name)
        data = self.tensors(train, sample_weight)
        vdata = self.tensors(valid, valid_sample_weight) if valid is not None else None
        self._standardize_target(data)  # a resumed run takes its checkpoint's instead (load_checkpoint)
        if resume_from is None:
            lr = self._resolve_lr(lambda: data, lr, lr_find)
        show = _stderr_is_terminal() if progress is None else progress
        cbs = self.trainer.callbacks.callbacks
        bar = None
        if show and distributed.is_main() and not any(isinstance(c, ProgressBar) for c in cbs):
            bar = ProgressBar(print_epochs=True)
            cbs.append(bar)
        try:
            return self.trainer.fit(data, vdata, resume_from=resume_from, lr=lr)
        finally:
            if bar is not None:
                cbs.remove(bar)

    def _resolve_lr(
        self, data: Callable[[], TensorData], lr: float | None, lr_find: dict[str, Any] | None
    ) -> float:
        """The peak rate of a fresh fit, chosen here and nowhere else: ``lr``, else ``TrainConfig.lr``,
        else the LR finder's suggestion (``minimum/10``, with the guards of
        :func:`~embedkit.nn.lr_finder.usable_suggestion`). The sweep runs when the rate is to come from
        it and this learner has none yet, or whenever ``lr_find`` (its arguments) is given; the
        callbacks hear the choice (``on_lr_found``)."""
        rate = lr if lr is not None else self.train_config.lr
        if lr_find is not None or (rate is None and self.lr_finder is None):
            self.lr_finder = self._lr_find(data, **(lr_find or {}))
        finder = self.lr_finder if rate is None or lr_find is not None else None
        if rate is None:
            assert finder is not None
            rate = finder.suggestion
        self.trainer.callbacks.notify("on_lr_found", self.trainer, float(rate), finder)
        return float(rate)

    @property
    def history(self) -> History:
        return self.trainer.history

    # ---- inference -----------------------------------------------------------------------------
    def predictor(self) -> Predictor:
        """The trained net as a torch-free :class:`~embedkit.predictor.Predictor` (a copy of its weights)."""
        from ..inference import NetForward
        from ..predictor import Predictor

        state = {k: v.detach().float().cpu().numpy() for k, v in self.model.state_dict().items()}
        return Predictor(self.preprocessor, self.target, NetForward(self.model.architecture(), state))

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return self.predictor().predict(df)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        return self.predictor().predict_proba(df)

    def evaluate(self, df: pd.DataFrame, sample_weight: Any = None) -> dict[str, float]:
        _require_target(df, self.target.name)
        y = self.target.encode(df[self.target.name])
        pred = self.predictor().predict_raw(df)
        return task_metrics(
            self.target.task, y, pred, check_weights(sample_weight, len(df)), self.target.n_classes
        )

    # ---- artifacts -----------------------------------------------------------------------------
    def embedding_weights(self) -> dict[str, np.ndarray]:
        return {c: w.numpy() for c, w in self.model.embedding_weights().items()}

    def embedding_tables(self, source: str | None = None) -> EmbeddingTables:
        from ..tables import tables_from_preprocessor

        tables = tables_from_preprocessor(self.preprocessor, self.embedding_weights())
        tables.source = source
        return tables

    def export_tables(self, path: str | Path, source: str | None = None) -> Path:
        from ..tables import write_tables

        return write_tables(path, self.embedding_tables(), source=source)

    def save(
        self,
        path: str | Path,
        metrics: dict[str, float] | None = None,
        extra: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> Path:
        """Write the model bundle (JSON + safetensors + embedding tables)."""
        return save_bundle(
            path,
            preprocessor=self.preprocessor,
            target=self.target,
            model=self.model,
            train_config=self.train_config.to_dict(),
            metrics=metrics,
            history=self.history.to_dict(),
            extra=extra,
            source=source,
        )


def _fit_encoders(
    train: pd.DataFrame, spec: FeatureSpec, task: str | None, min_frequency: int
) -> tuple[TargetInfo, Preprocessor]:
    """The target encoding and the preprocessor, fitted on ``train``.

    Under DDP rank 0 fits them and the other ranks rebuild them from its state (the same JSON the bundle
    stores), so that every rank encodes the data with exactly the same vocabularies and statistics.
    """

    def fit() -> tuple[TargetInfo, Preprocessor]:
        target = TargetInfo.fit(train[spec.target], task=task, name=spec.target)
        return target, Preprocessor(spec, min_frequency=min_frequency).fit(train)

    if not distributed.is_active():
        return fit()

    def fit_state() -> dict[str, Any]:
        target, pre = fit()
        return {"target": target.to_dict(), "preprocessor": pre.to_dict()}

    state = distributed.run_on_main(fit_state)
    return TargetInfo.from_dict(state["target"]), Preprocessor.from_dict(state["preprocessor"])


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def target_moments(y: np.ndarray, w: np.ndarray | None = None) -> tuple[list[float], list[float]]:
    """(Weighted) mean and standard deviation of a regression target, per output, for
    ``NetConfig.y_mean/y_std``. A constant target gets a standard deviation of 1."""
    arr = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    weights = None if w is None else np.asarray(w, dtype=np.float64)
    mean = np.average(arr, axis=0, weights=weights)
    std = np.sqrt(np.average((arr - mean) ** 2, axis=0, weights=weights))
    std = np.where(np.isfinite(std) & (std > 1e-12 * np.maximum(1.0, np.abs(mean))), std, 1.0)
    return mean.tolist(), std.tolist()


def _require_target(df: pd.DataFrame, target: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise DataError("the frame is empty (0 rows); pass at least one row")
    if target not in df.columns:
        raise DataError(
            f"target column {target!r} is not in the data; columns are {list(df.columns)[:20]}. "
            "Name the right column in FeatureSpec(target=...)"
        )


def _init_by_value(model: TabularNet, pre: Any, seed: int, std: float) -> None:
    """Set every embedding row to its value-keyed initial vector (``NetConfig.emb_init_seed``)."""
    for name, emb in zip(pre.cat_names_, model.embeds, strict=True):
        assert isinstance(emb, torch.nn.Embedding)
        w = value_keyed_init(list(pre.vocabs_[name].index), name, emb.embedding_dim, seed, std)
        with torch.no_grad():
            emb.weight.copy_(torch.from_numpy(w))


#: rows a table needs before ``fit_net`` holds out a validation slice (fewer: it trains on all of them)
MIN_ROWS_FOR_VALID = 20


def target_column(frame: pd.DataFrame) -> str:
    """The name under which a target passed as ``y`` joins the features: ``"y"``, unless a feature
    already has that name (error messages then say ``y``, as scikit-learn's do)."""
    name = "y"
    while name in frame.columns:
        name = f"_{name}"
    return name


def fit_net(
    df: pd.DataFrame,
    spec: FeatureSpec | str,
    *,
    valid: pd.DataFrame | None = None,
    task: str | None = None,
    net_config: NetConfig | None = None,
    train_config: TrainConfig | None = None,
    min_frequency: int = 2,
    valid_fraction: float = 0.1,
    sample_weight: Any = None,
    valid_sample_weight: Any = None,
    callbacks: list[Callback] | None = None,
    lr_find: dict[str, Any] | None = None,
    resume_from: str | Path | None = None,
    on_start: Callable[[Learner], None] | None = None,
) -> Learner:
    """Build a net for ``df`` and train it: the one path of the estimators, :func:`fit_tables` and the
    pipelines' train step. Returns its Learner.

    Validation: the rows of ``valid`` when given (``valid_sample_weight`` their weights), else
    ``valid_fraction`` of the rows of ``df``, held out by a seeded permutation (``train_config.seed``).
    The trainer validates after every epoch and ends with the weights of the best epoch
    (``TrainConfig.restore_best``), which is how a small table stops short of overfitting. Without
    ``valid``, tables of fewer than ``MIN_ROWS_FOR_VALID`` rows, or ``valid_fraction=0``, train on every
    row. The preprocessor and the target encoding are fitted on the training rows only.

    The learning rate is :meth:`Learner.fit`'s: ``train_config.lr``, else the LR finder's suggestion
    (``lr_find``: the finder's arguments, and a sweep even when the rate is set; its result is in
    ``learner.lr_finder`` and reaches the callbacks' ``on_lr_found``). ``resume_from``: a checkpoint
    whose run continues (no sweep then). ``on_start(learner)`` is called once the net is built, before
    the sweep and training (the pipelines log the resolved config there). Training is quiet: progress
    comes from ``callbacks`` (a :class:`~embedkit.nn.callbacks.ProgressBar`).
    """
    cfg = train_config or TrainConfig()
    if valid is not None:
        train, train_w, valid_w = df, sample_weight, valid_sample_weight
    else:
        train, valid, train_w, valid_w = _hold_out(df, sample_weight, valid_fraction, cfg.seed)
    learn = Learner.from_frame(
        train,
        spec,
        task=task,
        net_config=net_config,
        train_config=cfg,
        min_frequency=min_frequency,
        callbacks=callbacks,
    )
    if on_start is not None:
        on_start(learn)
    learn.fit(
        train,
        valid,
        sample_weight=train_w,
        valid_sample_weight=valid_w,
        resume_from=resume_from,
        lr_find=lr_find,
        progress=False,
    )
    return learn


def _hold_out(
    df: pd.DataFrame, sample_weight: Any, valid_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame | None, np.ndarray | None, np.ndarray | None]:
    """``fit_net``'s validation slice: (train, valid, their weights); valid None: nothing held out."""
    if not 0 <= valid_fraction < 1:
        raise DataError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
    w = check_weights(sample_weight, len(df))
    n = len(df)
    n_valid = int(round(n * valid_fraction)) if valid_fraction and n >= MIN_ROWS_FOR_VALID else 0
    order = np.random.default_rng(seed).permutation(n)
    tr, va = order[n_valid:], order[:n_valid]
    train = df.iloc[tr].reset_index(drop=True)
    valid = df.iloc[va].reset_index(drop=True) if n_valid else None
    train_w = None if w is None else w[tr]
    valid_w = None if (w is None or not n_valid) else w[va]
    return train, valid, train_w, valid_w


def fit_tables(
    X: pd.DataFrame,
    y: Any,
    *,
    columns: list[str] | None = None,
    sample_weight: Any = None,
    task: str | None = None,
    valid_fraction: float = 0.1,
    epochs: int | None = None,
    random_state: int | None = None,
    device: str = "auto",
    min_frequency: int = 2,
    **net_kwargs: Any,
) -> EmbeddingTables:
    """Train a net on ``X, y`` and return its embedding tables (used by ``EmbeddingTransformer.fit``).

    ``columns`` are embedded (categorical); the other columns of ``X`` are continuous inputs of the net.
    The net is trained by :func:`fit_net` (``valid_fraction`` of the rows held out to keep the best
    epoch). ``net_kwargs`` go to :class:`NetConfig` (``layers``, ``emb_dims``, ``max_emb_dim``,
    ``dropout``, ...) or :class:`TrainConfig` (``lr``, ``batch_size``, ``weight_decay``, ...).
    """
    if not isinstance(X, pd.DataFrame):
        raise DataError(f"fit_tables expects a pandas DataFrame, got {type(X).__name__}")
    df = X.reset_index(drop=True).copy()
    target = target_column(df)
    df[target] = np.asarray(y)
    cols = list(columns) if columns is not None else None
    cont = None if cols is None else [c for c in X.columns if c not in cols]
    spec = FeatureSpec(target=target, categorical=cols, continuous=cont, dates=None if cols is None else [])
    seed = (
        0
        if random_state is None
        else int(np.random.RandomState(random_state).randint(0, 2**31 - 1))
        if not isinstance(random_state, int)
        else random_state
    )
    net_fields = set(NetConfig.__dataclass_fields__)
    train_fields = set(TrainConfig.__dataclass_fields__)
    bad = set(net_kwargs) - net_fields - train_fields
    if bad:
        raise TypeError(
            f"unknown option(s) {sorted(bad)}; NetConfig takes {sorted(net_fields)}, "
            f"TrainConfig takes {sorted(train_fields)}"
        )
    net_cfg = NetConfig(**{k: v for k, v in net_kwargs.items() if k in net_fields})
    tcfg = TrainConfig(
        **{
            k: v for k, v in net_kwargs.items() if k in train_fields and k not in ("epochs", "seed", "device")
        },
        epochs=epochs,
        seed=seed,
        device=device,
    )
    learn = fit_net(
        df,
        spec,
        task=task,
        net_config=net_cfg,
        train_config=tcfg,
        min_frequency=min_frequency,
        valid_fraction=valid_fraction,
        sample_weight=sample_weight,
    )
    return learn.embedding_tables()
