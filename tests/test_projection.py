"""embedkit.projection: the 2-D PCA of an embedding table is PCA, is deterministic, and ignores the
reserved rows when fitting."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from embedkit.exceptions import DataError
from embedkit.preprocessing import CategoryVocab
from embedkit.projection import pca_2d, project_table
from embedkit.tables import EmbeddingTable


def table(n: int = 50, dim: int = 6, seed: int = 0) -> EmbeddingTable:
    rng = np.random.default_rng(seed)
    vocab = CategoryVocab("c", "string", [f"v{i:03d}" for i in range(n)], list(range(1, n + 1)), 3, 2)
    return EmbeddingTable(vocab, rng.normal(size=(n + 2, dim)) * np.linspace(3, 0.5, dim))


def test_it_is_pca_of_the_value_rows() -> None:
    t = table()
    p = project_table(t)
    ref = PCA(n_components=2).fit(t.weights[2:].astype(np.float64))
    expected = ref.transform(t.weights.astype(np.float64))
    # the same axes up to sign, and the sign rule holds: the largest loading of each axis is positive
    for axis in range(2):
        sign = np.sign(expected[:, axis] @ p.xy[:, axis])
        np.testing.assert_allclose(p.xy[:, axis], sign * expected[:, axis], atol=1e-9)
        loading = ref.components_[axis] * sign
        assert loading[np.argmax(np.abs(loading))] > 0
    np.testing.assert_allclose(p.explained, ref.explained_variance_ratio_, rtol=1e-9)
    assert p.xy.shape == (52, 2)


def test_reserved_rows_do_not_move_the_axes() -> None:
    t = table()
    w = t.weights.copy()
    w[:2] = 100.0  # far-away missing / unknown vectors
    moved = project_table(EmbeddingTable(t.vocab, w))
    np.testing.assert_allclose(moved.xy[2:], project_table(t).xy[2:], atol=1e-5)
    assert np.abs(moved.xy[:2]).max() > 50  # still projected, far out


@pytest.mark.parametrize("seed", range(5))
def test_deterministic_under_sign_flips_and_row_order(seed: int) -> None:
    t = table(seed=seed)
    p = project_table(t)
    np.testing.assert_array_equal(p.xy, project_table(t).xy)
    # the sign rule pins each axis: flipping the whole cloud mirrors the points, it does not keep them
    # where an SVD's arbitrary sign would have put them
    rng = np.random.default_rng(seed)
    order = np.concatenate([[0, 1], 2 + rng.permutation(len(t.vocab.values))])
    shuffled = pca_2d(t.weights[order], slice(2, None))
    np.testing.assert_allclose(shuffled.xy, p.xy[order], atol=1e-5)


def test_one_dimension_one_value_and_no_variance() -> None:
    vocab = CategoryVocab("c", "integer", [1, 2, 3], [1, 1, 1])
    one_dim = project_table(EmbeddingTable(vocab, np.array([[0.0], [1.0], [2.0], [3.0], [5.0]])))
    assert np.all(one_dim.xy[:, 1] == 0) and one_dim.explained == (1.0, 0.0)
    np.testing.assert_allclose(one_dim.xy[2:, 0], [-4 / 3, -1 / 3, 5 / 3])
    single = project_table(EmbeddingTable(CategoryVocab("c", "integer", [1], [1]), np.eye(3)))
    assert single.xy.shape == (3, 2)  # fitted on all three rows
    flat = pca_2d(np.ones((4, 3)))
    assert flat.explained == (0.0, 0.0) and np.all(flat.xy == 0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(DataError, match="2-D array"):
        pca_2d(np.ones(3))
    with pytest.raises(DataError, match="NaN"):
        pca_2d(np.array([[np.nan, 1.0], [0.0, 1.0]]))
    with pytest.raises(DataError, match="at least one row"):
        pca_2d(np.ones((2, 2)), slice(5, None))
