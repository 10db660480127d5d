"""The FastAPI application: ``create_app()``, or ``uvicorn service.app:create_app --factory``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

from anyio import CapacityLimiter
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from embedkit import __version__
from embedkit.inference import set_compute_threads

from . import errors
from .deps import reject_unknown_query
from .loader import describe_error, load_model
from .middleware import API_KEY_HEADER, APIKeyMiddleware, BodyLimitMiddleware
from .openapi import build_openapi
from .prometheus import Metrics, MetricsMiddleware, route_templates
from .routes import admin, docs, embeddings, explore, health, invocations, metadata, predict
from .routes import metrics as metrics_route
from .settings import Settings, get_settings
from .state import LoadedModel, ModelHolder

log = logging.getLogger("embedkit.service")
DESCRIPTION = "Predictions and entity embeddings from an embedkit model (see GET /metadata for its inputs)."


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service for ``settings`` (default: from ``EMBEDKIT_*`` environment variables)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="embedkit",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
        docs_url=None,  # FastAPI's pages load from CDNs; ours (routes/docs.py) from the service itself
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.holder = ModelHolder()
    app.state.metrics = Metrics()
    errors.install(app)
    modules = [health, predict, invocations, embeddings, metadata, metrics_route, admin, docs]
    if settings.explore:
        modules.append(explore)
    routers = [m.router for m in modules]
    for router in routers:
        app.include_router(router)
    app.openapi = partial(build_openapi, app)  # type: ignore[method-assign]
    # Added innermost first: metrics → CORS → API key → body limit → routes.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.auth_enabled:
        assert settings.api_key_value is not None
        app.add_middleware(APIKeyMiddleware, api_key=settings.api_key_value)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", API_KEY_HEADER],
        )
    # the templates in routing order (FastAPI's own /openapi.json first), for requests refused before routing
    templates = route_templates(app.routes) + [t for r in routers for t in route_templates(r.routes)]
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics, templates=templates)
    return app


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start loading the model (``/ready`` says when it is in); on shutdown, remove downloaded files."""
    settings: Settings = app.state.settings
    set_compute_threads(settings.compute_threads)
    app.state.limiter = CapacityLimiter(settings.inference_threads)
    cache = settings.model_cache_dir or Path(tempfile.mkdtemp(prefix="embedkit-models-"))
    app.state.load_model = partial(load_model, settings, cache)
    app.state.holder.on_swap.append(partial(_swapped, app))
    task = asyncio.create_task(_first_load(app))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if settings.model_cache_dir is None:
            shutil.rmtree(cache, ignore_errors=True)


async def _first_load(app: FastAPI) -> None:
    try:
        await app.state.holder.load(app.state.load_model)
    except Exception as exc:
        # one line: the cause, not MLflow's 40-line traceback (that is at debug level)
        log.error(
            "could not load the model %s: %s; /ready answers 503 (fix it, then POST /admin/reload or "
            "restart; EMBEDKIT_FAIL_FAST=1 makes embedkit serve exit instead)",
            app.state.settings.model_uri,
            describe_error(exc),
        )
        log.debug("model load traceback", exc_info=exc)


def _swapped(app: FastAPI, model: LoadedModel) -> None:
    app.openapi_schema = None  # the request schema is the new model's
    app.state.metrics.set_model(model.name, model.version)
