"""Find and load the served model: a registered MLflow model (``models:/NAME@ALIAS``) or a local directory.

The resolution itself is :mod:`embedkit.model_uri` (shared with batch scoring; the only place mlflow is
imported, and only for ``models:/`` URIs); this module adds the service's settings and the request scorer.
"""

from __future__ import annotations

import logging
from pathlib import Path

from embedkit.model_uri import (
    REGISTRY_SCHEME,
    ResolvedModel,
    default_tracking_uri,
    find_servable,
    resolve_local,
)
from embedkit.model_uri import download_registered as _download_registered
from embedkit.servable import load_servable

from .scoring import Scorer
from .settings import Settings
from .state import LoadedModel

log = logging.getLogger("embedkit.service")

__all__ = ["REGISTRY_SCHEME", "describe_error", "download_registered", "find_servable", "load_model"]

#: Longest cause of a failed load written to the log (MLflow's messages can run to many lines).
MAX_CAUSE = 300


def describe_error(exc: BaseException) -> str:
    """A failed load's cause in one line: the exception's type and the first line of its message."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > MAX_CAUSE:
        first = first[:MAX_CAUSE] + "…"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def tracking_uri(settings: Settings) -> str:
    """``EMBEDKIT_TRACKING_URI``, else ``MLFLOW_TRACKING_URI``, else the pipelines' ``./mlflow.db``."""
    return default_tracking_uri(settings.tracking_uri)


def download_registered(uri: str, settings: Settings, cache_dir: Path) -> ResolvedModel:
    """:func:`embedkit.model_uri.download_registered` with the service's tracking URI."""
    return _download_registered(uri, tracking_uri(settings), cache_dir)


def load_model(settings: Settings, cache_dir: Path) -> LoadedModel:
    """Load the model ``settings.model_uri`` names, with its request scorer (blocking: run it in a thread)."""
    uri = settings.model_uri
    registry = uri.startswith(REGISTRY_SCHEME)
    resolved = download_registered(uri, settings, cache_dir) if registry else resolve_local(uri)
    servable = load_servable(resolved.path)
    scorer = Scorer(servable, max_rows=settings.max_rows, extra_columns=settings.extra_columns)
    log.info(
        "loaded model %s version %s (%s, %s)", resolved.name, resolved.version, servable.kind, servable.task
    )
    return LoadedModel(servable, scorer, resolved.name, resolved.version, "registry" if registry else "local")
