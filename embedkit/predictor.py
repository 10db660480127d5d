"""Inference from a model bundle: DataFrame (or records) in, predictions (and class probabilities) out.

No torch: the net runs as :class:`embedkit.inference.NetForward` (numpy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .bundle import BundleContents, read_bundle
from .inference import NetForward, NetModel
from .outputs import Predictions
from .preprocessing import Preprocessor
from .target import TargetInfo


class Predictor(Predictions):
    """Predicts with a trained net. Load one with :meth:`load` (a bundle directory).

    ``predict`` returns class labels for classifiers and values for regression; ``predict_proba`` returns
    class probabilities ``[n, n_classes]`` (columns in ``classes`` order). Each also takes records
    (a list of dicts of column -> value) through :meth:`predict_raw_records`.
    """

    def __init__(
        self,
        preprocessor: Preprocessor,
        target: TargetInfo,
        forward: NetForward,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        self.preprocessor = preprocessor
        self.target = target
        self.forward = forward
        self.model = NetModel(preprocessor, forward)
        self.manifest = manifest or {}

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Predictor:
        contents: BundleContents = read_bundle(path, verify=verify)
        return cls(
            contents.preprocessor, contents.target, NetForward.from_bundle(contents), contents.manifest
        )

    @property
    def task(self) -> str:
        return self.target.task

    @property
    def classes(self) -> list[Any] | None:
        return self.target.classes

    @property
    def feature_columns(self) -> list[str]:
        return self.preprocessor.spec_.feature_columns

    def predict_raw(self, df: pd.DataFrame) -> np.ndarray:
        """P(class 1) for binary, probabilities for multiclass, values for regression."""
        return self.model.predict_raw(self.model.inputs_from_frame(df))

    def predict_raw_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """:meth:`predict_raw` for records (dicts holding every input column), without pandas."""
        return self.model.predict_raw(self.model.inputs_from_records(records))

    def unknown_counts(self, df: pd.DataFrame) -> dict[str, int]:
        """How many values per categorical column map to the "unknown" row."""
        return self.model.unknown_counts(self.model.inputs_from_frame(df))
