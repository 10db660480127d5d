"""Read and split the rows a config names; unusable data fails here, before any MLflow run exists."""

from __future__ import annotations

import difflib
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from embedkit.exceptions import DataError
from embedkit.preprocessing import check_training_frame
from embedkit.spec import FeatureSpec
from embedkit.target import TargetInfo

from .config import ConfigError, PipelineConfig

log = logging.getLogger("pipelines")

_PARQUET = (".parquet", ".pq", ".parq")
_CSV = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".tsv")


@dataclass
class Dataset:
    """The training and validation rows, the resolved column roles, the task and the class labels."""

    train: pd.DataFrame
    valid: pd.DataFrame
    spec: FeatureSpec  # resolved: every role list is filled
    target: TargetInfo
    source: str
    fingerprint: str  # sha256 of the rows and the split: equal data gives equal fingerprints

    @property
    def task(self) -> str:
        return self.target.task

    @property
    def feature_columns(self) -> list[str]:
        return self.spec.feature_columns

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_train": len(self.train),
            "n_valid": len(self.valid),
            "target": self.spec.target,
            "task": self.task,
            "categorical": self.spec.categorical,
            "continuous": self.spec.continuous,
            "dates": self.spec.dates,
            "fingerprint": self.fingerprint,
        }


def load_data(cfg: PipelineConfig) -> Dataset:
    """The config's rows, split and checked: the target exists, the roles name real columns, the task
    suits ``register.select_by``. Raises :class:`ConfigError` naming the key to fix."""
    d = cfg.data
    if d.is_example:
        frame, spec, train_idx, valid_idx, source = _example(cfg)
    else:
        frame, source = _read_file(cfg)
        if d.target not in frame.columns:
            close = difflib.get_close_matches(str(d.target), [str(c) for c in frame.columns], n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(
                f"config key 'data.target' is {d.target!r} but {source} has no such column; "
                f"{hint}its columns are {list(frame.columns)[:30]}"
            )
        spec = FeatureSpec(
            target=d.target,
            categorical=d.categorical,
            continuous=d.continuous,
            dates=d.dates,
            ignore=list(d.ignore),
        )
        perm = np.random.default_rng(d.split.seed).permutation(len(frame))
        n_train = round(len(frame) * (1 - d.split.valid_fraction))
        train_idx, valid_idx = perm[:n_train], perm[n_train:]
    train = frame.iloc[train_idx].reset_index(drop=True)
    valid = frame.iloc[valid_idx].reset_index(drop=True)
    if len(train) < 2 or len(valid) < 1:
        raise ConfigError(
            f"{source} has {len(frame)} rows: too few for a training and a validation split; "
            "use more rows (data.n_rows) or change data.split.valid_fraction"
        )
    try:
        spec = spec.resolve(train)
        target = TargetInfo.fit(train[spec.target], task=d.task, name=spec.target)
        check_training_frame(train, spec)  # what the preprocessor would refuse, before any run starts
    except DataError as exc:
        raise ConfigError(f"the [data] section does not fit {source}: {exc}") from None
    cfg.check_task(target.task)
    return Dataset(train, valid, spec, target, source, _fingerprint(frame, train_idx, valid_idx))


def _example(cfg: PipelineConfig) -> tuple[pd.DataFrame, FeatureSpec, np.ndarray, np.ndarray, str]:
    from embedkit.datasets import FLIGHTS_TARGET, flights

    d = cfg.data
    if d.target not in (None, FLIGHTS_TARGET):
        raise ConfigError(
            f"config key 'data.target' is {d.target!r} but the example's target is "
            f"{FLIGHTS_TARGET!r}; leave it out, or set data.source to your own file"
        )
    ex = flights(n_rows=d.n_rows, valid_fraction=d.split.valid_fraction, seed=d.split.seed)
    drop = set(d.ignore)

    def pick(given: list[str] | None, default: list[str] | None) -> list[str]:
        return [c for c in (given if given is not None else default or []) if c not in drop]

    spec = FeatureSpec(
        target=FLIGHTS_TARGET,
        categorical=pick(d.categorical, ex.spec.categorical),
        continuous=pick(d.continuous, ex.spec.continuous),
        dates=pick(d.dates, ex.spec.dates),
        ignore=list(d.ignore),
    )
    source = f"example:flights(n_rows={d.n_rows})"
    return ex.frame, spec, ex.train_idx, ex.valid_idx, source


def _read_file(cfg: PipelineConfig) -> tuple[pd.DataFrame, str]:
    d = cfg.data
    path = cfg.data_path()
    name = path.name.lower()
    fmt = d.format or ("parquet" if name.endswith(_PARQUET) else "csv" if name.endswith(_CSV) else None)
    if fmt is None:
        raise ConfigError(
            f"config key 'data.source': cannot tell the format of {str(path)!r} from its suffix; "
            'set data.format = "parquet" or "csv"'
        )
    if not path.is_file():
        raise ConfigError(
            f"config key 'data.source': data file {str(path)!r} does not exist (relative paths "
            "are read from the config file's folder)"
        )
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",", nrows=d.n_rows)
    except Exception as exc:  # pyarrow, the csv parser and the OS each raise their own types
        raise ConfigError(
            f"config key 'data.source': cannot read {str(path)!r} as {fmt}: {type(exc).__name__}: {exc}"
        ) from None
    if d.n_rows is not None:
        frame = frame.iloc[: d.n_rows]
    if frame.columns.has_duplicates:
        raise ConfigError(
            f"{str(path)!r} has duplicated column names "
            f"{frame.columns[frame.columns.duplicated()].unique().tolist()[:5]}; rename them"
        )
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True), str(path)


def _fingerprint(frame: pd.DataFrame, train_idx: np.ndarray, valid_idx: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    h.update(np.asarray(train_idx, dtype=np.int64).tobytes())
    h.update(np.asarray(valid_idx, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]
