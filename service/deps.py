"""Dependencies of the routes, as ``Annotated`` shorthands.

They are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in a worker
thread, a hop that would cost more than the whole 1-row prediction. Everything comes from the app the
request reached (``create_app`` puts its settings, model holder and
metrics on ``app.state``), so several apps with different settings can live in one process.
"""

from __future__ import annotations

from typing import Annotated, Any

from anyio import CapacityLimiter
from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError

from .prometheus import Metrics
from .settings import Settings
from .state import LoadedModel, ModelHolder

#: Seconds a client should wait before asking again while the model loads.
RETRY_AFTER = "5"


async def app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def model_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


async def current_model(request: Request) -> LoadedModel:
    """The model serving this request; it stays the same for the whole request even if a reload swaps it."""
    model = request.app.state.holder.current
    if model is None:
        raise HTTPException(
            503, detail="the model is not loaded yet; see GET /ready", headers={"Retry-After": RETRY_AFTER}
        )
    return model


async def app_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def inference_limiter(request: Request) -> CapacityLimiter:
    return request.app.state.limiter


def _query_names(dependant: Any) -> set[str]:
    names = {f.alias for f in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def reject_unknown_query(request: Request) -> None:
    """Query parameters a route does not take are refused (422), like unknown record keys: a typo such
    as ``?K=5`` must not silently fall back to a default."""
    if not request.scope.get("query_string"):
        return
    dependant = getattr(request.scope.get("route"), "dependant", None)
    allowed = _query_names(dependant) if dependant is not None else set()
    unknown = [name for name in request.query_params if name not in allowed]
    if unknown:
        raise RequestValidationError(
            [
                {"loc": ("query", name[:100]), "msg": "Unknown query parameter", "type": "extra_forbidden"}
                for name in unknown
            ]
        )


SettingsDep = Annotated[Settings, Depends(app_settings)]
HolderDep = Annotated[ModelHolder, Depends(model_holder)]
ModelDep = Annotated[LoadedModel, Depends(current_model)]
MetricsDep = Annotated[Metrics, Depends(app_metrics)]
LimiterDep = Annotated[CapacityLimiter, Depends(inference_limiter)]
