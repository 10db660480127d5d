"""``embedkit serve``: run the service with uvicorn. Flags override ``EMBEDKIT_*`` environment variables."""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from .settings import DEFAULT_MODEL_URI, Settings, get_settings

log = logging.getLogger("embedkit.service")

#: flag → setting; every value goes through the environment so that each uvicorn worker reads the same.
FLAGS = {
    "--model-uri": (
        "model_uri",
        f"models:/NAME@ALIAS, models:/NAME/VERSION or a servable directory (default {DEFAULT_MODEL_URI})",
    ),
    "--tracking-uri": (
        "tracking_uri",
        "MLflow tracking URI for models:/ (default MLFLOW_TRACKING_URI, else ./mlflow.db)",
    ),
    "--model-cache-dir": (
        "model_cache_dir",
        "where registered models are downloaded (default: a temporary directory removed at exit)",
    ),
    "--host": ("host", "address to bind (default 127.0.0.1)"),
    "--port": ("port", "port (default 8000)"),
    "--workers": ("workers", "uvicorn worker processes (default 1)"),
    "--max-rows": ("max_rows", "most records per /predict request (default 10000)"),
    "--max-body-bytes": ("max_body_bytes", "largest request body (default 10 MiB)"),
    "--extra-columns": ("extra_columns", "record keys that are not model inputs: ignore (default) or reject"),
    "--cors-origins": ("cors_origins", "comma-separated origins allowed by CORS (default: none, CORS off)"),
    "--inference-threads": ("inference_threads", "threads scoring large requests at once (default 2)"),
    "--compute-threads": ("compute_threads", "torch/BLAS threads per worker (default 1)"),
    "--graceful-timeout": (
        "graceful_timeout",
        "seconds to finish in-flight requests after SIGTERM (default 30)",
    ),
    "--log-level": ("log_level", "critical, error, warning, info (default) or debug"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedkit serve",
        description="Serve an embedkit model over HTTP (POST /predict, GET /embeddings/..., /health, /ready, "
        "/metadata, /metrics; docs at /docs). The API key is read from EMBEDKIT_API_KEY only, "
        "never from a flag (flags show in the process list).",
    )
    for flag, (_, help_text) in FLAGS.items():
        parser.add_argument(flag, dest=FLAGS[flag][0], default=None, help=help_text)
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log every request (default off: /metrics counts them)",
    )
    parser.add_argument(
        "--fail-fast",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="load the model before serving and exit 1 if it cannot load (default off: serve anyway, "
        "/ready answers 503 until POST /admin/reload succeeds)",
    )
    parser.add_argument(
        "--explore",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve the embedding explorer at /explore (default on)",
    )
    return parser


def log_config(level: str) -> dict:
    """uvicorn's logging set-up, with the service's logger on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["embedkit"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT (in-flight requests finish first); returns the exit code."""
    import uvicorn

    args = list(argv) if argv is not None else None
    if args and args[0] == "serve":
        args = args[1:]
    options = vars(build_parser().parse_args(args))
    for name, value in options.items():
        if value is not None:
            os.environ[f"EMBEDKIT_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else value
    get_settings.cache_clear()
    try:
        settings = get_settings()
    except ValidationError as exc:
        logging.basicConfig(format="%(levelname)s: %(message)s")
        for err in exc.errors(include_url=False):
            name = "EMBEDKIT_" + ".".join(map(str, err["loc"])).upper()
            log.error("invalid setting %s: %s", name, err["msg"].removeprefix("Value error, "))
        return 2
    if settings.fail_fast and not model_loads(settings):
        return 1
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level),
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.graceful_timeout,
        http="service.http:JSONErrorH11Protocol",  # a request h11 cannot parse gets a JSON 400 too
    )
    return 0


def model_loads(settings: Settings) -> bool:
    """``--fail-fast``: load the model once before the server starts; on failure, one line on stderr.

    The server then loads it again (each worker its own copy); this load only proves that it can.
    """
    from .loader import describe_error, load_model

    try:
        if settings.model_cache_dir is not None:
            load_model(settings, settings.model_cache_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="embedkit-models-") as cache:
                load_model(settings, Path(cache))
    except Exception as exc:
        sys.stderr.write(
            f"error: cannot load the model {settings.model_uri}: {describe_error(exc)} "
            "(--fail-fast / EMBEDKIT_FAIL_FAST: not serving)\n"
        )
        return False
    return True
