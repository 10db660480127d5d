"""A deterministic 2-D projection of an embedding table (PCA), for plots and the service's explorer.

The components are fitted on the value rows (codes 2..) only: the reserved *missing* and *unknown*
rows are projected onto them but do not move them, so a rarely-trained reserved vector cannot tilt the
picture. Each component's sign is fixed (its largest loading is positive), so the same table always
gives the same picture, whatever sign the SVD happens to return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .exceptions import DataError
from .preprocessing import N_RESERVED

if TYPE_CHECKING:
    from .tables import EmbeddingTable

__all__ = ["Projection", "pca_2d", "project_table"]


@dataclass(frozen=True)
class Projection:
    """Points of a 2-D projection.

    Attributes
    ----------
    xy : float64 array of shape (n_rows, 2)
        One point per input row, in input order.
    explained : tuple of two floats
        Fraction of the fitted rows' variance along each axis (0 when there is no variance).
    """

    xy: np.ndarray
    explained: tuple[float, float]


def pca_2d(vectors: np.ndarray, fit_rows: np.ndarray | slice | None = None) -> Projection:
    """Project ``vectors`` (shape ``(n, dim)``) onto the two principal axes of ``vectors[fit_rows]``
    (default: all rows).

    Deterministic: the axes are those of an exact SVD, each flipped so that its largest loading (the
    first, on ties) is positive. A 1-D input gives ``y = 0``; fewer than two distinct fitted rows give
    zero axes (every point at the fitted rows' mean).

    Examples
    --------
    >>> import numpy as np
    >>> p = pca_2d(np.array([[0.0, 0.0, 1.0], [2.0, 0.0, 1.0], [4.0, 1.0, 1.0]]))
    >>> p.xy.shape, round(p.explained[0], 3)
    ((3, 2), 0.982)
    """
    w = np.asarray(vectors, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] < 1:
        raise DataError(f"pca_2d needs a 2-D array (n, dim) with dim >= 1; got shape {w.shape}")
    fit = w if fit_rows is None else w[fit_rows]
    if len(fit) == 0:
        raise DataError("pca_2d needs at least one row to fit the projection on")
    if not np.isfinite(fit).all():
        raise DataError("pca_2d: the vectors hold NaN or infinite values")
    mean = fit.mean(axis=0)
    centred = fit - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    axes = np.zeros((2, w.shape[1]))
    n_axes = min(2, len(s))
    axes[:n_axes] = vt[:n_axes]
    for a in axes:
        top = int(np.argmax(np.abs(a)))
        if a[top] < 0:
            a *= -1.0
    variance = s**2
    total = float(variance.sum())
    explained = [float(v / total) if total > 0 else 0.0 for v in variance[:n_axes]]
    explained += [0.0] * (2 - len(explained))
    if total == 0:
        axes[:] = 0.0  # no direction to show: every point sits at the mean
    return Projection(xy=(w - mean) @ axes.T, explained=(explained[0], explained[1]))


def project_table(table: EmbeddingTable) -> Projection:
    """The 2-D PCA of an :class:`~embedkit.tables.EmbeddingTable`, one point per code (row 0 missing,
    row 1 unknown, then the values), fitted on the value rows (all rows if there are fewer than two)."""
    weights = np.asarray(table.weights)
    fit_rows = slice(N_RESERVED, None) if len(weights) - N_RESERVED >= 2 else None
    return pca_2d(weights, fit_rows)
