"""Error responses: JSON bodies that name the field, never a stack trace, never the client's input echoed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

log = logging.getLogger("embedkit.service")

#: At most this many field errors are returned for one request (a bad 10,000-row body has many).
MAX_ERRORS = 20
#: Longest message returned; pydantic's messages are short, this only bounds surprises.
MAX_MESSAGE = 300


def field_errors(
    errors: Iterable[Mapping[str, Any]], prefix: tuple[str | int, ...] = ()
) -> list[dict[str, Any]]:
    """``loc``, ``msg`` and ``type`` of each error: pydantic's ``input`` and ``ctx`` are dropped."""
    out: list[dict[str, Any]] = []
    for err in errors:
        if len(out) == MAX_ERRORS:
            break
        loc = [*prefix, *(p if isinstance(p, int) else str(p)[:MAX_MESSAGE] for p in err.get("loc", ()))]
        out.append(
            {
                "loc": loc or ["body"],
                "msg": str(err.get("msg", ""))[:MAX_MESSAGE],
                "type": str(err.get("type", "value_error")),
            }
        )
    return out


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": field_errors(exc.errors())}, status_code=422)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not bad input: the traceback goes to the server log only.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)


async def send_json_error(
    send: Send, status: int, detail: str, headers: Mapping[str, str] | None = None
) -> None:
    """Answer from an ASGI middleware, before the app has seen the request."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
