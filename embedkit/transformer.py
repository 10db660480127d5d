"""EmbeddingTransformer: replace categorical columns by their learned vectors, inside scikit-learn.

Transform is a vectorised code look-up (Arrow hash look-ups, see :meth:`EmbeddingTable.encode`) plus a
column-wise gather into one preallocated column-major array, threaded over row ranges. It never
imports torch; only ``fit`` without ``tables`` (which trains a net) does.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pandas.api import types as ptypes
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import validate_data

from .exceptions import DataError, NotFittedError
from .preprocessing import N_RESERVED
from .tables import EmbeddingTable, EmbeddingTables, load_tables

logger = logging.getLogger(__name__)

_HANDLE_UNKNOWN = ("value", "error", "return_nan")
_REMAINDER = ("passthrough", "drop")
#: Rows gathered per block: the block's codes (8 bytes each) stay in the L2 cache across dimensions.
_BLOCK_ROWS = 1 << 16
#: Below this many rows per thread, threading costs more than it saves.
_MIN_ROWS_PER_THREAD = 1 << 15
#: What the error of handle_unknown="error" tells the user to do.
_UNKNOWN_REMEDY = "pass handle_unknown='value' to give them the unknown vector, or 'return_nan' for NaN"


def _resolve_tables(tables: Any) -> EmbeddingTables:
    if isinstance(tables, EmbeddingTables):
        return tables
    if isinstance(tables, str | os.PathLike):
        return load_tables(Path(tables))
    if isinstance(tables, Mapping):
        return EmbeddingTables(tables)
    raise TypeError(
        f"tables must be a path to an embedding tables directory or an EmbeddingTables, "
        f"got {type(tables).__name__}"
    )


def align_table(src: EmbeddingTable, dst: EmbeddingTable, ridge: float = 1e-3) -> EmbeddingTable:
    """``src`` (a net's table of a column) mapped into the coordinates of ``dst`` (another net's table
    of the same column) by an affine map fitted by weighted least squares.

    The map is fitted on the categories in both vocabularies and the two reserved rows, each weighted
    by how often it occurred in ``src``'s training data (the reserved rows by the median count), with a
    small ridge penalty (``ridge`` times the mean diagonal of the normal matrix); then each dimension is
    rescaled to ``dst``'s weighted mean and spread over the same rows (least squares shrinks towards the
    mean where ``src`` predicts ``dst`` poorly). Returns a table with ``src``'s vocabulary and
    ``dst.dim`` columns.
    """
    dst_codes = dst.encode(pd.Series(src.vocab.index))
    shared = np.flatnonzero(dst_codes >= N_RESERVED)
    src_rows = np.r_[0, 1, shared + N_RESERVED]
    dst_rows = np.r_[0, 1, dst_codes[shared]]
    counts = np.asarray(src.vocab.counts, dtype=np.float64)
    reserved_w = float(np.median(counts)) if len(counts) else 1.0
    w = np.r_[reserved_w, reserved_w, counts[shared]]
    a = np.c_[src.weights.astype(np.float64), np.ones(src.n_codes)]
    a_fit, d_fit = a[src_rows], dst.weights[dst_rows].astype(np.float64)
    normal = a_fit.T @ (a_fit * w[:, None])
    normal += ridge * np.trace(normal) / len(normal) * np.eye(len(normal))
    m = np.linalg.solve(normal, a_fit.T @ (d_fit * w[:, None]))
    mapped = a @ m
    # Least squares shrinks towards the mean where src predicts dst poorly (a net trained on less
    # data): give each dimension dst's weighted spread back, so that a downstream model meets the
    # same distribution in training (mapped vectors) as at predict time (dst's vectors).
    w = w / w.sum()
    fitted = mapped[src_rows]
    mu_f, mu_d = w @ fitted, w @ d_fit
    sd_f = np.sqrt(w @ (fitted - mu_f) ** 2)
    sd_d = np.sqrt(w @ (d_fit - mu_d) ** 2)
    scale = np.divide(sd_d, sd_f, out=np.ones_like(sd_d), where=sd_f > 1e-12 * (1 + sd_d))
    return EmbeddingTable(src.vocab, ((mapped - mu_f) * scale + mu_d).astype(np.float32))


#: ``cv="auto"``: cross-fit with this many folds below ``CV_AUTO_MAX_ROWS`` training rows. On the small
#: tables of bench/suite.py (2.5k to 10k rows) in-sample vectors made LightGBM's log loss 1.83 against
#: 1.18 on ordinal codes (a 1,300-level director column), while on the 120k+ row tables cross-fitting
#: cost every downstream model (city population, RMSE: LightGBM 0.961 cross-fitted, 0.935 in-sample),
#: its fold nets' vectors differing from the full net's more than the leak they prevent
CV_AUTO_FOLDS = 5
CV_AUTO_MAX_ROWS = 50_000


class EmbeddingTransformer(TransformerMixin, BaseEstimator):
    """Replace categorical columns by their entity embeddings; pass the other columns through.

    With ``tables`` (a directory written by :func:`embedkit.tables.write_tables`, or an
    :class:`~embedkit.tables.EmbeddingTables`), ``fit`` only checks that ``X`` holds every embedded
    column. Without ``tables``, ``fit(X, y)`` trains a net on ``X, y`` (this needs torch) and keeps its
    tables. Either way ``transform`` is a vectorised code look-up plus a gather and does not need torch.

    Each embedded column ``c`` becomes ``dim`` output columns ``c__emb_0 ... c__emb_{dim-1}``; missing
    values (NaN, None, NaT, pd.NA) get the column's *missing* vector, values outside the vocabulary
    the *unknown* vector (see ``handle_unknown``). The output is a dense float array in column-major
    (Fortran) order: every output column is contiguous, which is what tree learners and pandas want
    (``set_output(transform="pandas")`` wraps it without a copy); call ``np.ascontiguousarray`` for
    row-major.

    With ``tables``, ``fit`` reads only the column names of a DataFrame, so a 0-row frame with the
    right columns is enough (e.g. when restoring a served model).

    Input: a pandas DataFrame (columns are matched by name) or a 2-D array-like, whose columns are then
    named ``x0, x1, ...`` (scikit-learn's convention), so tables for array input must be keyed by those
    names. Passed-through columns must be numeric or boolean; they are cast to ``dtype``.

    Does ``fit_transform`` leak the target? With ``tables`` trained elsewhere it does not (unless those
    tables were trained on the same rows). Without ``tables``, the net is trained on ``X, y``, and
    transforming that same ``X`` gives vectors that have seen each row's target: a downstream model
    fitted on them overfits (as with target encoding). So on a table of fewer than 50,000 rows the
    default ``cv="auto"`` cross-fits with 5 folds (like scikit-learn's ``TargetEncoder``):
    ``fit_transform`` (which ``Pipeline.fit`` calls) trains 5 extra nets on folds and transforms each
    fold with the net that did not see it, while the fitted tables (used by later ``transform`` calls)
    come from a net trained on all rows. From 50,000 rows on, ``"auto"`` trains one net and returns its
    in-sample vectors: there each category has enough rows that the leak is small, and on the suite's
    large tables the fold nets' differences cost the downstream models more than the leak
    (``bench/suite.py``). ``fit(X, y).transform(X)`` always gives the in-sample vectors; ``cv=k`` or
    ``cv=None`` force either behaviour. Two nets trained
    apart embed the same categories in different coordinates (any invertible linear map of a table can
    be undone by the next layer), so each fold's tables are first mapped onto the full net's by a
    count-weighted least-squares affine fit over the categories both know, with each dimension's spread
    matched to the full table's (:func:`align_table`): the
    downstream model then learns on out-of-fold vectors in the coordinates it meets at predict time.
    All these nets start each category at the same vector (``NetConfig.emb_init_seed``, derived from
    ``random_state`` unless ``net_params`` sets it), so whatever of the initial vector survives
    training (with ``emb_init_std=1.0``, a distinct random part per category) is the same in the
    out-of-fold vectors and in the full table.

    Parameters
    ----------
    tables : str, path or EmbeddingTables, default=None
        Trained tables to use. None trains a net in ``fit``.
    columns : list of str, default=None
        The columns to embed. None: every column that has a table (all of them must be in ``X``); when
        training, the net's choice of categorical columns (see :class:`~embedkit.spec.FeatureSpec`).
        When training with ``columns`` given, the numeric and boolean columns of ``X`` that are not
        embedded are the net's continuous inputs; other columns are not used by the net.
    handle_unknown : {"value", "error", "return_nan"}, default="value"
        A value not in a column's vocabulary gets the trained *unknown* vector ("value"), raises a
        :class:`~embedkit.exceptions.DataError` naming the column and up to 5 values ("error"), or gets
        NaN in every dimension ("return_nan").
    remainder : {"passthrough", "drop"}, default="passthrough"
        What happens to the columns that are not embedded.
    dtype : str or numpy dtype, default="float32"
        Floating dtype of the output.
    task : {"binary", "multiclass", "regression"} or None, default=None
        Training only: the task of the net (None infers it from ``y``).
    epochs : int or None, default=None
        Training only: number of epochs; None chooses it from the number of rows
        (:func:`embedkit.nn.schedule.auto_epochs`).
    valid_fraction : float, default=0.1
        Training only: fraction of rows held out for early stopping.
    net_params : dict, default=None
        Training only: further keyword arguments of :func:`embedkit.nn.learner.fit_tables` (widths,
        dropout, learning rate, batch size, ...). ``{"emb_init_std": 1.0}`` keeps a distinct random part
        in every category's vector, which trees can split on. On the flights example
        (``bench/paper_table.py``) that helped a random forest and not LightGBM, and for the forest
        the untrained starting vectors did nearly as well as the trained ones.
    cv : "auto", int, cross-validation splitter or None, default="auto"
        Training only: the number of folds for cross-fitting in ``fit_transform`` (see above). Integer
        folds are shuffled, and stratified for a binary or multi-class ``y``. None: no cross-fitting.
        "auto": 5 folds below 50,000 rows, none from there on.
    n_jobs : int, default=None
        Threads used by ``transform``'s gather. None uses every core (like the OpenMP code of tree
        learners), -1 too, 1 none. Small inputs always use one thread.
    random_state : int, RandomState or None, default=None
        Training only: seeds the net and the cross-fitting folds.
    device : str, default="auto"
        Training only: torch device ("auto" picks CUDA when available).

    Attributes
    ----------
    cv_ : int, splitter or None
        Training only: the cross-fitting folds ``fit_transform`` uses (``cv`` with "auto" resolved).
    tables_ : EmbeddingTables
        The tables used (loaded from ``tables`` or trained in ``fit``).
    columns_ : list of str
        The embedded columns, in output order.
    passthrough_ : list of str
        The columns passed through (empty with ``remainder="drop"``), in input order.
    n_features_in_ : int
        Number of input columns seen in ``fit``.
    feature_names_in_ : ndarray of str
        Input column names, when ``X`` in ``fit`` was a DataFrame with string column names.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from embedkit.preprocessing import CategoryVocab
    >>> from embedkit.tables import EmbeddingTable, EmbeddingTables
    >>> vocab = CategoryVocab.fit("color", pd.Series(["red", "green", "red"]))
    >>> weights = np.arange(vocab.n_codes * 2, dtype="float32").reshape(-1, 2)
    >>> tables = EmbeddingTables([EmbeddingTable(vocab, weights)])
    >>> X = pd.DataFrame({"color": ["green", None, "blue"], "size": [1.0, 2.0, 3.0]})
    >>> et = EmbeddingTransformer(tables).fit(X)
    >>> et.get_feature_names_out().tolist()
    ['color__emb_0', 'color__emb_1', 'size']
    >>> et.transform(X)  # green: its vector; None: the missing vector; blue: the unknown vector
    array([[4., 5., 1.],
           [0., 1., 2.],
           [2., 3., 3.]], dtype=float32)
    """

    def __init__(
        self,
        tables: str | os.PathLike[str] | EmbeddingTables | None = None,
        columns: Sequence[str] | None = None,
        *,
        handle_unknown: str = "value",
        remainder: str = "passthrough",
        dtype: Any = "float32",
        task: str | None = None,
        epochs: int | None = None,
        valid_fraction: float = 0.1,
        net_params: dict[str, Any] | None = None,
        cv: Any = "auto",
        n_jobs: int | None = None,
        random_state: Any = None,
        device: str = "auto",
    ) -> None:
        self.tables = tables
        self.columns = columns
        self.handle_unknown = handle_unknown
        self.remainder = remainder
        self.dtype = dtype
        self.task = task
        self.epochs = epochs
        self.valid_fraction = valid_fraction
        self.net_params = net_params
        self.cv = cv
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.device = device

    # ---- scikit-learn plumbing -----------------------------------------------------------------
    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.target_tags.required = self.tables is None
        tags.non_deterministic = self.tables is None
        with contextlib.suppress(TypeError):  # an invalid dtype is reported by fit, never by get_tags
            tags.transformer_tags.preserves_dtype = [np.dtype(self.dtype).name]
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "tables_")

    def _check_fitted(self) -> None:
        if not hasattr(self, "tables_"):
            raise NotFittedError(
                "this EmbeddingTransformer is not fitted yet; call fit(X) first "
                "(with tables=..., fit only checks X against the tables)"
            )

    def _validate_params(self) -> None:
        if self.handle_unknown not in _HANDLE_UNKNOWN:
            raise ValueError(f"handle_unknown must be one of {_HANDLE_UNKNOWN}; got {self.handle_unknown!r}")
        if self.remainder not in _REMAINDER:
            raise ValueError(f"remainder must be one of {_REMAINDER}; got {self.remainder!r}")
        try:
            dt = np.dtype(self.dtype)
        except TypeError:
            dt = None
        if dt is None or dt.kind != "f":
            raise ValueError(
                f"dtype must be a floating dtype such as 'float32' or 'float64'; got {self.dtype!r}"
            )
        if self.n_jobs is not None and (not isinstance(self.n_jobs, int | np.integer) or self.n_jobs == 0):
            raise ValueError(f"n_jobs must be None or a non-zero integer; got {self.n_jobs!r}")
        if not (self.columns is None or isinstance(self.columns, str)) and not all(
            isinstance(c, str) for c in self.columns
        ):
            raise ValueError(f"columns must be a list of column names (str); got {self.columns!r}")
        if self.tables is None:
            if self.epochs is not None and (not isinstance(self.epochs, int | np.integer) or self.epochs < 1):
                raise ValueError(f"epochs must be None or a positive integer; got {self.epochs!r}")
            if not 0 <= self.valid_fraction < 1:
                raise ValueError(f"valid_fraction must be in [0, 1); got {self.valid_fraction!r}")
            cv = self.cv
            if (
                cv is not None
                and cv != "auto"
                and (isinstance(cv, str) or not hasattr(cv, "split"))  # a str has .split too
                and not (isinstance(cv, int | np.integer) and not isinstance(cv, bool) and cv >= 2)
            ):
                raise ValueError(
                    f"cv must be 'auto', None, an integer >= 2 or a cross-validation splitter; got {cv!r}"
                )
            if self.net_params is not None and not isinstance(self.net_params, Mapping):
                raise ValueError(
                    f"net_params must be a dict of fit_tables arguments; got {self.net_params!r}"
                )

    def _frame(self, X: Any, *, reset: bool) -> pd.DataFrame:
        """Validate X (feature names and count) and return it as a DataFrame with the fitted names."""
        if sp.issparse(X):
            raise TypeError(
                "EmbeddingTransformer does not accept sparse input; pass a DataFrame or a dense array"
            )
        if isinstance(X, pd.DataFrame):
            if X.columns.has_duplicates:
                dup = X.columns[X.columns.duplicated()].unique().tolist()
                raise DataError(f"X has duplicated column names {dup[:5]}; rename them")
            validate_data(self, X, reset=reset, skip_check_array=True)
            if X.shape[1] == 0:
                raise ValueError(
                    f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required."
                )
            # With tables, fit only checks the columns: a 0-row frame of the right columns will do.
            if reset and X.shape[0] == 0 and self.tables is None:
                raise ValueError(
                    f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required."
                )
            if reset:
                names = (
                    [str(c) for c in X.columns]
                    if hasattr(self, "feature_names_in_")
                    else [f"x{i}" for i in range(X.shape[1])]
                )
                self._input_names_ = names
            names = self._input_names_
            return X if list(X.columns) == names else X.set_axis(names, axis=1)
        arr = validate_data(self, X, reset=reset, dtype=None, ensure_all_finite=False)
        if reset:
            self._input_names_ = [f"x{i}" for i in range(arr.shape[1])]
        return pd.DataFrame(arr, columns=self._input_names_, copy=False)

    # ---- fitting -------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> EmbeddingTransformer:
        """Check ``X`` against ``tables``, or (without ``tables``) train a net on ``X, y``.

        ``sample_weight`` is used by training only.
        """
        self._fit(X, y, sample_weight)
        return self

    def _fit(self, X: Any, y: Any, sample_weight: Any) -> pd.DataFrame:
        self._validate_params()
        frame = self._frame(X, reset=True)
        sample_weight = _check_sample_weight(sample_weight, len(frame))
        trained = self.tables is None
        if trained:
            if y is None:
                raise DataError(
                    "no tables given, so fit trains a net on X and y: pass y (the target), "
                    "or pass tables=<directory or EmbeddingTables> to use trained tables"
                )
            self.cv_ = self._resolve_cv(len(frame), y)
            self._init_seed_ = self._shared_init_seed()
            tables = self._train(
                frame, y, sample_weight, self.random_state, self._columns_param(), self._init_seed_
            )
        else:
            tables = _resolve_tables(self.tables)
        self._set_columns(frame, tables, trained)
        self.tables_ = tables
        return frame

    def _shared_init_seed(self) -> dict[str, Any]:
        """With ``cv``: the value-keyed init seed shared by the full net and the fold nets."""
        if self.cv_ is None or "emb_init_seed" in (self.net_params or {}):
            return {}
        # None: a fixed seed, as fit_tables uses for random_state=None, so the nets' init does not
        # change from fit to fit (the folds do: None shuffles them anew, scikit-learn's convention).
        # The second draw of the stream, so that it differs from the fold split's seed (the first)
        rs = check_random_state(0 if self.random_state is None else self.random_state)
        rs.randint(np.iinfo(np.int32).max)
        return {"emb_init_seed": int(rs.randint(np.iinfo(np.int32).max))}

    def _resolve_cv(self, n_rows: int, y: Any = None) -> Any:
        """The folds of cross-fitting: ``cv``, or for ``"auto"`` 5 below ``CV_AUTO_MAX_ROWS`` rows and
        None (one net, in-sample vectors) from there on, or when the rows are too few for 5 folds
        (under 10 rows, or a class with fewer than 5)."""
        if not isinstance(self.cv, str):
            return self.cv
        if n_rows >= CV_AUTO_MAX_ROWS or n_rows < 2 * CV_AUTO_FOLDS:
            return None
        if y is not None and type_of_target(y) in ("binary", "multiclass"):
            _, counts = np.unique(np.asarray(y), return_counts=True)
            if counts.min() < CV_AUTO_FOLDS:
                return None
        return CV_AUTO_FOLDS

    def _columns_param(self) -> list[str] | None:
        if self.columns is None:
            return None
        return [self.columns] if isinstance(self.columns, str) else list(self.columns)

    def _set_columns(self, frame: pd.DataFrame, tables: EmbeddingTables, trained: bool) -> None:
        names = list(frame.columns)
        requested = self._columns_param()
        if requested is None:
            cols = list(tables)
            if trained:
                absent = [c for c in cols if c not in names]
                if absent:
                    logger.warning(
                        "the net embedded derived columns %s that are not in X; they are not used", absent
                    )
                cols = [c for c in cols if c in names]
        else:
            no_table = [c for c in requested if c not in tables]
            if no_table:
                raise DataError(
                    f"columns={requested}: {no_table} have no embedding table; the tables hold {list(tables)}"
                )
            cols = requested
        absent = [c for c in cols if c not in names]
        if absent:
            where = (
                "X is an array, so its columns are named x0, x1, ..."
                if not hasattr(self, "feature_names_in_")
                else f"X has columns {names[:10]}{' ...' if len(names) > 10 else ''}"
            )
            raise DataError(
                f"column {absent[0]!r} has an embedding table but is not in X ({where}); add it "
                "(a column of missing values is allowed), or choose the embedded columns with columns=[...]"
            )
        if not cols:
            if trained:
                raise DataError(
                    "the net embedded no column of X; name the categorical columns with columns=[...]"
                )
            raise DataError("no column to embed: the tables and X have no column in common")
        pos = {c: i for i, c in enumerate(names)}
        self.columns_ = cols
        self._emb_pos_ = [pos[c] for c in cols]
        embedded = set(cols)
        self._pass_pos_ = (
            [i for i, c in enumerate(names) if c not in embedded] if self.remainder == "passthrough" else []
        )
        self.passthrough_ = [names[i] for i in self._pass_pos_]

    def _train(
        self,
        frame: pd.DataFrame,
        y: Any,
        sample_weight: Any,
        random_state: Any,
        columns: list[str] | None,
        extra: Mapping[str, Any] | None = None,
    ) -> EmbeddingTables:
        from ._compat import require_torch

        try:
            require_torch()
        except ImportError as e:
            raise ImportError(f"{e}; or pass tables=<trained tables>") from e
        from .nn.learner import fit_tables

        kwargs = dict(self.net_params or {})
        kwargs.update(extra or {})
        if columns is not None:
            # the net's other inputs are continuous: keep the numeric columns only
            others = [
                c
                for c in frame.columns
                if c not in columns and (ptypes.is_numeric_dtype(frame[c]) or ptypes.is_bool_dtype(frame[c]))
            ]
            frame = frame[[*columns, *others]]
        tables = fit_tables(
            frame,
            y,
            columns=columns,
            sample_weight=sample_weight,
            task=self.task,
            valid_fraction=self.valid_fraction,
            epochs=self.epochs,
            random_state=random_state,
            device=self.device,
            **kwargs,
        )
        return _resolve_tables(tables)

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None, **fit_params: Any) -> Any:
        """Fit, then transform ``X``; with ``cv`` and no ``tables``, each row's vectors come from a net
        trained without it (cross-fitting, see the class docstring)."""
        if self.tables is not None or y is None:
            return self.fit(X, y, sample_weight=sample_weight).transform(X)
        frame = self._fit(X, y, sample_weight)
        if self.cv_ is None:
            return self.transform(frame)
        return self._cross_fit_transform(frame, y, sample_weight)

    def _cross_fit_transform(self, frame: pd.DataFrame, y: Any, sample_weight: Any) -> np.ndarray:
        rs = check_random_state(self.random_state) if self.random_state is not None else None
        split_seed = int(rs.randint(np.iinfo(np.int32).max)) if rs is not None else None
        cv = self.cv_
        if hasattr(cv, "split"):
            splitter = cv
        elif type_of_target(y) in ("binary", "multiclass"):
            splitter = StratifiedKFold(int(cv), shuffle=True, random_state=split_seed)
        else:
            splitter = KFold(int(cv), shuffle=True, random_state=split_seed)
        y_arr = y if isinstance(y, pd.Series | pd.DataFrame) else np.asarray(y)
        sw = None if sample_weight is None else np.asarray(sample_weight)
        # fold nets get the full net's widths, so that their vectors fill the same output columns
        dims = {c: self.tables_[c].dim for c in self.columns_}
        out = np.empty((len(frame), len(self.get_feature_names_out())), dtype=np.dtype(self.dtype), order="F")
        fold_unknown = "value" if self.handle_unknown == "error" else self.handle_unknown
        for k, (train_idx, test_idx) in enumerate(splitter.split(frame, y)):
            y_train = (
                y_arr.iloc[train_idx] if isinstance(y_arr, pd.Series | pd.DataFrame) else y_arr[train_idx]
            )
            seed = int(rs.randint(np.iinfo(np.int32).max)) if rs is not None else None
            fold_tables = self._train(
                frame.iloc[train_idx],
                y_train,
                None if sw is None else sw[train_idx],
                seed,
                list(self.columns_),
                extra={
                    "emb_dims": {**dict((self.net_params or {}).get("emb_dims") or {}), **dims},
                    **self._init_seed_,
                },
            )
            lacking = [c for c in self.columns_ if c not in fold_tables or fold_tables[c].dim != dims[c]]
            if lacking:
                raise DataError(
                    f"cross-fitting fold {k}: the net trained on the fold has no table, or a table of "
                    f"another width, for {lacking}; set the embedding widths explicitly in net_params"
                )
            aligned = {c: align_table(fold_tables[c], self.tables_[c]) for c in self.columns_}
            out[test_idx] = self._transform_frame(frame.iloc[test_idx], aligned, fold_unknown)
        return out

    # ---- transforming --------------------------------------------------------------------------
    def transform(self, X: Any) -> np.ndarray:
        """Embed ``X``: an array of shape ``(n_samples, n_features_out)`` (Fortran order)."""
        self._check_fitted()
        frame = self._frame(X, reset=False)
        return self._transform_frame(frame, self.tables_, self.handle_unknown)

    def _n_threads(self, n_rows: int) -> int:
        cpus = os.cpu_count() or 1
        if self.n_jobs is None:
            n = cpus
        elif self.n_jobs < 0:
            n = max(1, cpus + 1 + int(self.n_jobs))
        else:
            n = int(self.n_jobs)
        return max(1, min(n, n_rows // _MIN_ROWS_PER_THREAD))

    def _transform_frame(
        self, frame: pd.DataFrame, tables: Mapping[str, EmbeddingTable], handle_unknown: str
    ) -> np.ndarray:
        dtype = np.dtype(self.dtype)
        n = len(frame)
        layout = []
        offset = 0
        for c in self.columns_:
            t = tables[c]
            layout.append((c, t, offset, t.gather_matrix(dtype)))
            offset += t.dim
        out = np.empty((n, offset + len(self.passthrough_)), dtype=dtype, order="F")
        for k, c in enumerate(self.passthrough_):
            out[:, offset + k] = _numeric_column(frame[c], c, dtype)

        def fill(start: int, stop: int) -> None:
            whole = start == 0 and stop == n
            for c, t, off, gm in layout:
                s = frame[c] if whole else frame[c].iloc[start:stop]
                codes = t.apply_unknown(t.encode(s), s, c, handle_unknown, _UNKNOWN_REMEDY)
                for r in range(start, stop, _BLOCK_ROWS):
                    r2 = min(stop, r + _BLOCK_ROWS)
                    block = codes[r - start : r2 - start]
                    for k in range(t.dim):
                        # out[:, j] is contiguous (Fortran order), so take writes straight into it
                        np.take(gm[k], block, out=out[r:r2, off + k], mode="clip")

        n_threads = self._n_threads(n)
        if n_threads == 1:
            fill(0, n)
        else:
            bounds = np.linspace(0, n, n_threads + 1).astype(int)
            with ThreadPoolExecutor(n_threads, thread_name_prefix="embedkit-gather") as pool:
                futures = [pool.submit(fill, int(a), int(b)) for a, b in itertools.pairwise(bounds)]
                for f in futures:
                    f.result()
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``{column}__emb_{i}`` for each embedded column, then the passed-through columns."""
        self._check_fitted()
        names = (
            list(self._input_names_)
            if not hasattr(self, "feature_names_in_")
            else list(self.feature_names_in_)
        )
        if input_features is not None:
            given = [str(f) for f in input_features]
            if hasattr(self, "feature_names_in_") and given != names:
                raise ValueError("input_features is not equal to feature_names_in_")
            if len(given) != self.n_features_in_:
                raise ValueError(
                    f"input_features should have length equal to number of features ({self.n_features_in_}), "
                    f"got {len(given)}"
                )
            names = given
        out = [
            f"{names[pos]}__emb_{i}"
            for c, pos in zip(self.columns_, self._emb_pos_, strict=True)
            for i in range(self.tables_[c].dim)
        ]
        out += [names[pos] for pos in self._pass_pos_]
        return np.asarray(out, dtype=object)


def _check_sample_weight(sample_weight: Any, n_rows: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    sw = np.asarray(sample_weight, dtype=np.float64)
    if sw.shape != (n_rows,):
        raise ValueError(f"sample_weight must have shape ({n_rows},) like X's rows; got {sw.shape}")
    if not np.isfinite(sw).all() or (sw < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    if not sw.any():
        raise ValueError("sample_weight is all zero; at least one weight must be non-zero")
    return sw


def _numeric_column(s: pd.Series, column: str, dtype: np.dtype) -> np.ndarray:
    if ptypes.is_bool_dtype(s.dtype) or (
        ptypes.is_numeric_dtype(s.dtype) and not ptypes.is_complex_dtype(s.dtype)
    ):
        return s.to_numpy(dtype=dtype, na_value=np.nan)
    if ptypes.is_object_dtype(s.dtype):
        try:
            return s.to_numpy(dtype=dtype, na_value=np.nan)
        except (TypeError, ValueError):
            pass
    raise DataError(
        f"column {column!r} is passed through (remainder='passthrough') but holds {s.dtype} values, not "
        "numbers; embed it (give it a table and list it in columns), drop it (remainder='drop'), or encode "
        "it before this step"
    )
