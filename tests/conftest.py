"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def mlflow_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private MLflow store for one test: ``sqlite:///<tmp_path>/mlflow.db``, with the working directory
    at ``tmp_path`` (so ``mlruns/`` and ``runs/`` land there too). Returns the tracking URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri
