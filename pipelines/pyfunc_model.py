"""The registered MLflow model, as code (MLflow "models from code": no pickle).

``register`` logs this file with ``mlflow.pyfunc.log_model(python_model=<this file>,
artifacts={"servable": <servable directory>})``. On load, MLflow runs the file, which hands
:class:`EmbedkitModel` to ``mlflow.models.set_model``; ``load_context`` then opens the servable with
:func:`embedkit.servable.load_servable`. ``predict`` takes a DataFrame of input columns and returns a
DataFrame with a ``prediction`` column (class label or value) and, for classifiers, one ``proba_<class>``
column per class.

This file must stay importable on its own (it is copied into the model): it imports only mlflow, numpy,
pandas and embedkit.
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

SERVABLE_ARTIFACT = "servable"


def predictions_frame(servable: Any, df: pd.DataFrame) -> pd.DataFrame:
    """``prediction`` (+ ``proba_<class>`` for classifiers) for each row of ``df``."""
    raw = servable.predict_raw(df)
    out = pd.DataFrame(index=range(len(df)))
    if servable.task == "regression":
        out["prediction"] = np.asarray(raw, dtype=np.float64)
        return out
    classes = list(servable.classes)
    proba = np.column_stack([1 - raw, raw]) if servable.task == "binary" else np.asarray(raw)
    # the servable's rule: P(class 1) > 0.5 for binary, the most probable class otherwise
    idx = (np.asarray(raw) > 0.5).astype(np.int64) if servable.task == "binary" else proba.argmax(axis=1)
    labels = np.asarray(classes, dtype=object)[idx]
    out["prediction"] = pd.Series(labels.tolist(), dtype=None if len(df) else object)
    for j, c in enumerate(classes):
        out[f"proba_{c}"] = proba[:, j].astype(np.float64)
    return out


class EmbedkitModel(PythonModel):
    """Serves an embedkit servable (the net, or embeddings + a downstream estimator)."""

    def load_context(self, context: Any) -> None:
        from embedkit.servable import load_servable

        self.servable = load_servable(context.artifacts[SERVABLE_ARTIFACT])

    # pd.DataFrame is the input hint MLflow accepts without deriving a schema from it (the signature,
    # inferred from the input example at log time, describes the columns)
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return predictions_frame(self.servable, df.reset_index(drop=True))


mlflow.models.set_model(EmbedkitModel())
