"""``GET /metadata``: the model, its version, its input schema and its embedding tables."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import ModelDep, SettingsDep
from ..schemas import ColumnInfo, EmbeddingColumn, ErrorBody, Limits, MetadataResponse, ModelInfo

router = APIRouter(tags=["metadata"])


@router.get(
    "/metadata",
    response_model=MetadataResponse,
    summary="The served model and what it expects",
    responses={503: {"model": ErrorBody, "description": "the model is not loaded yet"}},
)
async def metadata(model: ModelDep, settings: SettingsDep) -> MetadataResponse:
    servable = model.servable
    return MetadataResponse(
        model=ModelInfo(
            name=model.name,
            version=model.version,
            source=model.source,
            kind=servable.kind,
            task=servable.task,
            loaded_at=model.loaded_at,
        ),
        classes=servable.classes,
        input_schema=[
            ColumnInfo(name=c["name"], role=c["role"], kind=c["kind"]) for c in servable.input_schema
        ],
        embeddings=[
            EmbeddingColumn(name=name, dim=int(t.weights.shape[1]), rows=int(t.weights.shape[0]))
            for name, t in servable.tables.items()
        ],
        limits=Limits(
            max_rows=settings.max_rows,
            max_body_bytes=settings.max_body_bytes,
            extra_columns=settings.extra_columns,
        ),
    )
