"""Which column plays which role: :class:`FeatureSpec` and its deterministic inference rule."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from pandas.api import types as ptypes

from .exceptions import DataError

#: An integer column with more distinct values than this is inferred as continuous.
MAX_INT_LEVELS_FOR_CATEGORICAL = 20


@dataclass
class FeatureSpec:
    """Roles of the columns of a DataFrame.

    Leave ``categorical``/``continuous``/``dates`` as ``None`` to infer them with :meth:`resolve`.
    The inference rule, applied in the DataFrame's column order (so every process gets the same order):

    - the target and ``ignore`` columns are skipped;
    - datetime columns are dates;
    - boolean, string, object and pandas ``category`` columns are categorical;
    - integer columns with at most ``max_int_levels`` distinct values are categorical, others continuous;
    - float columns are continuous.
    """

    target: str | None = None
    categorical: list[str] | None = None
    continuous: list[str] | None = None
    dates: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    max_int_levels: int = MAX_INT_LEVELS_FOR_CATEGORICAL

    @property
    def is_resolved(self) -> bool:
        return self.categorical is not None and self.continuous is not None and self.dates is not None

    def resolve(self, df: pd.DataFrame) -> FeatureSpec:
        """Return a copy with every role list filled, inferring the ones left as ``None``."""
        given = set(self.categorical or []) | set(self.continuous or []) | set(self.dates or [])
        for role, cols in (
            ("categorical", self.categorical),
            ("continuous", self.continuous),
            ("dates", self.dates),
        ):
            for c in cols or []:
                if c not in df.columns:
                    raise DataError(
                        f"column {c!r} is listed as {role} but is not in the data; "
                        f"available columns: {list(df.columns)[:20]}"
                    )
        if self.target is not None and self.target in given:
            raise DataError(f"column {self.target!r} is the target and cannot also be a feature")
        skip = set(self.ignore) | given | ({self.target} if self.target else set())
        cat, cont, dates = [], [], []  # type: ignore
        for col in df.columns:
            if col in skip:
                continue
            s = df[col]
            if ptypes.is_datetime64_any_dtype(s):
                dates.append(col)
            elif (
                ptypes.is_bool_dtype(s)
                or isinstance(s.dtype, pd.CategoricalDtype)
                or not (ptypes.is_numeric_dtype(s))
            ):
                cat.append(col)
            elif ptypes.is_integer_dtype(s):
                (cat if s.nunique(dropna=True) <= self.max_int_levels else cont).append(col)
            else:
                cont.append(col)
        return FeatureSpec(
            target=self.target,
            categorical=list(self.categorical) if self.categorical is not None else cat,
            continuous=list(self.continuous) if self.continuous is not None else cont,
            dates=list(self.dates) if self.dates is not None else dates,
            ignore=list(self.ignore),
            max_int_levels=self.max_int_levels,
        )

    @property
    def feature_columns(self) -> list[str]:
        return [*(self.categorical or []), *(self.continuous or []), *(self.dates or [])]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(**d)
