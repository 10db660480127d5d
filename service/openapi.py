"""The OpenAPI document, completed with what only the loaded model knows: the type of each record value."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .middleware import API_KEY_HEADER, OPEN_PATHS
from .routes import invocations

REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "APIKeyHeader"


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus what the loaded model says: the ``PredictRequest`` record types (and the
    ``/invocations`` formats built on them) and the embedded columns; rebuilt after each model swap."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    model = app.state.holder.current
    if model is not None:
        body = model.scorer.request_json_schema(REF)
        schemas.update(body.pop("$defs", {}))
        schemas["PredictRequest"] = body
        schema["paths"]["/predict"]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="PredictRequest")}}},
        }
        record_ref = body["properties"]["records"]["items"]["$ref"]
        record = schemas[record_ref.rsplit("/", 1)[-1]]
        schema["paths"]["/invocations"]["post"]["requestBody"] = invocations.request_body(
            record_ref,
            model.scorer.max_rows,
            columns=record["properties"],
            closed=record.get("additionalProperties") is False,
        )
        embedded = sorted(model.servable.tables)
        for path, operations in schema["paths"].items():
            if path.startswith(("/embeddings/", "/explore/data/")):
                for operation in operations.values():
                    for param in operation.get("parameters", []):
                        if param["name"] == "column" and param["in"] == "path":
                            param["schema"] = {**param["schema"], "enum": embedded}
    for operations in schema["paths"].values():
        for operation in operations.values():  # unknown query parameters are refused everywhere
            operation["responses"].setdefault(
                "422",
                {
                    "description": "Validation Error",
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(model="ValidationErrorBody")}}
                    },
                },
            )
    if app.state.settings.auth_enabled:
        components["securitySchemes"] = {
            SECURITY_SCHEME: {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
        }
        for path, operations in schema["paths"].items():
            if path in OPEN_PATHS:
                continue
            for operation in operations.values():
                operation["security"] = [{SECURITY_SCHEME: []}]
                operation["responses"].setdefault(
                    "401",
                    {
                        "description": f"missing or wrong {API_KEY_HEADER}",
                        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}},
                    },
                )
    app.openapi_schema = schema
    return schema
