"""SIGTERM handled like Ctrl-C: raised as :class:`Terminated` in the main thread, so that ``finally``
blocks run (temporary files removed, MLflow runs marked KILLED) and the command exits with 143."""

from __future__ import annotations

import contextlib
import signal
import sys
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
    """Turn SIGTERM into :class:`Terminated` inside the block (main thread only; elsewhere a no-op).

    A signal handler runs wherever the main thread is, which can be a finalizer or a weakref callback
    whose exceptions Python ignores (printing "Exception ignored in ..." with a traceback). There the
    exception is dropped silently and raised again when the block ends, so that a SIGTERM is never lost.
    """
    signalled = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal signalled
        signalled = True
        raise Terminated()

    def unraisable(info: Any) -> None:
        if not isinstance(info.exc_value, Terminated):
            previous_hook(info)

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook
    if signalled:  # the Terminated raised by the handler was swallowed where it landed
        raise Terminated()
