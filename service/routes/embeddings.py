"""``GET /embeddings/{column}/{value}`` and its nearest neighbours, from the loaded model's tables.

``value`` is the rest of the path, so a category may hold ``/`` (``/embeddings/route/JFK/LAX``, or
``JFK%2FLAX``). The neighbours route is matched first: a path ending in ``/neighbors`` asks for the
neighbours of what comes before it.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Path, Query

from ..deps import ModelDep
from ..schemas import EmbeddingResponse, ErrorBody, Neighbor, NeighborsResponse, RowKind

router = APIRouter(prefix="/embeddings", tags=["embeddings"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "the column has no embedding table"},
    503: {"model": ErrorBody, "description": "the model is not loaded yet"},
}
ColumnPath = Annotated[str, Path(description="a categorical input column of the model")]
ValuePath = Annotated[
    str,
    Path(
        description="the category, read as the column's kind (e.g. '5' for an integer "
        "column); it may contain '/'; a value not seen in training gives the 'unknown' vector"
    ),
]


def check_column(model: ModelDep, column: str) -> None:
    """A 404 unless ``column`` has an embedding table in the served model."""
    if column not in model.servable.tables:
        # the requested name is not echoed back (reflected input); the known ones are listed instead
        raise HTTPException(
            404,
            detail=f"no embedding table for this column; embedded columns: {sorted(model.servable.tables)}",
        )


@router.get(
    "/{column}/{value:path}/neighbors",
    response_model=NeighborsResponse,
    responses=_ERRORS,
    summary="The categories nearest to one category, by cosine similarity",
)
def neighbors(
    column: ColumnPath,
    value: ValuePath,
    model: ModelDep,
    k: Annotated[int, Query(ge=1, le=1000, description="how many neighbours")] = 10,
) -> NeighborsResponse:
    check_column(model, column)
    _, kind = model.servable.embedding(column, value)
    found = model.servable.neighbors(column, value, k)
    return NeighborsResponse(
        column=column,
        value=value,
        kind=cast(RowKind, kind),
        neighbors=[Neighbor(category=n["category"], similarity=n["similarity"]) for n in found],
    )


@router.get(
    "/{column}/{value:path}",
    response_model=EmbeddingResponse,
    responses=_ERRORS,
    summary="The embedding vector of one category",
)
def embedding(column: ColumnPath, value: ValuePath, model: ModelDep) -> EmbeddingResponse:
    check_column(model, column)
    vector, kind = model.servable.embedding(column, value)
    return EmbeddingResponse(
        column=column, value=value, kind=cast(RowKind, kind), dim=len(vector), vector=vector.tolist()
    )
