"""``POST /admin/reload``: load the model behind the configured URI again and swap it in atomically."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request

from ..deps import HolderDep, MetricsDep, SettingsDep
from ..loader import describe_error
from ..schemas import ErrorBody, ReloadResponse

router = APIRouter(prefix="/admin", tags=["admin"])
log = logging.getLogger("embedkit.service")


@router.post(
    "/reload",
    response_model=ReloadResponse,
    summary="Pick up a new model version behind the configured URI",
    description="Loads the configured model URI again (a new version behind the alias, or a replaced "
    "directory) and swaps it in; requests in flight finish on the previous model. Needs the API "
    "key; disabled when none is configured. No location can be passed: only the configured one "
    "is ever loaded.",
    responses={
        403: {"model": ErrorBody, "description": "no API key is configured, so admin routes are off"},
        503: {"model": ErrorBody, "description": "the reload failed; the current model stays in service"},
    },
)
async def reload(
    request: Request, holder: HolderDep, settings: SettingsDep, metrics: MetricsDep
) -> ReloadResponse:
    if not settings.auth_enabled:
        raise HTTPException(403, detail="admin routes are disabled: set EMBEDKIT_API_KEY to enable them")
    try:
        previous, current = await holder.load(request.app.state.load_model)
    except Exception as exc:
        log.error("model reload failed: %s; the current model stays in service", describe_error(exc))
        log.debug("model reload traceback", exc_info=exc)
        metrics.reloads.labels("failed").inc()
        raise HTTPException(
            503, detail="the reload failed; the current model stays in service (see the server log)"
        ) from None
    changed = previous is None or (previous.name, previous.version) != (current.name, current.version)
    metrics.reloads.labels("changed" if changed else "unchanged").inc()
    return ReloadResponse(changed=changed, previous=previous.ref if previous else None, current=current.ref)
