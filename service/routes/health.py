"""``GET /health`` (the process answers) and ``GET /ready`` (a model is loaded)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..deps import RETRY_AFTER, HolderDep
from ..schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get(
    "/health", response_model=HealthResponse, summary="Liveness: the server answers (no API key needed)"
)
async def health() -> HealthResponse:
    return HealthResponse()


@router.get(
    "/ready",
    response_model=ReadyResponse,
    summary="Readiness: a model is loaded",
    responses={503: {"model": ReadyResponse, "description": "the model is loading, or failed to load"}},
)
async def ready(holder: HolderDep) -> ReadyResponse | JSONResponse:
    model = holder.current
    if model is not None:
        return ReadyResponse(status="ready", model=model.ref)
    detail = (
        "the model failed to load; see the server log" if holder.status == "failed" else "loading the model"
    )
    body = ReadyResponse(status="failed" if holder.status == "failed" else "loading", detail=detail)
    return JSONResponse(body.model_dump(mode="json"), status_code=503, headers={"Retry-After": RETRY_AFTER})


# HEAD for probes and load balancers that only look at the status (the same answer without its body)
router.add_api_route(
    "/health", health, methods=["HEAD"], response_model=HealthResponse, include_in_schema=False
)
router.add_api_route("/ready", ready, methods=["HEAD"], response_model=ReadyResponse, include_in_schema=False)
