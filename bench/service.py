"""Benchmark the embedkit service against ``mlflow models serve`` on the same registered models.

``--prepare`` trains a small flights net and registers four models on it: the net itself and its
embeddings feeding LightGBM, a random forest and k-NN (kind "pipeline"). Each model is then served by
both servers in turn.

Both servers run on 127.0.0.1 with one worker each, started by this script, and get the same bounded load
in the same run: 1-row and 100-row requests from 1 and 8 concurrent clients (keep-alive connections), each
scenario stopped after ``--requests`` requests or ``--seconds`` seconds, whichever comes first, after
``--warmup`` untimed requests. The records are the registered model's input example, repeated.

- embedkit: ``python -m service --model-uri URI --workers 1`` (``embedkit serve``), ``POST /predict``
  with ``{"records": [...]}``; access log off (its default).
- MLflow: ``mlflow models serve -m URI --env-manager local --workers 1``, ``POST /invocations`` with
  ``{"dataframe_records": [...]}``; its uvicorn writes an access log line per request (no flag turns it off).

The load generator is a minimal asyncio HTTP/1.1 client (one socket per client, requests pre-encoded):
with 2 cores it must cost far less than the servers it measures, which an HTTP library does not.
Reported per server and scenario: requests/s, rows/s, p50/p99 latency (ms), errors (non-200 or failed
requests); per server: resident memory (RSS) of the process serving the port, after start-up and
warm-up ("before") and after all scenarios ("after").

Usage::

    python bench/service.py --prepare                        # train + register the four models first
    python bench/service.py --model-uri net=models:/NAME@ALIAS --tracking-uri sqlite:///mlflow.db

Writes ``bench/results/service.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "service.json"
SCENARIOS = [(1, 1), (1, 8), (100, 1), (100, 8)]  # (rows per request, concurrent clients)
#: Per model label: the goals of 1-row requests (issue 14); models without an entry are measured only.
GOALS: dict[str, dict[str, float]] = {
    "net": {"rps_8clients": 1500.0},
    "lightgbm": {"rps_8clients": 1000.0, "p99_ms_1client": 10.0, "ratio_to_mlflow_8clients": 5.0},
}
RSS_GROWTH_PCT = 10.0


# ---- the load generator --------------------------------------------------------------------------
class Connection:
    """One keep-alive HTTP/1.1 connection sending a pre-encoded request and reading the whole response."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.strip().lower()] = v.strip()
        if b"content-length" in headers:
            body = await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(p[:-2] for p in parts)
        else:
            body = await self.reader.read()
        if headers.get(b"connection", b"").lower() == b"close":
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def encode_request(port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def drive(port: int, raw: bytes, clients: int, requests: int, seconds: float) -> dict[str, Any]:
    """``clients`` connections sending ``raw`` until ``requests`` are sent or ``seconds`` have passed."""
    latencies: list[float] = []
    http_errors = failed = 0
    left = requests
    deadline = time.perf_counter() + seconds
    first_error: str | None = None

    async def client() -> None:
        nonlocal left, http_errors, failed, first_error
        conn = Connection("127.0.0.1", port)
        try:
            while left > 0 and time.perf_counter() < deadline:
                left -= 1
                t0 = time.perf_counter()
                try:
                    status, body = await conn.request(raw)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    failed += 1
                    first_error = first_error or repr(exc)
                    await conn.close()
                    continue
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    http_errors += 1
                    first_error = first_error or f"HTTP {status}: {body[:200]!r}"
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    ok = len(latencies) - http_errors
    return {
        "requests": len(latencies) + failed,
        "ok": ok,
        "errors": http_errors + failed,
        "seconds": round(elapsed, 3),
        "rps": round(ok / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "first_error": first_error,
    }


# ---- servers -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str, proc: subprocess.Popen, timeout: float) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r,
        ):
            if r.status == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"server on port {port} not ready after {timeout}s")


def serving_pid(port: int, fallback: int) -> int:
    """The process listening on ``port`` (MLflow's CLI starts uvicorn as a child process)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the dev extra
        print("psutil is not installed: RSS is measured on the started process", file=sys.stderr)
        return fallback

    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return conn.pid
    return fallback


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_ours(model_uri: str, env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "service",
        "--model-uri",
        model_uri,
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def start_mlflow(model_uri: str, env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow) if mlflow.exists() else "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    # `mlflow models serve` runs `uvicorn` from PATH: the one next to this interpreter
    env = {**env, "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


# ---- the model -----------------------------------------------------------------------------------
def prepare(workdir: Path, tracking_uri: str, n_rows: int) -> dict[str, str]:
    """Train a small flights net and register it and its embeddings -> LightGBM / random forest / k-NN
    (pipelines' pyfunc model) as ``embedkit-bench-<label>@champion``; returns label -> model URI."""
    import lightgbm as lgb
    import mlflow
    from mlflow import MlflowClient
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier

    from embedkit.datasets import flights
    from embedkit.nn.learner import Learner
    from embedkit.nn.trainer import TrainConfig
    from embedkit.servable import load_servable, save_net_servable, save_pipeline_servable
    from embedkit.transformer import EmbeddingTransformer
    from pipelines.pyfunc_model import predictions_frame

    ex = flights(n_rows=n_rows)
    learn = Learner.from_frame(ex.train, ex.spec, train_config=TrainConfig(epochs=2, lr=1e-2))
    learn.fit(ex.train, ex.valid)
    learn.save(workdir / "bundle")
    dirs = {"net": save_net_servable(workdir / "net", workdir / "bundle", name="embedkit-bench-net")}
    net = load_servable(dirs["net"])
    cols = list(ex.spec.categorical or []) + list(ex.spec.continuous or [])
    tr = EmbeddingTransformer(tables=net.tables, columns=list(ex.spec.categorical or [])).fit(ex.train[cols])
    x = tr.transform(ex.train[cols])
    schema = [c for c in net.input_schema if c["name"] in cols]
    downstream = {
        "lightgbm": lgb.LGBMClassifier(n_estimators=200, verbose=-1),
        "random_forest": RandomForestClassifier(
            n_estimators=100, min_samples_leaf=5, n_jobs=1, random_state=0
        ),
        "knn": KNeighborsClassifier(n_neighbors=25),
    }
    for label, est in downstream.items():
        est.fit(x, ex.train[ex.spec.target])
        dirs[label] = save_pipeline_servable(
            workdir / label, transformer=tr, estimator=est, task="binary", classes=[0, 1],
            input_schema=schema, name=f"embedkit-bench-{label}",
        )  # fmt: skip
    mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.create_experiment("service-bench", artifact_location=(workdir / "artifacts").as_uri())
    uris = {}
    for label, servable_dir in dirs.items():
        servable = load_servable(servable_dir)
        example = ex.valid[servable.feature_columns].head(5).reset_index(drop=True)
        signature = mlflow.models.infer_signature(example, predictions_frame(servable, example))
        name = f"embedkit-bench-{label}"
        with mlflow.start_run(experiment_id=exp):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(ROOT / "pipelines" / "pyfunc_model.py"),
                artifacts={"servable": str(servable_dir)},
                signature=signature,
                input_example=example,
                pip_requirements=["mlflow", "pandas", "lightgbm", "scikit-learn"],
                registered_model_name=name,
            )
        MlflowClient().set_registered_model_alias(name, "champion", info.registered_model_version)
        uris[label] = f"models:/{name}@champion"
    return uris


def example_records(model_uri: str, tracking_uri: str) -> list[dict[str, Any]]:
    """The registered model's input example as JSON records."""
    import mlflow
    from mlflow.models import Model

    mlflow.set_tracking_uri(tracking_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        frame = Model.load(local).load_input_example(local)
        return json.loads(frame.to_json(orient="records"))


# ---- the run -------------------------------------------------------------------------------------
def bench_server(
    name: str, label: str, port: int, path: str, key: str, records: list[dict[str, Any]], args: Any, pid: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"server": name, "model": label, "scenarios": []}
    bodies = {
        rows: json.dumps({key: [records[i % len(records)] for i in range(rows)]}).encode()
        for rows in {r for r, _ in SCENARIOS}
    }
    for rows, _ in SCENARIOS:  # warm-up: every body size, untimed
        asyncio.run(drive(port, encode_request(port, path, bodies[rows]), 2, args.warmup, 60))
    out["rss_before_mb"] = round(rss_mb(pid), 1)
    for rows, clients in SCENARIOS:
        raw = encode_request(port, path, bodies[rows])
        res = asyncio.run(drive(port, raw, clients, args.requests, args.seconds))
        res.update(rows=rows, clients=clients, rows_per_s=round(res["rps"] * rows, 1))
        out["scenarios"].append(res)
        print(
            f"  {label} on {name}: {rows} row(s), {clients} client(s): {res['rps']} req/s, p50 {res['p50_ms']} ms, "
            f"p99 {res['p99_ms']} ms, errors {res['errors']}",
            file=sys.stderr,
        )
    out["rss_after_mb"] = round(rss_mb(pid), 1)
    out["rss_growth_pct"] = round(100 * (out["rss_after_mb"] / out["rss_before_mb"] - 1), 2)
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | server | rows/request | clients | requests/s | rows/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for s in r["scenarios"]:
            lines.append(
                f"| {r['model']} | {r['server']} | {s['rows']} | {s['clients']} | {s['rps']:,.0f} | "
                f"{s['rows_per_s']:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['errors']} |"
            )
    lines += [
        "",
        "| model | server | RSS before (MB) | RSS after (MB) | growth |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['server']} | {r['rss_before_mb']:.0f} | {r['rss_after_mb']:.0f} | "
            f"{r['rss_growth_pct']:+.1f}% |"
        )
    return "\n".join(lines)


def goals(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model: the 1-row figures, the ratio to MLflow at 8 clients, and each goal met or not."""

    def find(server: str, label: str, rows: int, clients: int) -> dict[str, Any] | None:
        for r in results:
            if r["server"] == server and r["model"] == label:
                return next(s for s in r["scenarios"] if s["rows"] == rows and s["clients"] == clients)
        return None

    out: dict[str, Any] = {}
    for label in dict.fromkeys(r["model"] for r in results):
        ours8, ours1 = find("embedkit", label, 1, 8), find("embedkit", label, 1, 1)
        theirs8 = find("mlflow", label, 1, 8)
        if ours8 is None or ours1 is None:
            continue
        ours = next(r for r in results if r["server"] == "embedkit" and r["model"] == label)
        row: dict[str, Any] = {
            "rps_8clients": ours8["rps"],
            "p99_ms_1client": ours1["p99_ms"],
            "errors": sum(s["errors"] for r in results if r["model"] == label for s in r["scenarios"]),
            "rss_growth_pct": ours["rss_growth_pct"],
        }
        if theirs8:
            row["mlflow_rps_8clients"] = theirs8["rps"]
            row["ratio_to_mlflow_8clients"] = round(ours8["rps"] / max(theirs8["rps"], 1e-9), 2)
        met = {
            "zero_errors": row["errors"] == 0,
            f"rss_growth<{RSS_GROWTH_PCT:g}%": row["rss_growth_pct"] < RSS_GROWTH_PCT,
        }
        for goal, bound in GOALS.get(label, {}).items():
            value = row.get(goal, float("nan"))
            met[f"{goal}{'<=' if goal.startswith('p99') else '>='}{bound:g}"] = (
                value <= bound if goal.startswith("p99") else value >= bound
            )
        row["met"] = met
        out[label] = row
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model-uri",
        action="append",
        default=[],
        help="LABEL=models:/NAME@ALIAS of a registered embedkit model (repeatable; label net, lightgbm, ...)",
    )
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    p.add_argument(
        "--prepare",
        action="store_true",
        help="train and register a small flights net and LightGBM / random forest / k-NN on its embeddings "
        "first (in a temporary MLflow store unless --tracking-uri is given)",
    )
    p.add_argument("--prepare-rows", type=int, default=20_000, help="flights rows for --prepare")
    p.add_argument("--requests", type=int, default=3000, help="requests per scenario at most")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per scenario at most")
    p.add_argument("--warmup", type=int, default=200, help="untimed requests per body size before timing")
    p.add_argument("--skip-mlflow", action="store_true", help="only benchmark the embedkit service")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not args.model_uri and not args.prepare:
        p.error("give --model-uri or --prepare")

    with tempfile.TemporaryDirectory(prefix="embedkit-bench-") as tmp:
        work = Path(tmp)
        tracking_uri = (
            args.tracking_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or (
                f"sqlite:///{work / 'mlflow.db'}" if args.prepare else f"sqlite:///{Path.cwd() / 'mlflow.db'}"
            )
        )
        model_uris = (
            dict(u.split("=", 1) for u in args.model_uri)
            if args.model_uri
            else prepare(work, tracking_uri, args.prepare_rows)
        )
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "EMBEDKIT_TRACKING_URI": tracking_uri,
            "PYTHONPATH": str(ROOT),
        }
        env.pop("EMBEDKIT_API_KEY", None)
        results = []
        servers = [("embedkit", start_ours, "/predict", "records", "/ready")]
        if not args.skip_mlflow:
            servers.append(("mlflow", start_mlflow, "/invocations", "dataframe_records", "/ping"))
        for label, model_uri in model_uris.items():
            records = example_records(model_uri, tracking_uri)
            for name, start, path, key, ready_path in servers:
                port = free_port()
                proc = start(model_uri, env, port, work / f"{name}-{label}.log")
                try:
                    wait_http(port, ready_path, proc, timeout=180)
                    print(f"{label} on {name}: ready on port {port}", file=sys.stderr)
                    results.append(
                        bench_server(name, label, port, path, key, records, args, serving_pid(port, proc.pid))
                    )
                except Exception:
                    sys.stderr.write((work / f"{name}-{label}.log").read_text()[-3000:])
                    raise
                finally:
                    stop(proc)
    report = {
        "model_uris": model_uris,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {
            "requests": args.requests,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "scenarios": SCENARIOS,
        },
        "results": results,
        "goals": goals(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print()
    print(json.dumps(report["goals"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
