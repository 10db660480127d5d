import numpy as np
import pandas as pd
import pytest

from embedkit import DataError, FeatureSpec


def test_inference_rule_is_deterministic_and_documented():
    df = pd.DataFrame(
        {
            "s": ["a", "b"] * 15,
            "small_int": np.arange(30) % 3,
            "big_int": np.arange(30),
            "f": np.linspace(0, 1, 30),
            "b": [True, False] * 15,
            "d": pd.date_range("2020-01-01", periods=30),
            "y": np.arange(30) % 2,
        }
    )
    spec = FeatureSpec(target="y").resolve(df)
    assert spec.categorical == ["s", "small_int", "b"]
    assert spec.continuous == ["big_int", "f"]
    assert spec.dates == ["d"]
    # same order whatever the call
    assert FeatureSpec(target="y").resolve(df) == spec


def test_explicit_roles_win_and_unknown_column_is_named():
    df = pd.DataFrame({"a": [1, 2], "b": [1.0, 2.0], "y": [0, 1]})
    spec = FeatureSpec(target="y", categorical=["b"]).resolve(df)
    assert spec.categorical == ["b"] and spec.continuous == [] and "a" not in spec.feature_columns
    with pytest.raises(DataError, match="column 'zz' is listed as categorical"):
        FeatureSpec(target="y", categorical=["zz"]).resolve(df)
    with pytest.raises(DataError, match="'y' is the target"):
        FeatureSpec(target="y", continuous=["y"]).resolve(df)


def test_roundtrip_dict():
    spec = FeatureSpec(target="y", categorical=["a"], continuous=["b"], dates=[], ignore=["z"])
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
