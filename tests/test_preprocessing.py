import json

import numpy as np
import pandas as pd
import pytest
from _synthetic import mixed_frame

from embedkit import DataError, FeatureSpec, NotFittedError, Preprocessor
from embedkit.preprocessing import MISSING, UNKNOWN, CategoryVocab


def _fit(df, **kw):
    spec = FeatureSpec(target="y", categorical=["s", "i", "b"], continuous=["f", "g"], dates=["d"])
    return Preprocessor(spec, **kw).fit(df)


def test_vocab_layout_reserved_rows_and_counts():
    s = pd.Series(["b", "a", "b", None, "c", "b"], dtype="str")
    v = CategoryVocab.fit("s", s, min_frequency=2)
    assert v.values == ["b"] and v.counts == [3]
    assert v.missing_count == 1 and v.unknown_count == 2  # a and c are rare → unknown
    codes = v.encode(pd.Series(["b", "a", None, "zzz"], dtype="str"))
    assert codes.tolist() == [2, UNKNOWN, MISSING, UNKNOWN]


def test_category_codes_are_never_trusted():
    v = CategoryVocab.fit("s", pd.Series(["x", "y", "z"]))
    # same values, different pandas category order and codes
    cat = pd.Series(pd.Categorical(["z", "x", None], categories=["z", "y", "x"]))
    assert v.encode(cat).tolist() == [v.encode(pd.Series(["z"]))[0], v.encode(pd.Series(["x"]))[0], MISSING]


def test_integer_vocab_accepts_floats_and_strings_of_integers():
    v = CategoryVocab.fit("i", pd.Series([1, 2, 3], dtype="int64"))
    codes = v.encode(pd.Series([1.0, 2.5, np.nan, 3.0]))
    assert codes.tolist() == [2, UNKNOWN, MISSING, 4]
    assert v.encode(pd.Series(["2", "x"], dtype=object)).tolist() == [3, UNKNOWN]


def test_transform_shapes_types_and_date_parts():
    df = mixed_frame()
    p = _fit(df)
    codes, cont = p.transform(df)
    assert codes.dtype == np.int32 and cont.dtype == np.float32
    assert "d_year" in p.cat_names_ and "d_dayofweek" in p.cat_names_ and "d_is_month_start" in p.cat_names_
    assert p.cont_names_ == ["f", "g", "d_elapsed", "f_na"]  # f had NaN at fit → indicator
    assert codes.shape == (len(df), len(p.cat_names_)) and cont.shape == (len(df), 4)
    # standardised continuous columns
    assert abs(cont[:, 1].mean()) < 1e-5 and abs(cont[:, 1].std() - 1) < 1e-4
    # the NaN indicator marks exactly the missing rows, filled with the median
    assert (cont[:, 3] == df["f"].isna()).all()


def test_nan_at_transform_in_column_without_nan_at_fit_is_filled():
    df = mixed_frame()
    p = _fit(df)
    new = df.head(3).copy()
    new.loc[0, "g"] = np.nan
    _, cont = p.transform(new)
    st = p.cont_stats_["g"]
    assert cont[0, 1] == pytest.approx((st.fill - st.mean) / st.std)


def test_state_roundtrips_through_json_exactly():
    df = mixed_frame()
    p = _fit(df, min_frequency=3)
    q = Preprocessor.from_dict(json.loads(json.dumps(p.to_dict())))
    c1, x1 = p.transform(df)
    c2, x2 = q.transform(df)
    assert np.array_equal(c1, c2) and np.array_equal(x1, x2)
    assert q.to_dict() == p.to_dict()


def test_unseen_values_map_to_unknown_and_missing_to_missing():
    df = mixed_frame()
    p = _fit(df)
    new = df.head(2).copy()
    new["s"] = pd.Series(["never-seen", None], dtype="str")
    codes, _ = p.transform(new)
    j = p.cat_names_.index("s")
    assert codes[:, j].tolist() == [UNKNOWN, MISSING]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda df: df.iloc[:0], "empty"),
        (lambda df: df.assign(g="abc"), "continuous column 'g' has non-numeric values"),
        (lambda df: df.assign(f=np.nan), "column 'f' is entirely missing"),
    ],
)
def test_bad_training_input_names_column_and_fix(mutate, match):
    with pytest.raises(DataError, match=match):
        _fit(mutate(mixed_frame()))


def test_column_missing_at_transform_is_named():
    p = _fit(mixed_frame())
    with pytest.raises(DataError, match=r"column\(s\) \['g'\] missing"):
        p.transform(mixed_frame().drop(columns=["g"]))


def test_not_fitted():
    with pytest.raises(NotFittedError, match="call fit"):
        Preprocessor().transform(mixed_frame())


def test_large_column_maps_like_a_dict_lookup():
    rng = np.random.default_rng(1)
    vals = np.array([f"v{i}" for i in range(1000)])
    s = pd.Series(vals[rng.integers(0, 1000, 200_000)], dtype="str")
    v = CategoryVocab.fit("s", s)
    lut = {val: i + 2 for i, val in enumerate(v.values)}
    codes = v.encode(s)
    assert codes.tolist() == [lut[x] for x in s]
