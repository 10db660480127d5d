"""ASGI middlewares that answer before the app: the API key and the request body size limit."""

from __future__ import annotations

import hmac
from importlib import resources
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import send_json_error

API_KEY_HEADER = "X-API-Key"
_API_KEY_HEADER = API_KEY_HEADER.lower().encode("latin-1")
#: Routes open without the API key: liveness probes cannot carry secrets.
OPEN_PATHS = frozenset({"/health"})
#: The explorer's page and its two files take the key from the header or from this cookie, because a
#: browser cannot send a header when it opens a page; without either, ``GET /explore`` answers a 401 whose
#: HTML asks for the key (``static/key.html``) and sets the cookie. The page's requests for data (which
#: change nothing) send the key as the header, as every other client does.
KEY_COOKIE = "embedkit_api_key"
PAGE_PATHS = frozenset({"/explore", "/explore/assets/explore.js", "/explore/assets/explore.css"})
_KEY_PAGE_CSP = (
    b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; form-action 'none'"
)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


class APIKeyMiddleware:
    """Every request but ``OPEN_PATHS`` needs ``X-API-Key``, compared in constant time; 401 otherwise."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            page = scope["path"] in PAGE_PATHS
            given = _header(scope, _API_KEY_HEADER)
            if given is None and page:
                given = _cookie(scope, KEY_COOKIE)
            if given is None or not hmac.compare_digest(given, self.key):
                if page and scope["path"] == "/explore" and scope["method"] in ("GET", "HEAD"):
                    await _send_key_page(send)
                else:
                    await send_json_error(send, 401, f"missing or wrong API key (header {API_KEY_HEADER})")
                return
        await self.app(scope, receive, send)


def _cookie(scope: Scope, name: str) -> bytes | None:
    raw = _header(scope, b"cookie")
    if raw is None:
        return None
    for part in raw.decode("latin-1").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return unquote(value).encode("utf-8")
    return None


async def _send_key_page(send: Send) -> None:
    """The 401 of the explorer's page in a browser: a form that asks for the key (no model data)."""
    body = resources.files("service").joinpath("static/key.html").read_bytes()
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"content-security-policy", _KEY_PAGE_CSP),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with a 413: from Content-Length before reading anything, else
    while the body streams in. The app then gets the body in one piece, already bounded."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        chunked = _header(scope, b"transfer-encoding") is not None
        if length is not None:
            if not length.isdigit():
                await send_json_error(send, 400, "Content-Length is not a number")
                return
            if int(length) > self.max_bytes:
                await self._too_large(send)
                return
        if not chunked and (length is None or int(length) == 0):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await send_json_error(
            send, 413, f"request body too large: the limit is {self.max_bytes} bytes", {"Connection": "close"}
        )
