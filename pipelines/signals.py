"""SIGTERM handled like Ctrl-C: raised as :class:`Terminated` in the main thread, so that ``finally``
blocks run (temporary files removed, MLflow runs marked KILLED) and the command exits with 143."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

#: Exit status of a command stopped by SIGTERM (128 + 15), as a shell reports it.
EXIT_TERMINATED = 128 + signal.SIGTERM
#: Exit status of a command stopped by Ctrl-C (128 + 2).
EXIT_INTERRUPTED = 128 + signal.SIGINT


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so runs end KILLED like on Ctrl-C."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` inside the block (main thread only; elsewhere a no-op)."""

    def on_term(signum: int, frame: Any) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
