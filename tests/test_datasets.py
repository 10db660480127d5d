import numpy as np

from embedkit.datasets import FLIGHTS_CATEGORICAL, flights


def test_flights_late_arrival_task_matches_the_documented_split():
    ex = flights()
    assert len(ex.frame) == 327_346  # rows with a missing arr_delay dropped
    assert len(ex.train_idx) == round(327_346 * 0.8) and len(ex.valid_idx) == 327_346 - len(ex.train_idx)
    perm = np.random.default_rng(0).permutation(327_346)
    assert np.array_equal(ex.train_idx, perm[: len(ex.train_idx)])
    assert set(ex.frame["late"].unique()) == {0, 1}
    assert 0.2 < ex.frame["late"].mean() < 0.3
    assert ex.spec.categorical == FLIGHTS_CATEGORICAL and ex.spec.target == "late"
    assert ex.frame["tailnum"].nunique() > 3000 and ex.frame["flight"].nunique() > 3000
    assert ex.frame["dayofweek"].between(0, 6).all()


def test_small_slice_for_tests():
    ex = flights(n_rows=1000)
    assert len(ex.frame) == 1000 and len(ex.train) == 800 and len(ex.valid) == 200
