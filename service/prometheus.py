"""Prometheus metrics: requests and latency by route and status, prediction rows, unknown categories.

Each app has its own registry (several apps in one process, as in the tests, do not collide). With
several uvicorn workers each process answers ``/metrics`` for itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency buckets in seconds: sub-millisecond 1-row requests up to multi-second large batches.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"
#: The status counted for a request whose client went away before an answer was sent (nginx's 499):
#: not a 5xx, so that clients giving up do not page anyone.
CLIENT_CLOSED = 499


class Metrics:
    """The service's metrics in a registry of its own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # no `_created` series: they double the output and nobody graphs them
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("method", "route", "status")
        self.requests = Counter(
            "embedkit_http_requests_total", "HTTP requests answered", labels, registry=self.registry
        )
        self.latency = Histogram(
            "embedkit_http_request_duration_seconds",
            "Time to answer an HTTP request",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter(
            "embedkit_prediction_rows_total",
            "Rows scored by /predict and /invocations",
            registry=self.registry,
        )
        self.unknown = Counter(
            "embedkit_unknown_categories_total",
            "Categorical values scored with the 'unknown' embedding (unseen in training)",
            ("column",),
            registry=self.registry,
        )
        self.model_info = Gauge(
            "embedkit_model_info",
            "The model being served (value 1)",
            ("name", "version"),
            registry=self.registry,
        )
        self.reloads = Counter(
            "embedkit_model_reloads_total", "Model reloads by outcome", ("outcome",), registry=self.registry
        )
        # labels() costs a few microseconds (string conversion and a lock): keep the children.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._unknown_children: dict[str, Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route, str(status)),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_prediction(self, rows: int, unknown: dict[str, int]) -> None:
        self.rows.inc(rows)
        for column, n in unknown.items():
            if n:
                child = self._unknown_children.get(column)
                if child is None:
                    child = self._unknown_children[column] = self.unknown.labels(column)
                child.inc(n)

    def set_model(self, name: str, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times every HTTP request and counts it under its route template (``/embeddings/{column}/{value}``).

    ``templates`` are the app's path templates in routing order. A request answered before routing (401,
    413, a CORS pre-flight) is matched against them here, so that it is counted under the route it was
    aimed at; a request whose client disconnected before the answer is counted as status 499.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, templates: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = [(_label(t), compile_path(t)[0]) for t in templates]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: int | None = None
        disconnected = False

        async def receive_watching() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive_watching, send_with_status)
        finally:
            if status is None:  # nothing was answered: the client left, or a bug
                status = CLIENT_CLOSED if disconnected else 500
            self.metrics.observe_request(
                scope["method"], self._route(scope), status, time.perf_counter() - start
            )

    def _route(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return _label(path)
        return self.match(scope["path"])

    def match(self, path: str) -> str:
        """The template of the first route whose path matches ``path``, else ``unmatched``."""
        for template, regex in self.templates:
            if regex.match(path):
                return template
        return UNMATCHED


def _label(template: str) -> str:
    """The template as documented: ``{value:path}`` is labelled ``{value}``."""
    return _CONVERTOR.sub(r"{\1}", template)


_CONVERTOR = re.compile(r"\{(\w+):\w+\}")


def route_templates(routes: Iterable[Any]) -> list[str]:
    """The path templates of ``routes`` (an app's or a router's), in routing order."""
    out: list[str] = []
    for route in routes:
        path = getattr(route, "path", None)
        if isinstance(path, str):
            out.append(path)
    return out
