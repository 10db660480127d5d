"""The service loading registered MLflow models (``models:/NAME@ALIAS``) and what it imports."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_service_support import API_KEY, RECORD, ROOT, build_net_servable, register

from embedkit.exceptions import FormatError
from service.app import create_app
from service.loader import find_servable
from service.settings import Settings

NAME = "svc-registry-test"
KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A private sqlite MLflow store with version 1 (a binary net) behind ``NAME@champion``."""
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # anything MLflow writes by default lands here
        uri = f"sqlite:///{root / 'mlflow.db'}"
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        servable = build_net_servable(root / "v1", name="v1")
        version = register(uri, servable, NAME, "champion", root / "artifacts")
        yield {"root": root, "uri": uri, "version": version}


def started(settings: Settings) -> TestClient:
    client = TestClient(create_app(settings))
    client.__enter__()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = client.get("/ready", headers=KEY).json()
        if ready["status"] != "loading":
            break
        time.sleep(0.05)
    return client


def test_alias_uri_serves_the_registered_version_and_reload_picks_up_a_new_one(store: dict[str, Any]) -> None:
    cache = store["root"] / "cache"
    settings = Settings(
        model_uri=f"models:/{NAME}@champion",
        tracking_uri=store["uri"],
        model_cache_dir=cache,
        api_key=API_KEY,
        compute_threads=None,
    )
    client = started(settings)
    try:
        meta = client.get("/metadata", headers=KEY).json()
        assert meta["model"]["name"] == NAME and meta["model"]["version"] == store["version"]
        assert meta["model"]["source"] == "registry"
        body = client.post("/predict", json={"records": [RECORD]}, headers=KEY).json()
        assert body["model"] == {"name": NAME, "version": store["version"]} and body["classes"] == [0, 1]
        # the servable was found inside the pyfunc model's artifacts
        assert list(cache.rglob("artifacts/servable/servable.json"))

        # a new version behind the alias: picked up by /admin/reload, without a restart
        new = register(
            store["uri"],
            build_net_servable(store["root"] / "v2", task="multiclass", name="v2"),
            NAME,
            "champion",
            store["root"] / "artifacts",
        )
        reloaded = client.post("/admin/reload", headers=KEY).json()
        assert reloaded["changed"] is True and reloaded["current"] == {"name": NAME, "version": new}
        body = client.post("/predict", json={"records": [RECORD]}, headers=KEY).json()
        assert body["model"]["version"] == new and body["classes"] == ["high", "low", "mid"]
        again = client.post("/admin/reload", headers=KEY).json()
        assert again["changed"] is False
    finally:
        client.__exit__(None, None, None)


def test_pinned_version_uri(store: dict[str, Any]) -> None:
    client = started(
        Settings(
            model_uri=f"models:/{NAME}/{store['version']}", tracking_uri=store["uri"], compute_threads=None
        )
    )
    try:
        assert client.get("/ready").json()["model"] == {"name": NAME, "version": store["version"]}
    finally:
        client.__exit__(None, None, None)


@pytest.mark.parametrize(
    "uri", [f"models:/{NAME}@no-such-alias", "models:/no-such-model@champion", f"models:/{NAME}", "models:/"]
)
def test_unresolvable_registry_uris_fail_readiness(store: dict[str, Any], uri: str) -> None:
    client = started(Settings(model_uri=uri, tracking_uri=store["uri"], compute_threads=None))
    try:
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "failed"
        assert client.post("/predict", json={"records": [RECORD]}).status_code == 503
    finally:
        client.__exit__(None, None, None)


def test_find_servable(tmp_path: Path) -> None:
    (tmp_path / "m" / "artifacts" / "servable").mkdir(parents=True)
    (tmp_path / "m" / "artifacts" / "servable" / "servable.json").write_text("{}")
    assert find_servable(tmp_path / "m") == tmp_path / "m" / "artifacts" / "servable"
    with pytest.raises(FormatError, match="no embedkit servable"):
        find_servable(tmp_path / "m" / "artifacts" / "nothing")
    (tmp_path / "m" / "other").mkdir()
    (tmp_path / "m" / "other" / "servable.json").write_text("{}")
    assert find_servable(tmp_path / "m") == tmp_path / "m" / "artifacts" / "servable"


def test_the_service_imports_no_training_code_and_no_mlflow_for_a_local_model(tmp_path: Path) -> None:
    servable = build_net_servable(tmp_path)
    code = f"""
import sys, time
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings
with TestClient(create_app(Settings(model_uri={str(servable)!r}, compute_threads=None))) as c:
    while c.get("/ready").status_code != 200:
        time.sleep(0.05)
    assert c.post("/predict", json={{"records": [{RECORD!r}]}}).status_code == 200
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("mlflow", "pipelines")
             or m in ("embedkit.nn.trainer", "embedkit.nn.learner", "embedkit.nn.lr_finder"))
print(bad)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_downloads_draw_no_mlflow_progress_bars(
    store: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from service.loader import download_registered

    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    capfd.readouterr()
    settings = Settings(model_uri=f"models:/{NAME}@champion", tracking_uri=store["uri"])
    resolved = download_registered(settings.model_uri, settings, tmp_path / "cache")
    assert (resolved.path / "servable.json").is_file()
    err = capfd.readouterr().err
    assert "Downloading artifacts" not in err and "%|" not in err, err[-2000:]
