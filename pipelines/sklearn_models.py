"""Small builders of the downstream scikit-learn estimators and of the baselines' encoders.

No modelling logic lives here: each function picks a class for the task and passes the config's keyword
arguments through. ``make_estimator`` builds what runs on ``EmbeddingTransformer`` output;
``make_baseline`` builds a whole pipeline (encoder + estimator) for the comparison runs.
"""

from __future__ import annotations

from typing import Any


def _classes(name: str, task: str) -> Any:
    classify = task != "regression"
    if name == "lightgbm":
        import lightgbm as lgb

        return lgb.LGBMClassifier if classify else lgb.LGBMRegressor
    if name == "random_forest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        return RandomForestClassifier if classify else RandomForestRegressor
    if name == "knn":
        from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

        return KNeighborsClassifier if classify else KNeighborsRegressor
    raise ValueError(f"unknown downstream estimator {name!r}")


def estimator_param_names(name: str) -> set[str] | None:
    """The keyword arguments the estimator ``name`` takes (classifier and regressor alike); None when any
    name may be valid (LightGBM passes unknown keywords on to its core, whose list is not public)."""
    names = set(_classes(name, "binary")().get_params(deep=False)) | set(
        _classes(name, "regression")().get_params(deep=False)
    )
    if name == "lightgbm":
        try:
            from lightgbm.basic import _ConfigAliases  # private: fall back to "anything goes"

            for key, aliases in _ConfigAliases._get_all_param_aliases().items():
                names.update([key, *aliases])
        except (ImportError, AttributeError):
            return None
    return names


def make_estimator(name: str, task: str, params: dict[str, Any], seed: int, *, scale: bool = True) -> Any:
    """A fresh estimator for ``task``. k-NN comes with median imputation and standard scaling (``scale``),
    since distances need comparable columns; the tree learners take NaN as it is."""
    cls = _classes(name, task)
    kwargs = dict(params)
    if "random_state" in cls().get_params(deep=False):
        kwargs.setdefault("random_state", seed)
    est = cls(**kwargs)
    if name == "knn" and scale:
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), est)
    return est


def make_baseline(
    encoder: str,
    estimator: str,
    task: str,
    categorical: list[str],
    continuous: list[str],
    params: dict[str, Any],
    seed: int,
) -> Any:
    """``encoder`` (``ordinal``, ``onehot`` or ``target``) on the categorical columns, the continuous columns
    passed through (imputed and scaled for one-hot, whose output is sparse), then ``estimator``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import (
        FunctionTransformer,
        OneHotEncoder,
        OrdinalEncoder,
        StandardScaler,
        TargetEncoder,
    )

    if encoder == "ordinal":
        enc: Any = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    elif encoder == "onehot":
        enc = OneHotEncoder(handle_unknown="ignore", sparse_output=True)
    elif encoder == "target":
        from sklearn.model_selection import KFold, StratifiedKFold

        target_type = {"regression": "continuous", "binary": "binary", "multiclass": "multiclass"}[task]
        if TargetEncoder().get_params().get("random_state") == "deprecated":  # scikit-learn >= 1.9
            folds = KFold if task == "regression" else StratifiedKFold
            enc = TargetEncoder(target_type=target_type, cv=folds(5, shuffle=True, random_state=seed))
        else:
            enc = TargetEncoder(target_type=target_type, random_state=seed)
    else:
        raise ValueError(f"unknown baseline encoder {encoder!r}")
    from embedkit.servable import categories_as_strings

    # a function of embedkit's serving layer, so that the saved encoder names no pipelines code
    to_str = FunctionTransformer(categories_as_strings, feature_names_out="one-to-one")
    num: Any = "passthrough"
    if encoder == "onehot":
        num = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    parts = [("cat", make_pipeline(to_str, enc), categorical)]
    if continuous:
        parts.append(("num", num, continuous))
    columns = ColumnTransformer(parts, remainder="drop", sparse_threshold=0.3 if encoder == "onehot" else 0)
    est = make_estimator(estimator, task, params, seed, scale=encoder != "onehot")
    return Pipeline([("encode", columns), ("model", est)])
