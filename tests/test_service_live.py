"""The service as a real uvicorn server on 127.0.0.1: HTTP, a graceful SIGTERM, and schemathesis fuzzing."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from test_service_support import API_KEY, RECORD, LiveServer, build_net_servable, live_server

KEY = {"X-API-Key": API_KEY}
MAX_ROWS = 5000


@pytest.fixture(scope="module")
def servable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_net_servable(tmp_path_factory.mktemp("live"))


@pytest.fixture(scope="module")
def server(servable: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("live-log") / "server.log"
    # No API key: the fuzzer's schema-violating requests then test the API, not the key (the key is
    # tested in test_service.py; with it, the fuzzer drops the header and every request is a 401).
    with live_server(
        str(servable), log, args=["--max-rows", str(MAX_ROWS), "--max-body-bytes", "2000000"]
    ) as s:
        s.wait_ready()
        yield s


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a fresh socket; returns the status and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_out, _, body_out = data.partition(b"\r\n\r\n")
    return int(head_out[9:12]), body_out


def predict_head(port: int, length: int) -> bytes:
    return (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {API_KEY}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


def test_real_server_over_http(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/health").json() == {"status": "ok"}
        r = http.post("/predict", json={"records": [RECORD, {**RECORD, "city": "zzz"}]})
        assert r.status_code == 200 and r.json()["unknown"]["city"] == 1
        bad = http.post("/predict", content=b"{nope", headers={"Content-Type": "application/json"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body"]
        assert 'route="/predict",status="200"' in http.get("/metrics").text


def test_content_length_over_the_limit_is_refused_before_reading(server: LiveServer) -> None:
    status, body = raw_request(server.port, predict_head(server.port, 10**9))
    assert status == 413 and "limit" in json.loads(body)["detail"]


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "0x10"])
def test_a_content_length_that_is_not_a_number_is_a_json_400(server: LiveServer, length: str) -> None:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()
    status, body = raw_request(server.port, head, b"{}")
    assert status == 400
    assert json.loads(body) == {"detail": "Content-Length is not a number"}


def test_health_answers_while_large_requests_are_scored(server: LiveServer) -> None:
    big = json.dumps({"records": [{**RECORD, "score": i / MAX_ROWS} for i in range(MAX_ROWS)]})
    done = threading.Event()
    statuses: list[int] = []

    def score() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for _ in range(8):
                statuses.append(
                    http.post(
                        "/predict", content=big, headers={"Content-Type": "application/json"}
                    ).status_code
                )
        done.set()

    worker = threading.Thread(target=score)
    worker.start()
    latencies = []
    with httpx.Client(base_url=server.url, timeout=10) as http:
        while not done.is_set():
            t0 = time.perf_counter()
            assert http.get("/health").status_code == 200
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.005)
    worker.join()
    assert statuses == [200] * 8
    assert len(latencies) >= 2, "health did not answer while predictions ran"
    assert sorted(latencies)[len(latencies) // 2] < 0.25


def test_sigterm_drains_in_flight_requests(servable: Path, tmp_path: Path) -> None:
    body = json.dumps({"records": [RECORD] * 50}).encode()
    # started as `uvicorn service.app:create_app --factory`, configured by environment variables
    env = {"EMBEDKIT_API_KEY": API_KEY, "EMBEDKIT_COMPUTE_THREADS": "1"}
    with live_server(str(servable), tmp_path / "server.log", extra_env=env, factory=True) as server:
        server.wait_ready(headers=KEY)
        assert httpx.get(f"{server.url}/health").status_code == 200
        assert httpx.get(f"{server.url}/ready").status_code == 401
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            # the request is in flight: headers and half of the body sent
            sock.sendall(predict_head(server.port, len(body)) + body[: len(body) // 2])
            time.sleep(0.5)
            server.terminate()
            time.sleep(0.5)
            assert server.proc.poll() is None, "the server exited with a request in flight"
            with pytest.raises(OSError):  # no new connections once shutting down
                socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
            sock.sendall(body[len(body) // 2 :])
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, payload = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), data[:300]
        assert len(json.loads(payload)["predictions"]) == 50
        # uvicorn re-raises the signal once drained: the exit status says SIGTERM, as a supervisor expects
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Waiting for" in server.output() or "Finished server process" in server.output()


# ---- fuzzing: schemathesis against the running server's /openapi.json ----------------------------------
#: Examples per operation and generation mode (schema-conforming, then schema-violating data); derandomized,
#: so that every run sends the same requests.
FUZZ_EXAMPLES = 40


def test_fuzz_no_5xx_and_responses_match_the_schema(server: LiveServer) -> None:
    """Every operation of the live server's OpenAPI document, with data that conforms to it (positive) and
    data that violates it (negative): no 5xx, statuses and bodies as documented, bad data refused."""
    # 413 (more records than the limit: `maxItems`) is how this API refuses too many rows. A
    # /invocations dataframe_split row is typed by its position in `columns`, which JSON Schema cannot
    # say: data that fits its schema may still be refused there (violating data must still be).
    config = schemathesis.Config.from_dict(
        {
            "checks": {"negative_data_rejection": {"expected-statuses": [400, 404, 405, 413, 415, 422]}},
            "operations": [
                {"include-path": "/invocations", "checks": {"positive_data_acceptance": {"enabled": False}}}
            ],
        }
    )
    api = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)
    failures: list[str] = []
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /predict",
        "POST /invocations",
        "GET /embeddings/{column}/{value}",
        "GET /embeddings/{column}/{value}/neighbors",
        "GET /metadata",
    }
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=FUZZ_EXAMPLES,
                deadline=10_000,  # ms per example: generous, the machine may be shared
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case: Any) -> None:
                case.call_and_validate()

            try:
                call()
            except Unsatisfiable:  # nothing in the operation can be made invalid
                continue
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:3000]}")
    assert not failures, "\n\n".join(failures)
