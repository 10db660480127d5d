"""The explorer's routes and the offline docs pages, in-process (FastAPI TestClient); the pages in a real
browser are tests/test_browser.py."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _servables import build_clustered_servable
from fastapi.testclient import TestClient
from test_service_support import API_KEY

from embedkit.projection import project_table
from embedkit.servable import load_servable
from service.app import create_app
from service.routes import explore
from service.settings import Settings

ClientFactory = Callable[..., TestClient]


@pytest.fixture(scope="module")
def servable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_clustered_servable(tmp_path_factory.mktemp("explore"), n_items=500)


@pytest.fixture
def make_client(servable: Path) -> Iterator[ClientFactory]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = Settings(model_uri=str(servable), compute_threads=None, **overrides)
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        headers = {"X-API-Key": API_KEY} if settings.api_key else None
        deadline = time.monotonic() + 30
        while client.get("/ready", headers=headers).status_code != 200:
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.02)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()


# ---- the data route --------------------------------------------------------------------------------
def test_data_lists_every_row_with_its_projection(client: TestClient, servable: Path) -> None:
    r = client.get("/explore/data/item")
    assert r.status_code == 200, r.text
    body = r.json()
    table = load_servable(servable).tables["item"]
    n = len(table.vocab.values)
    assert body["column"] == "item" and body["dim"] == table.dim == 8
    assert body["categories"] == body["shown"] == n
    assert body["category"] == [None, None, *table.vocab.values]
    assert body["kind"] == ["missing", "unknown"] + ["value"] * n
    assert body["count"] == [37, 120, *table.vocab.counts]
    expected = project_table(table)
    np.testing.assert_allclose(np.column_stack([body["x"], body["y"]]), expected.xy, atol=1e-4)
    assert body["explained_variance"] == [round(v, 4) for v in expected.explained]
    assert client.get("/explore/data/item").json() == body  # deterministic (and cached)


def test_integer_categories_stay_integers(client: TestClient) -> None:
    body = client.get("/explore/data/level").json()
    assert body["category"][:4] == [None, None, 0, 1]
    # what the page sends on a click: the category as text, read back as the column's type
    r = client.get(f"/embeddings/level/{body['category'][3]}/neighbors", params={"k": 3})
    assert r.status_code == 200 and r.json()["kind"] == "value"


def test_limit_keeps_the_most_frequent_in_code_order(client: TestClient) -> None:
    full = client.get("/explore/data/item").json()
    body = client.get("/explore/data/item", params={"limit": 5}).json()
    assert body["shown"] == 5 and body["categories"] == full["categories"]
    counts = full["count"][2:]
    top = sorted(np.argsort(-np.asarray(counts), kind="stable")[:5].tolist())
    assert body["category"] == [None, None, *(full["category"][2 + i] for i in top)]
    assert body["x"][2:] == [full["x"][2 + i] for i in top]  # the same points, not a new projection
    assert body["kind"][:2] == ["missing", "unknown"]


@pytest.mark.parametrize("limit", ["0", "-1", str(explore.MAX_LIMIT + 1), "many"])
def test_bad_limit_is_a_422_naming_it(client: TestClient, limit: str) -> None:
    r = client.get("/explore/data/item", params={"limit": limit})
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["detail"]] == [["query", "limit"]]


def test_unknown_column_and_unknown_query(client: TestClient) -> None:
    r = client.get("/explore/data/no-such-column")
    assert r.status_code == 404
    assert "embedded columns: ['city', 'item', 'level']" in r.json()["detail"]
    assert "no-such-column" not in r.text  # not echoed
    r = client.get("/explore/data/item", params={"lmit": 5})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "lmit"]


def test_the_projection_is_computed_once_per_model(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def counting(table: Any) -> Any:
        calls.append(table.name)
        return project_table(table)

    monkeypatch.setattr(explore, "project_table", counting)
    for _ in range(3):
        assert client.get("/explore/data/city").status_code == 200
    assert calls == ["city"]


def test_openapi_lists_the_data_route_with_the_columns(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    param = schema["paths"]["/explore/data/{column}"]["get"]["parameters"][0]
    assert param["name"] == "column" and param["schema"]["enum"] == ["city", "item", "level"]
    assert not [p for p in schema["paths"] if p in ("/explore", "/docs", "/redoc") or "assets" in p]


def test_metrics_count_the_route_template(client: TestClient) -> None:
    client.get("/explore/data/item")
    client.get("/explore")
    text = client.get("/metrics").text
    assert 'route="/explore/data/{column}",status="200"' in text
    assert 'route="/explore",status="200"' in text


# ---- the page ----------------------------------------------------------------------------------------
def test_the_page_and_its_files_load_only_from_the_service(client: TestClient) -> None:
    r = client.get("/explore")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    urls = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert set(urls) == {"explore/assets/explore.css", "explore/assets/explore.js", "docs", "data:,"}
    for name, media_type in explore.ASSETS.items():
        asset = client.get(f"/explore/assets/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media_type)
        assert "http://" not in asset.text and "https://" not in asset.text, name
    assert client.get("/explore/assets/explore.html").status_code == 404
    assert client.get("/explore/assets/..%2Fsettings.py").status_code == 404


def test_explore_off_answers_404(make_client: ClientFactory) -> None:
    client = make_client(explore=False)
    for path in ["/explore", "/explore/assets/explore.js", "/explore/data/item"]:
        assert client.get(path).status_code == 404, path
    assert "/explore/data/{column}" not in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_explore_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDKIT_EXPLORE", "false")
    assert Settings().explore is False
    monkeypatch.setenv("EMBEDKIT_EXPLORE", "maybe")
    with pytest.raises(ValueError, match="explore"):
        Settings()


def test_with_a_key_the_page_needs_it_too(make_client: ClientFactory) -> None:
    client = make_client(api_key=API_KEY)
    key = {"X-API-Key": API_KEY}
    pages = ["/explore", "/explore/assets/explore.js", "/explore/assets/explore.css"]
    # without the key, the page answers a 401 whose HTML asks for it (and shows no model data)
    r = client.get("/explore")
    assert r.status_code == 401 and r.headers["content-type"].startswith("text/html")
    assert 'id="key-form"' in r.text and "item-0" not in r.text and "explore-test" not in r.text
    assert r.headers["cache-control"] == "no-store"
    for path in pages[1:]:
        assert client.get(path).status_code == 401, path
    # with the key as the header, or as the cookie the key page sets, the page and its files load
    for path in pages:
        assert client.get(path, headers=key).status_code == 200, path
        cookie = {"Cookie": f"other=1; embedkit_api_key={API_KEY}"}
        assert client.get(path, headers=cookie).status_code == 200, path
        assert client.get(path, headers={"Cookie": "embedkit_api_key=wrong"}).status_code == 401, path
    # the cookie opens the page only: the data it shows needs the header
    for path in [
        "/explore/data/item",
        "/metadata",
        "/embeddings/item/item-00001/neighbors",
        "/docs",
        "/redoc",
        "/docs/assets/swagger-ui-bundle.js",
        "/explore/",
        "/explore/assets/../data/item",
    ]:
        for headers in [{}, {"X-API-Key": "wrong"}, {"Cookie": f"embedkit_api_key={API_KEY}"}]:
            r = client.get(path, headers=headers)
            assert r.status_code == 401 and r.headers["content-type"] == "application/json", (path, headers)
    assert client.get("/explore/data/item", headers=key).status_code == 200
    assert client.get("/docs", headers=key).status_code == 200


# ---- /docs and /redoc without a network ---------------------------------------------------------------
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_name_no_other_site(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-security-policy"].startswith("default-src 'self'")
    urls = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert urls and all(u.startswith("/docs/assets/") for u in urls), urls
    assert "cdn." not in r.text and "googleapis" not in r.text
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
        assert asset.headers["cache-control"] == "max-age=3600"
    assert client.get("/docs/assets/index.html").status_code == 404


def test_docs_behind_a_path_prefix(servable: Path) -> None:
    settings = Settings(model_uri=str(servable), compute_threads=None)
    with TestClient(create_app(settings), root_path="/svc") as client:
        html = client.get("/docs").text
    assert 'src="/svc/docs/assets/swagger-ui-bundle.js"' in html and "url: '/svc/openapi.json'" in html


def test_embedkit_serve_flag() -> None:
    from service.cli import build_parser

    assert build_parser().parse_args(["--no-explore"]).explore is False
    assert build_parser().parse_args([]).explore is None  # the setting's default (on) then applies
