"""Small synthetic data sets for the tests (no downloads, deterministic)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def grouped_categories(
    n: int = 4000, n_cats: int = 24, n_groups: int = 3, seed: int = 0, task: str = "regression"
) -> tuple[pd.DataFrame, np.ndarray]:
    """Categories ``c0..`` belong to hidden groups; the target depends only on the group (plus noise).

    Returns the frame (columns ``cat``, ``other``, ``x``, ``y``) and each category's group.
    """
    rng = np.random.default_rng(seed)
    groups = np.arange(n_cats) % n_groups
    effect = np.linspace(-2, 2, n_groups)
    cats = rng.integers(0, n_cats, n)
    other = rng.integers(0, 5, n)
    x = rng.normal(size=n)
    signal = effect[groups[cats]] + 0.3 * x
    if task == "regression":
        y = signal + rng.normal(scale=0.3, size=n)
    elif task == "binary":
        y = (signal + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    else:
        y = np.array(["low", "mid", "high"])[groups[cats]]
    df = pd.DataFrame({"cat": [f"c{c}" for c in cats], "other": other.astype(np.int64), "x": x, "y": y})
    df["cat"] = df["cat"].astype("str")
    return df, groups


def mixed_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A frame with every column kind the preprocessor handles, with missing values."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "s": pd.Series(rng.choice(["a", "b", "c", None], n), dtype="str"),
            "i": rng.integers(0, 5, n).astype("int64"),
            "b": rng.integers(0, 2, n).astype(bool),
            "f": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
            "g": rng.normal(size=n),
            "d": pd.to_datetime("2020-01-01") + pd.to_timedelta(rng.integers(0, 800, n), unit="D"),
            "y": rng.normal(size=n),
        }
    )
    return df
