"""The model being served and its atomic replacement.

A request takes ``holder.current`` once and keeps that object to the end, so a reload that swaps in a
new model never changes the model under an in-flight request; the old one is freed when the last such
request is done.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import anyio.to_thread

from embedkit.projection import Projection
from embedkit.servable import Servable

from .schemas import ModelRef
from .scoring import Scorer

log = logging.getLogger("embedkit.service")


@dataclass(frozen=True)
class LoadedModel:
    """A servable with its request scorer and where it came from."""

    servable: Servable
    scorer: Scorer
    name: str
    version: str
    source: Literal["registry", "local"]
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    #: The explorer's 2-D projections, by column, computed on first use; they go with the model.
    projections: dict[str, Projection] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version)


class ModelHolder:
    """Holds the served model; loads and reloads it in a worker thread, one load at a time."""

    def __init__(self) -> None:
        self.current: LoadedModel | None = None
        self.status: Literal["loading", "ready", "failed"] = "loading"
        #: Called with each model swapped in (the app resets its OpenAPI schema and metrics there).
        self.on_swap: list[Callable[[LoadedModel], None]] = []
        self._lock = asyncio.Lock()

    async def load(self, load: Callable[[], LoadedModel]) -> tuple[LoadedModel | None, LoadedModel]:
        """Run ``load`` off the event loop, then swap the result in; returns ``(previous, new)``.

        On failure the current model (if any) stays in service and the exception propagates.
        """
        async with self._lock:
            try:
                new = await anyio.to_thread.run_sync(load)
            except Exception:
                if self.current is None:
                    self.status = "failed"
                raise
            previous, self.current = self.current, new
            self.status = "ready"
            for callback in self.on_swap:
                callback(new)
            return previous, new
