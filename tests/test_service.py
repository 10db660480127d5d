"""The service in-process (FastAPI TestClient): every route, every bad input, the API key, CORS, reloads."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_service_support import API_KEY, RECORD, build_net_servable, build_pipeline_servable

from embedkit.servable import load_servable
from service.app import create_app
from service.settings import Settings

ClientFactory = Callable[..., TestClient]


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def servables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("servables")
    return {
        "binary": build_net_servable(root / "binary"),
        "multiclass": build_net_servable(root / "multiclass", task="multiclass"),
        "regression": build_net_servable(root / "regression", task="regression"),
        "dates": build_net_servable(root / "dates", dates=True),
    }


def wait_ready(client: TestClient, headers: dict[str, str] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/ready", headers=headers).status_code == 200:
            return
        time.sleep(0.02)
    raise TimeoutError(client.get("/ready", headers=headers).json())


@pytest.fixture
def make_client(servables: dict[str, Path]) -> Iterator[ClientFactory]:
    """``make_client(model="binary", **settings)``: a started app (lifespan run, model loaded)."""
    clients: list[TestClient] = []

    def make(
        model: str | Path = "binary",
        wait: bool = True,
        raise_server_exceptions: bool = True,
        **overrides: Any,
    ) -> TestClient:
        uri = str(servables[model]) if isinstance(model, str) and model in servables else str(model)
        settings = Settings(model_uri=uri, compute_threads=None, **overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        clients.append(client)
        if wait:
            wait_ready(client, {"X-API-Key": API_KEY} if settings.api_key else None)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(servables: dict[str, Path]) -> Iterator[TestClient]:
    with TestClient(
        create_app(
            Settings(
                model_uri=str(servables["binary"]), compute_threads=None, max_rows=50, max_body_bytes=20_000
            )
        )
    ) as c:
        wait_ready(c)
        yield c


def records(n: int = 1, **changes: Any) -> dict[str, Any]:
    return {"records": [{**RECORD, **changes} for _ in range(n)]}


def assert_field_error(response: Any, status: int, *loc: str | int) -> dict[str, Any]:
    """A JSON error naming ``loc`` (under ``body``), with no echo of the input."""
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["detail"], list)
    locs = [tuple(e["loc"]) for e in body["detail"]]
    assert ("body", *loc) in locs, locs
    for err in body["detail"]:
        assert set(err) == {"loc", "msg", "type"}
    return body


# ---- routes ----------------------------------------------------------------------------------------
def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_ready_and_metadata(client: TestClient, servables: dict[str, Path]) -> None:
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["model"]["name"] == "svc-test"
    meta = client.get("/metadata").json()
    assert meta["model"]["version"] == ready["model"]["version"]
    assert meta["model"] | {"loaded_at": None} == {
        "name": "svc-test",
        "version": ready["model"]["version"],
        "source": "local",
        "kind": "net",
        "task": "binary",
        "loaded_at": None,
    }
    assert meta["input_schema"] == load_servable(servables["binary"]).input_schema
    assert {e["name"]: e["dim"] for e in meta["embeddings"]} == {
        c: t.weights.shape[1] for c, t in load_servable(servables["binary"]).tables.items()
    }
    assert meta["limits"] == {"max_rows": 50, "max_body_bytes": 20_000, "extra_columns": "ignore"}
    assert meta["classes"] == [0, 1]


def test_predict_binary_matches_the_servable(client: TestClient, servables: dict[str, Path]) -> None:
    rows = [
        RECORD,
        {**RECORD, "city": None, "amount": None},
        {**RECORD, "city": "never-seen", "level": 99},
        {**RECORD, "flag": False, "score": 3.5},
    ]
    r = client.post("/predict", json={"records": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    servable = load_servable(servables["binary"])
    frame = pd.DataFrame(rows).astype({"amount": "float64"})
    np.testing.assert_allclose(np.array(body["probabilities"]), servable.predict_proba(frame), atol=1e-5)
    assert body["predictions"] == servable.predict(frame).tolist()
    assert body["classes"] == [0, 1]
    assert body["model"] == client.get("/ready").json()["model"]
    assert body["unknown"] == {"city": 1, "level": 1, "flag": 0} == servable.unknown_counts(frame)


@pytest.mark.parametrize("task", ["multiclass", "regression", "dates"])
def test_predict_other_models(make_client: ClientFactory, servables: dict[str, Path], task: str) -> None:
    extra = {"when": "2024-03-01T10:00:00+02:00"} if task == "dates" else {}
    rows = [{**RECORD, **extra}, {**RECORD, **extra, "city": "zzz", "level": None}]
    client = make_client(task)
    r = client.post("/predict", json={"records": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    servable = load_servable(servables[task])
    frame = pd.DataFrame(rows).astype({"amount": "float64"})
    if task == "dates":
        frame["when"] = pd.to_datetime(frame["when"], utc=True).dt.tz_convert(None)
    if task == "regression":
        assert body["classes"] is None and body["probabilities"] is None
        np.testing.assert_allclose(body["predictions"], servable.predict(frame), atol=1e-4)
    else:
        np.testing.assert_allclose(np.array(body["probabilities"]), servable.predict_proba(frame), atol=1e-5)
        assert body["predictions"] == servable.predict(frame).tolist()
        assert body["classes"] == servable.classes
    assert body["unknown"]["city"] == 1


def test_predict_pipeline_kind(
    make_client: ClientFactory, servables: dict[str, Path], tmp_path: Path
) -> None:
    path = build_pipeline_servable(tmp_path, servables["binary"])
    servable = load_servable(path)
    client = make_client(path)
    rows = [RECORD, {**RECORD, "city": "zzz"}]
    body = client.post("/predict", json={"records": rows}).json()
    frame = pd.DataFrame(rows).astype({"amount": "float64"})
    np.testing.assert_allclose(np.array(body["probabilities"]), servable.predict_proba(frame), atol=1e-6)
    assert body["unknown"]["city"] == 1


def test_dates_accept_dates_and_out_of_range_values(make_client: ClientFactory) -> None:
    client = make_client("dates")
    for when in ["2024-03-01", "2024-03-01T10:00:00Z", "0001-01-01T00:00:00", "9999-12-31T23:59:59", None]:
        assert client.post("/predict", json=records(when=when)).status_code == 200, when
    assert_field_error(client.post("/predict", json=records(when="yesterday")), 422, "records", 0, "when")


def test_embedding(client: TestClient, servables: dict[str, Path]) -> None:
    tables = load_servable(servables["binary"]).tables
    body = client.get("/embeddings/city/c1").json()
    code = int(tables["city"].vocab.encode(pd.Series(["c1"], dtype=object))[0])
    assert body["kind"] == "value" and body["dim"] == tables["city"].weights.shape[1]
    np.testing.assert_allclose(body["vector"], tables["city"].weights[code], rtol=1e-6)
    unknown = client.get("/embeddings/city/never-seen").json()
    assert unknown["kind"] == "unknown"
    np.testing.assert_allclose(unknown["vector"], tables["city"].weights[1], rtol=1e-6)
    # path values are read as the column's kind
    assert client.get("/embeddings/level/3").json()["kind"] == "value"
    assert client.get("/embeddings/level/three").json()["kind"] == "unknown"
    assert client.get("/embeddings/flag/true").json()["kind"] == "value"


def test_neighbors(client: TestClient) -> None:
    body = client.get("/embeddings/city/c1/neighbors", params={"k": 3}).json()
    assert len(body["neighbors"]) == 3 and body["kind"] == "value"
    sims = [n["similarity"] for n in body["neighbors"]]
    assert sims == sorted(sims, reverse=True)
    assert "c1" not in [n["category"] for n in body["neighbors"]]
    assert len(client.get("/embeddings/city/c1/neighbors", params={"k": 1000}).json()["neighbors"]) == 7
    assert client.get("/embeddings/city/zzz/neighbors").json()["kind"] == "unknown"


@pytest.mark.parametrize("k", ["0", "-1", "1001", "abc", "1.5"])
def test_neighbors_bad_k(client: TestClient, k: str) -> None:
    r = client.get("/embeddings/city/c1/neighbors", params={"k": k})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "k"]
    assert "input" not in r.json()["detail"][0]


def test_embeddings_unknown_column_is_404_without_echoing_the_name(client: TestClient) -> None:
    for path in [
        "/embeddings/nope-<script>/c1",
        "/embeddings/nope-<script>/c1/neighbors",
        "/embeddings/amount/1",
    ]:
        r = client.get(path)
        assert r.status_code == 404
        detail = r.json()["detail"]
        assert detail == "no embedding table for this column; embedded columns: ['city', 'flag', 'level']"
        assert "nope" not in r.text and "<script>" not in r.text and "amount" not in r.text


@pytest.fixture(scope="module")
def slash_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A model whose ``city`` column has the categories ``a/b`` and ``x/neighbors`` (values with a slash)."""
    from test_service_support import frame

    from embedkit.nn.learner import Learner
    from embedkit.nn.trainer import TrainConfig
    from embedkit.servable import save_net_servable
    from embedkit.spec import FeatureSpec

    root = tmp_path_factory.mktemp("slash")
    df = frame()
    df["city"] = df["city"].replace({"c1": "a/b", "c2": "x/neighbors"})
    spec = FeatureSpec(target="y", categorical=["city", "level", "flag"], continuous=["amount", "score"])
    learn = Learner.from_frame(df, spec, train_config=TrainConfig(epochs=1, lr=1e-2, device="cpu"))
    learn.fit(df)
    learn.save(root / "bundle")
    servable = save_net_servable(root / "servable", root / "bundle", name="slash")
    with TestClient(create_app(Settings(model_uri=str(servable), compute_threads=None))) as c:
        wait_ready(c)
        yield c


def test_a_category_with_a_slash_can_be_looked_up(slash_client: TestClient) -> None:
    plain = slash_client.get("/embeddings/city/a/b")
    assert plain.status_code == 200, plain.text
    assert plain.json()["value"] == "a/b" and plain.json()["kind"] == "value"
    encoded = slash_client.get("/embeddings/city/a%2Fb")
    assert encoded.status_code == 200 and encoded.json()["vector"] == plain.json()["vector"]
    near = slash_client.get("/embeddings/city/a/b/neighbors", params={"k": 3})
    assert near.status_code == 200 and near.json()["value"] == "a/b" and near.json()["kind"] == "value"
    assert "a/b" not in [n["category"] for n in near.json()["neighbors"]]
    assert "x/neighbors" in [
        n["category"] for n in slash_client.get("/embeddings/city/a/b/neighbors?k=100").json()["neighbors"]
    ]
    # a path ending in /neighbors asks for neighbours (documented): this is the neighbours of "x"
    assert slash_client.get("/embeddings/city/x/neighbors").json()["value"] == "x"
    assert slash_client.get("/embeddings/city/x/neighbors/neighbors").json()["kind"] == "value"
    assert 'route="/embeddings/{column}/{value}",status="200"' in slash_client.get("/metrics").text


def test_metrics(client: TestClient) -> None:
    client.post("/predict", json=records(3, city="unseen-city"))
    client.post("/predict", content=b"{", headers={"Content-Type": "application/json"})
    client.get("/embeddings/city/c1")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'embedkit_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'embedkit_http_requests_total{method="POST",route="/predict",status="422"}' in text
    assert 'route="/embeddings/{column}/{value}",status="200"' in text
    assert 'embedkit_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/predict"' in text
    assert "embedkit_prediction_rows_total" in text
    assert 'embedkit_unknown_categories_total{column="city"}' in text
    assert 'embedkit_model_info{name="svc-test"' in text
    unmatched = client.get("/no/such/route")
    assert unmatched.status_code == 404
    assert 'route="unmatched",status="404"' in client.get("/metrics").text


def test_requests_refused_before_routing_are_counted_under_their_route(make_client: ClientFactory) -> None:
    client = make_client(api_key=API_KEY, max_body_bytes=2_000)
    key = {"X-API-Key": API_KEY}
    assert client.get("/embeddings/city/c1").status_code == 401
    assert client.post("/predict", json=records(1)).status_code == 401
    assert client.post("/predict", json=records(100), headers=key).status_code == 413
    assert client.get("/no/such/route").status_code == 401
    text = client.get("/metrics", headers=key).text
    assert 'method="GET",route="/embeddings/{column}/{value}",status="401"' in text
    assert 'method="POST",route="/predict",status="401"' in text
    assert 'method="POST",route="/predict",status="413"' in text
    assert 'method="GET",route="unmatched",status="401"' in text
    assert 'route="unmatched",status="413"' not in text


def test_a_client_that_disconnects_mid_body_is_counted_as_499_not_500(client: TestClient) -> None:
    import asyncio

    app = client.app
    messages = iter(
        [
            {"type": "http.request", "body": b'{"records": [', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent == []  # nobody to answer
    text = client.get("/metrics").text
    assert 'method="POST",route="/predict",status="499"' in text
    assert 'route="/predict",status="500"' not in text


def test_head_health_and_ready(client: TestClient) -> None:
    for path in ("/health", "/ready"):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"", path


def test_openapi_types_each_record_value(make_client: ClientFactory) -> None:
    client = make_client("dates", extra_columns="reject", max_rows=7)
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PredictRequest"}
    request = schema["components"]["schemas"]["PredictRequest"]
    assert (
        request["properties"]["records"]["maxItems"] == 7
        and request["properties"]["records"]["minItems"] == 1
    )
    record = schema["components"]["schemas"]["Record"]
    assert record["additionalProperties"] is False
    assert set(record["required"]) == {"city", "level", "flag", "amount", "score", "when"}
    types = {name: [t.get("type") for t in p["anyOf"]] for name, p in record["properties"].items()}
    assert types["city"] == ["string", "null"] and types["level"] == ["integer", "null"]
    assert types["flag"] == ["boolean", "null"] and types["amount"] == ["number", "null"]
    assert [t.get("format") for t in record["properties"]["when"]["anyOf"]] == ["date-time", "date", None]
    assert client.get("/docs").status_code == 200


# ---- bad input: 4xx, a JSON body naming the field, no input echoed -----------------------------------
def test_invalid_json(client: TestClient) -> None:
    for raw in [b"{", b"", b"not json", b'{"records": [}']:
        r = client.post("/predict", content=raw, headers={"Content-Type": "application/json"})
        assert_field_error(r, 422)


@pytest.mark.parametrize(
    "payload,loc",
    [
        ([], ()),
        ("records", ()),
        ({}, ("records",)),
        ({"records": {}}, ("records",)),
        ({"records": []}, ("records",)),
        ({"records": [RECORD], "extra": 1}, ("extra",)),
        ({"records": [1]}, ("records", 0)),
        ({"records": [None]}, ("records", 0)),
    ],
)
def test_malformed_body(client: TestClient, payload: Any, loc: tuple[Any, ...]) -> None:
    assert_field_error(client.post("/predict", json=payload), 422, *loc)


def test_missing_column(client: TestClient) -> None:
    row = {k: v for k, v in RECORD.items() if k != "level"}
    body = assert_field_error(
        client.post("/predict", json={"records": [RECORD, row]}), 422, "records", 1, "level"
    )
    assert body["detail"][0]["type"] == "missing"


def test_extra_column_ignored_or_rejected(client: TestClient, make_client: ClientFactory) -> None:
    assert client.post("/predict", json=records(id=7, note="x")).status_code == 200
    strict = make_client(extra_columns="reject")
    assert_field_error(strict.post("/predict", json=records(id=7)), 422, "records", 0, "id")


@pytest.mark.parametrize(
    "column,value",
    [
        ("city", 5),
        ("city", True),
        ("city", ["c1"]),
        ("level", "2"),
        ("level", 2.5),
        ("level", True),
        ("level", 2.0),
        ("flag", "true"),
        ("flag", 1),
        ("amount", "12.5"),
        ("amount", True),
        ("amount", {}),
    ],
)
def test_wrong_types(client: TestClient, column: str, value: Any) -> None:
    assert_field_error(client.post("/predict", json=records(**{column: value})), 422, "records", 0, column)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"1" + b"0" * 400])
def test_non_finite_numbers(client: TestClient, literal: bytes) -> None:
    raw = (
        json.dumps(records()).replace('"amount": 12.5', '"amount": __X__').encode().replace(b"__X__", literal)
    )
    assert_field_error(
        client.post("/predict", content=raw, headers={"Content-Type": "application/json"}),
        422,
        "records",
        0,
        "amount",
    )


def test_numbers_far_outside_the_training_range_are_422(client: TestClient) -> None:
    body = assert_field_error(
        client.post("/predict", json={"records": [RECORD, {**RECORD, "amount": 1e300}]}),
        422,
        "records",
        1,
        "amount",
    )
    assert "less than or equal" in body["detail"][0]["msg"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Record"]["properties"]["amount"]
    assert schema["anyOf"][0]["maximum"] > 1e6


def test_non_finite_predictions_are_422_not_null(make_client: ClientFactory) -> None:
    client = make_client()
    model = client.app.state.holder.current.servable.model  # type: ignore[attr-defined]
    model.predict_raw = lambda inputs: np.where(np.arange(len(inputs[0])) == 1, np.nan, 0.5).astype(
        np.float32
    )
    body = assert_field_error(client.post("/predict", json=records(3)), 422, "records", 1)
    assert "outside the training data" in body["detail"][0]["msg"]


def test_no_echo_and_bounded_errors(client: TestClient) -> None:
    secret = "SECRET-7a1f"
    r = client.post("/predict", json={"records": [{**RECORD, "level": secret, "flag": secret}] * 50})
    assert r.status_code == 422
    assert "SECRET" not in r.text and len(r.json()["detail"]) == 20
    r = client.post(
        "/predict", content=b'{"records": [' + secret.encode(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and "SECRET" not in r.text


def test_too_many_rows_is_413(client: TestClient) -> None:
    r = client.post("/predict", json=records(51))
    assert r.status_code == 413
    assert r.json()["detail"].startswith("records:") and "50" in r.json()["detail"]
    assert client.post("/predict", json=records(50)).status_code == 200


def test_body_over_the_limit_is_413(client: TestClient) -> None:
    big = json.dumps({"records": [{**RECORD, "city": "x" * 25_000}]}).encode()
    r = client.post("/predict", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"records": [{"city": "'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"}]}'

    r = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    small_chunks = iter([json.dumps(records()).encode()])
    assert (
        client.post(
            "/predict", content=small_chunks, headers={"Content-Type": "application/json"}
        ).status_code
        == 200
    )


def test_not_json_content_type_is_415(client: TestClient) -> None:
    r = client.post("/predict", content=json.dumps(records()), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    assert (
        client.post(
            "/predict",
            content=json.dumps(records()),
            headers={"Content-Type": "application/vnd.api+json; charset=utf-8"},
        ).status_code
        == 200
    )


def test_a_body_without_content_type_is_415(client: TestClient) -> None:
    r = client.post("/predict", content=json.dumps(records()))
    assert "content-type" not in r.request.headers
    assert r.status_code == 415
    assert r.json() == {"detail": "send the records as JSON (Content-Type: application/json)"}


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    assert client.get("/nope").json() == {"detail": "Not Found"}
    r = client.get("/predict")
    assert r.status_code == 405 and r.json()["detail"] == "Method Not Allowed"


def test_genuine_bugs_get_a_generic_500(make_client: ClientFactory) -> None:
    client = make_client(raise_server_exceptions=False)

    def broken(body: bytes) -> Any:
        raise RuntimeError("internal detail /etc/secret")

    client.app.state.holder.current.scorer.score_body = broken  # type: ignore[attr-defined]
    r = client.post("/predict", json=records())
    assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
    assert "secret" not in r.text and "Traceback" not in r.text


# ---- readiness ---------------------------------------------------------------------------------------
def test_ready_is_503_until_the_model_is_loaded(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.app as app_module

    release = threading.Event()
    real = app_module.load_model

    def slow_load(*args: Any) -> Any:
        release.wait(10)
        return real(*args)

    monkeypatch.setattr(app_module, "load_model", slow_load)
    client = make_client(wait=False)
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["retry-after"]
    for path in ["/metadata", "/embeddings/city/c1"]:
        assert client.get(path).status_code == 503
    assert client.post("/predict", json=records()).status_code == 503
    assert client.get("/health").status_code == 200
    release.set()
    wait_ready(client)
    assert client.post("/predict", json=records()).status_code == 200


def test_ready_says_failed_without_leaking_paths(make_client: ClientFactory, tmp_path: Path) -> None:
    client = make_client(tmp_path / "no-model-here", wait=False)
    for _ in range(200):
        body = client.get("/ready").json()
        if body["status"] == "failed":
            break
        time.sleep(0.02)
    assert body["status"] == "failed" and str(tmp_path) not in json.dumps(body)
    assert client.post("/predict", json=records()).status_code == 503


def test_a_failed_first_load_logs_one_line_not_a_traceback(
    make_client: ClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="embedkit.service")
    client = make_client(tmp_path / "no-model-here", wait=False)
    for _ in range(200):
        if client.get("/ready").json()["status"] == "failed":
            break
        time.sleep(0.02)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None, errors
    message = errors[0].getMessage()
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"could not load the model {tmp_path / 'no-model-here'}: FormatError: ")


# ---- API key, CORS -------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["", "   ", "\t\n"])
def test_an_empty_api_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="EMBEDKIT_API_KEY is set but empty; set it to a secret"):
        Settings(api_key=key)
    monkeypatch.setenv("EMBEDKIT_API_KEY", key)
    with pytest.raises(ValidationError, match="EMBEDKIT_API_KEY is set but empty"):
        Settings()
    with pytest.raises(ValidationError, match="EMBEDKIT_API_KEY is set but empty"):
        create_app()  # what `uvicorn service.app:create_app --factory` runs


def test_serve_refuses_an_empty_api_key_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import uvicorn

    from service.cli import main
    from service.settings import get_settings

    monkeypatch.setenv("EMBEDKIT_API_KEY", "")
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("the server must not start"))
    try:
        assert main(["serve", "--model-uri", "/models/x"]) == 2
    finally:
        get_settings.cache_clear()
    assert "invalid setting EMBEDKIT_API_KEY: EMBEDKIT_API_KEY is set but empty" in caplog.text


def test_serve_fail_fast_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    from service.cli import main
    from service.settings import get_settings

    calls: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(kw))
    for name in [k for k in __import__("os").environ if k.startswith("EMBEDKIT_")]:
        monkeypatch.delenv(name)
    missing = tmp_path / "missing"
    try:
        assert main(["--model-uri", str(missing), "--fail-fast"]) == 1
        err = capsys.readouterr().err
        assert calls == []
        assert err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith(f"error: cannot load the model {missing}: FormatError: ")
        monkeypatch.delenv("EMBEDKIT_FAIL_FAST")
        assert main(["--model-uri", str(missing)]) == 0  # without it the server starts anyway
        assert len(calls) == 1 and calls[0]["http"] == "service.http:JSONErrorH11Protocol"
    finally:
        get_settings.cache_clear()


def test_serve_fail_fast_serves_a_model_that_loads(
    monkeypatch: pytest.MonkeyPatch, servables: dict[str, Path]
) -> None:
    import uvicorn

    from service.cli import main
    from service.settings import get_settings

    calls: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(kw))
    monkeypatch.setenv("EMBEDKIT_FAIL_FAST", "true")
    try:
        assert main(["--model-uri", str(servables["binary"])]) == 0
    finally:
        get_settings.cache_clear()
    assert len(calls) == 1


def test_api_key(make_client: ClientFactory) -> None:
    client = make_client(api_key=API_KEY)
    good = {"X-API-Key": API_KEY}
    assert client.get("/health").status_code == 200
    for method, path in [
        ("GET", "/ready"),
        ("GET", "/metadata"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/embeddings/city/c1"),
        ("POST", "/predict"),
        ("POST", "/admin/reload"),
        ("GET", "/no/such/route"),
    ]:
        for headers in [{}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY + "x"}, {"X-API-Key": ""}]:
            r = client.request(method, path, headers=headers, json=records() if method == "POST" else None)
            assert r.status_code == 401, (path, headers)
            assert "X-API-Key" in r.json()["detail"]
    assert client.post("/predict", json=records(), headers=good).status_code == 200
    schema = client.get("/openapi.json", headers=good).json()
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert schema["paths"]["/predict"]["post"]["security"] == [{"APIKeyHeader": []}]
    assert "security" not in schema["paths"]["/health"]["get"]


def test_cors_off_by_default(client: TestClient, make_client: ClientFactory) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/predict", headers=preflight).headers
    assert (
        "access-control-allow-origin"
        not in client.get("/health", headers={"Origin": "https://app.example"}).headers
    )
    cors = make_client(cors_origins="https://app.example", api_key=API_KEY)
    r = cors.options("/predict", headers={**preflight, "Access-Control-Request-Headers": "X-API-Key"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    r = cors.options("/predict", headers={**preflight, "Origin": "https://evil.example"})
    assert r.headers.get("access-control-allow-origin") != "https://evil.example"


# ---- reload ----------------------------------------------------------------------------------------------
def test_reload_needs_a_configured_key(client: TestClient) -> None:
    r = client.post("/admin/reload")
    assert r.status_code == 403 and "EMBEDKIT_API_KEY" in r.json()["detail"]


def test_reload_swaps_atomically_and_in_flight_requests_finish_on_the_old_model(
    make_client: ClientFactory, servables: dict[str, Path], tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(servables["binary"], model_dir)
    client = make_client(model_dir, api_key=API_KEY, inline_max_bytes=0)  # every request in a worker thread
    key = {"X-API-Key": API_KEY}
    old = client.get("/ready", headers=key).json()["model"]
    assert client.post("/admin/reload", headers=key).json() == {
        "changed": False,
        "previous": old,
        "current": old,
    }

    # hold one request inside the old model's scorer
    scorer = client.app.state.holder.current.scorer  # type: ignore[attr-defined]
    entered, release = threading.Event(), threading.Event()
    real = scorer.score_body

    def held(body: bytes) -> Any:
        entered.set()
        release.wait(10)
        return real(body)

    scorer.score_body = held
    result: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: result.update(r=client.post("/predict", json=records(), headers=key))
    )
    worker.start()
    assert entered.wait(10)

    # a new version appears at the configured location; reload while the request is in flight
    shutil.rmtree(model_dir)
    shutil.copytree(servables["multiclass"], model_dir)
    reloaded = client.post("/admin/reload", headers=key).json()
    assert reloaded["changed"] is True and reloaded["previous"] == old
    new = client.post("/predict", json=records(), headers=key).json()
    assert new["model"] == reloaded["current"] and new["classes"] == ["high", "low", "mid"]

    release.set()
    worker.join(10)
    assert result["r"].status_code == 200
    assert result["r"].json()["model"] == old and result["r"].json()["classes"] == [0, 1]
    # the OpenAPI document follows the model
    metrics = client.get("/metrics", headers=key).text
    assert 'embedkit_model_reloads_total{outcome="changed"} 1.0' in metrics


def test_failed_reload_keeps_the_model(
    make_client: ClientFactory, servables: dict[str, Path], tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(servables["binary"], model_dir)
    client = make_client(model_dir, api_key=API_KEY)
    key = {"X-API-Key": API_KEY}
    (model_dir / "servable.json").write_text("{damaged")
    r = client.post("/admin/reload", headers=key)
    assert r.status_code == 503 and str(model_dir) not in r.text
    assert client.post("/predict", json=records(), headers=key).status_code == 200
    assert client.get("/ready", headers=key).json()["status"] == "ready"


# ---- embedkit serve ----------------------------------------------------------------------------------------
def test_serve_passes_flags_to_every_worker_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import uvicorn

    from service.cli import main
    from service.settings import get_settings

    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("EMBEDKIT_")})
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    try:
        assert (
            main(
                [
                    "serve",
                    "--model-uri",
                    "/models/x",
                    "--port",
                    "9123",
                    "--workers",
                    "2",
                    "--max-rows",
                    "7",
                    "--extra-columns",
                    "reject",
                    "--cors-origins",
                    "https://a.example,https://b.example",
                    "--no-access-log",
                ]
            )
            == 0
        )
        assert calls[0]["app"] == "service.app:create_app" and calls[0]["factory"] is True
        assert (calls[0]["host"], calls[0]["port"], calls[0]["workers"]) == ("127.0.0.1", 9123, 2)
        assert calls[0]["timeout_graceful_shutdown"] == 30 and calls[0]["access_log"] is False
        settings = get_settings()  # what each worker's create_app() reads
        assert (settings.model_uri, settings.max_rows, settings.extra_columns) == ("/models/x", 7, "reject")
        assert settings.cors_origins == ["https://a.example", "https://b.example"]
        assert main(["--port", "http"]) == 2 and main(["--extra-columns", "maybe"]) == 2
        assert len(calls) == 1
    finally:
        get_settings.cache_clear()
