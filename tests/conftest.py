"""Fixtures shared by the test modules."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

# py4j (pyspark's bridge to the JVM) logs at INFO from finalizers while the interpreter shuts down,
# after pytest has closed its capture streams: "--- Logging error --- ... I/O operation on closed file"
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture
def mlflow_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private MLflow store for one test: ``sqlite:///<tmp_path>/mlflow.db``, with the working directory
    at ``tmp_path`` (so ``mlruns/`` and ``runs/`` land there too). Returns the tracking URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri
