"""SIGTERM as an exception (pipelines/signals.py): never lost, never a stray traceback."""

from __future__ import annotations

import gc
import os
import signal

import pytest

from pipelines.signals import Terminated, sigterm_raises


def test_sigterm_raises_terminated_in_the_block() -> None:
    with pytest.raises(Terminated), sigterm_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    assert signal.getsignal(signal.SIGTERM) is not None


def test_a_sigterm_landing_in_a_finalizer_is_not_lost(capsys: pytest.CaptureFixture[str]) -> None:
    class SignalsOnDelete:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs inside __del__: Python drops its error
            for _ in range(1000):
                pass

    ran_on = False
    with pytest.raises(Terminated), sigterm_raises():
        obj = SignalsOnDelete()
        del obj
        gc.collect()
        ran_on = True  # the block went on: the exception raised in __del__ was swallowed there
    assert ran_on
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err, err
