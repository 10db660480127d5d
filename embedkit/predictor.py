"""Inference from a model bundle: DataFrame in, predictions (and class probabilities) out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .bundle import BundleContents, read_bundle
from .nn.device import resolve_device
from .nn.model import TabularNet, load_net, to_prediction
from .outputs import class_index, proba_from_raw
from .preprocessing import UNKNOWN, Preprocessor
from .target import TargetInfo


class Predictor:
    """Predicts with a trained net. Load one with :meth:`load` (a bundle directory).

    ``predict`` returns class labels for classifiers and values for regression; ``predict_proba`` returns
    class probabilities ``[n, n_classes]`` (columns in ``classes`` order).
    """

    def __init__(
        self,
        preprocessor: Preprocessor,
        target: TargetInfo,
        model: TabularNet,
        device: str | torch.device = "cpu",
        batch_size: int = 65536,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        self.preprocessor = preprocessor
        self.target = target
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.manifest = manifest or {}

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", verify: bool = True) -> Predictor:
        contents: BundleContents = read_bundle(path, verify=verify)
        dev = resolve_device(device)
        model = load_net(contents, device=str(dev))
        return cls(contents.preprocessor, contents.target, model, dev, manifest=contents.manifest)

    @property
    def task(self) -> str:
        return self.target.task

    @property
    def classes(self) -> list[Any] | None:
        return self.target.classes

    @property
    def feature_columns(self) -> list[str]:
        return self.preprocessor.spec_.feature_columns

    @torch.no_grad()
    def _forward(self, codes: np.ndarray, cont: np.ndarray) -> np.ndarray:
        outs = []
        for s in range(0, len(codes), self.batch_size):
            xc = torch.from_numpy(np.ascontiguousarray(codes[s : s + self.batch_size], dtype=np.int64)).to(
                self.device
            )
            xn = torch.from_numpy(np.ascontiguousarray(cont[s : s + self.batch_size])).to(self.device)
            outs.append(to_prediction(self.task, self.model(xc, xn)).float().cpu().numpy())
        if not outs:
            shape = (0, self.target.n_classes) if self.task == "multiclass" else (0,)
            return np.empty(shape, dtype=np.float32)
        return np.concatenate(outs)

    def predict_raw(self, df: pd.DataFrame) -> np.ndarray:
        """P(class 1) for binary, probabilities for multiclass, values for regression."""
        codes, cont = self.preprocessor.transform(df)
        return self._forward(codes, cont)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        if self.task == "regression":
            raise AttributeError("predict_proba is for classifiers; this model does regression")
        return proba_from_raw(self.task, self.predict_raw(df))

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        p = self.predict_raw(df)
        if self.task == "regression":
            return p
        idx = class_index(self.task, p)
        return (
            np.asarray(self.classes, dtype=object)[idx]
            if not _numeric(self.classes)
            else np.asarray(self.classes)[idx]
        )

    def unknown_counts(self, df: pd.DataFrame) -> dict[str, int]:
        """How many values per categorical column map to the "unknown" row."""
        codes, _ = self.preprocessor.transform(df)
        return {c: int((codes[:, j] == UNKNOWN).sum()) for j, c in enumerate(self.preprocessor.cat_names_)}


def _numeric(classes: list[Any] | None) -> bool:
    return bool(classes) and all(isinstance(c, (int, float, bool, np.number)) for c in classes or [])
