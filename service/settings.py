"""The service's settings: ``EMBEDKIT_*`` environment variables (or ``embedkit serve`` flags)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL_URI = "models:/embedkit-flights@champion"


class Settings(BaseSettings):
    """Everything the service reads from its environment; ``EMBEDKIT_MODEL_URI`` sets ``model_uri``, etc."""

    model_config = SettingsConfigDict(env_prefix="EMBEDKIT_", extra="ignore", frozen=True)

    #: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or a local servable directory. Read at start-up and
    #: on ``POST /admin/reload`` only; no client can name another location.
    model_uri: str = DEFAULT_MODEL_URI
    #: MLflow tracking/registry URI for ``models:/`` URIs; unset: ``MLFLOW_TRACKING_URI``, else
    #: ``sqlite:///<cwd>/mlflow.db`` (the pipelines' default store).
    tracking_uri: str | None = None
    #: Where registered models are downloaded; unset: a temporary directory removed at shutdown.
    model_cache_dir: Path | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)

    #: When set, every route but ``/health`` needs the header ``X-API-Key`` with this value, and
    #: ``POST /admin/reload`` is enabled. Unset: no authentication. Empty or blank: refused at start-up.
    api_key: SecretStr | None = None
    #: Most records in one ``/predict`` request (413 above).
    max_rows: int = Field(default=10_000, ge=1)
    #: Largest request body in bytes, checked from Content-Length and while streaming (413 above).
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    #: Record keys that are not model inputs: dropped ("ignore") or a 422 ("reject").
    extra_columns: Literal["ignore", "reject"] = "ignore"
    #: Origins allowed by CORS (comma-separated or a JSON list); empty: no CORS headers at all.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    #: Request bodies up to this size are scored on the event loop (no thread hop: the 1-row path);
    #: larger ones in a worker thread, so that health probes and small requests go on meanwhile.
    inline_max_bytes: int = Field(default=32 * 1024, ge=0)
    #: Worker threads scoring large requests at once.
    inference_threads: int = Field(default=2, ge=1)
    #: Threads of torch and of numpy's BLAS in the server process. One per worker process is fastest for
    #: request-sized batches and stays fast when the cores are shared; unset leaves the libraries' defaults.
    compute_threads: int | None = Field(default=1, ge=1)
    #: Seconds uvicorn waits for in-flight requests after SIGTERM before closing them.
    graceful_timeout: int = Field(default=30, ge=0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = False
    #: ``embedkit serve`` only: load the model before starting the server and exit 1, with one line on
    #: stderr, when it cannot load (for orchestrators that restart failed containers). Off: the server
    #: runs anyway, ``/ready`` answers 503 ``failed`` and ``POST /admin/reload`` can retry.
    fail_fast: bool = False
    #: Serve the embedding explorer (``GET /explore``, its files and ``GET /explore/data/{column}``);
    #: off: those paths answer 404.
    explore: bool = True

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                import json

                return json.loads(v)
            return [o.strip() for o in v.split(",") if o.strip()]
        return v

    @field_validator("api_key")
    @classmethod
    def _non_empty_key(cls, v: SecretStr | None) -> SecretStr | None:
        # An empty secret must not quietly mean "no authentication": that is how a template's
        # `EMBEDKIT_API_KEY=` or a missing secret mount would open every route.
        if v is not None and not v.get_secret_value().strip():
            raise ValueError(
                "EMBEDKIT_API_KEY is set but empty; set it to a secret, or unset it to run without "
                "authentication"
            )
        return v

    @property
    def auth_enabled(self) -> bool:
        """Whether requests need ``X-API-Key`` (and admin routes are on): the one rule, read everywhere."""
        return self.api_key is not None

    @property
    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key is not None else None


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment, read once per process (tests pass their own to ``create_app``)."""
    return Settings()
