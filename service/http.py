"""uvicorn's h11 HTTP protocol, answering requests it cannot parse with the service's JSON error body.

h11 refuses a malformed request (a ``Content-Length`` that is not a number, a broken header line) before
any ASGI code runs, and uvicorn answers it with a plain-text 400. ``embedkit serve`` uses this protocol so
that those 400s are JSON like every other error; with uvicorn directly, pass
``--http service.http:JSONErrorH11Protocol``.
"""

from __future__ import annotations

import json
import sys

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: What a client gets for a request h11 cannot parse (the Content-Length one is the documented case).
BAD_LENGTH = "Content-Length is not a number"
MALFORMED = "malformed HTTP request: check the request line and the headers"


def bad_request_detail(exc: BaseException | None) -> str:
    """The error body's detail for h11's parse error ``exc`` (never the client's bytes)."""
    return BAD_LENGTH if exc is not None and "content-length" in str(exc).lower() else MALFORMED


class JSONErrorH11Protocol(H11Protocol):
    """``H11Protocol`` whose 400 for an unparsable request is ``{"detail": ...}`` JSON."""

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this inside its `except h11.RemoteProtocolError` block: the error is the active one
        body = json.dumps({"detail": bad_request_detail(sys.exc_info()[1])}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()
