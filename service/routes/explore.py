"""``GET /explore``: the embedding explorer, a page that shows a column's categories as points of a 2-D
projection, and the data it draws.

- ``GET /explore`` and its two files (``/explore/assets/explore.js``, ``explore.css``): a static page, the
  same for every model and holding no data. With an API key set it needs the key like every route, from
  the ``X-API-Key`` header or a cookie (a browser opening a page cannot send a header): without it the
  answer is a 401 page that asks for the key, sets the cookie and reloads. The page then sends the key as
  ``X-API-Key`` on its own requests.
- ``GET /explore/data/{column}``: the points (category, kind, count, x, y), from
  :func:`embedkit.projection.project_table`, computed once per loaded model and column. Needs the key.
- The neighbours the page lists on a click come from ``GET /embeddings/{column}/{value}/neighbors``.

``EMBEDKIT_EXPLORE=false`` leaves these routes out (404).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse

from embedkit.preprocessing import N_RESERVED
from embedkit.projection import Projection, project_table

from ..deps import ModelDep
from ..schemas import ErrorBody, ExploreData
from .embeddings import check_column

router = APIRouter(prefix="/explore", tags=["explore"])

STATIC = Path(__file__).resolve().parents[1] / "static"
ASSETS = {"explore.js": "text/javascript", "explore.css": "text/css"}
#: The page and its files may load only from the service itself: no CDN, nothing inline.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
#: Most categories one answer lists by default, and at most (the most frequent ones).
DEFAULT_LIMIT = 50_000
MAX_LIMIT = 200_000
#: Significant digits of the coordinates sent (a point of a 2,000-pixel plot needs four).
DIGITS = 6


@router.get("", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "explore.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/assets/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, detail=f"no such file; the explorer's files are {sorted(ASSETS)}")
    return FileResponse(STATIC / name, media_type=media_type, headers=PAGE_HEADERS)


@router.get(
    "/data/{column}",
    response_model=ExploreData,
    responses={
        404: {"model": ErrorBody, "description": "the column has no embedding table"},
        503: {"model": ErrorBody, "description": "the model is not loaded yet"},
    },
    summary="One column's categories as points of a 2-D projection (PCA), with their counts",
)
def data(
    column: Annotated[str, PathParam(description="a categorical input column of the model")],
    model: ModelDep,
    limit: Annotated[
        int,
        Query(ge=1, le=MAX_LIMIT, description="list at most this many categories, the most frequent"),
    ] = DEFAULT_LIMIT,
) -> JSONResponse:
    """The rows of the column's embedding table in code order: first the reserved ``missing`` and
    ``unknown`` rows, then the categories (the ``limit`` most frequent when there are more). ``x`` and
    ``y`` are the rows' coordinates on the two principal axes of the categories' vectors; the same model
    always gives the same points."""
    check_column(model, column)
    table = model.servable.tables[column]
    projection = _projection(model, column, table)
    vocab = table.vocab
    counts = np.asarray(vocab.counts, dtype=np.int64)
    codes = np.arange(len(counts))
    if len(counts) > limit:  # the most frequent, ties by code, listed in code order
        codes = np.sort(np.argsort(-counts, kind="stable")[:limit])
    rows = np.concatenate([np.arange(N_RESERVED), codes + N_RESERVED])
    xy = _rounded(projection.xy[rows])
    body: dict[str, Any] = {
        "column": column,
        "dim": table.dim,
        "categories": len(counts),
        "shown": len(codes),
        "explained_variance": [round(v, 4) for v in projection.explained],
        "category": [None, None, *(vocab.values[i] for i in codes.tolist())],
        "kind": ["missing", "unknown", *(["value"] * len(codes))],
        "count": [vocab.missing_count, vocab.unknown_count, *counts[codes].tolist()],
        "x": xy[:, 0].tolist(),
        "y": xy[:, 1].tolist(),
    }
    return JSONResponse(body)


def _projection(model: ModelDep, column: str, table: Any) -> Projection:
    # Two first requests at once may both compute it; either result is the same.
    projection = model.projections.get(column)
    if projection is None:
        projection = model.projections[column] = project_table(table)
    return projection


def _rounded(xy: np.ndarray) -> np.ndarray:
    """``xy`` to ``DIGITS`` significant digits of its largest coordinate (a shorter answer)."""
    scale = float(np.abs(xy).max(initial=0.0))
    if scale == 0.0:
        return xy
    return np.round(xy, max(0, DIGITS - 1 - int(np.floor(np.log10(scale)))))
