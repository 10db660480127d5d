"""Reliability run: fuzz the live service, feed the CLI bad configs and files, kill train and score.

What it does, in a temporary folder (removed at the end), on loopback only, every loop bounded:

1. Trains a small flights net (the built-in example, a few thousand rows) and packages it as a servable.
2. Starts the service on it (``python -m service serve`` on 127.0.0.1, a free port) and sends it
   - schemathesis requests generated from its own ``/openapi.json`` (schema-conforming and
     schema-violating, derandomised: every run sends the same ones);
   - hand-made hostile requests on raw sockets: bad JSON, wrong types, huge numbers, NaN strings, deep
     nesting, wrong or missing content types, bodies over the limit (by Content-Length and streamed),
     a Content-Length that is not a number, path traversal in the embeddings routes, a client that leaves
     in the middle of its body;
   then counts the 5xx answers (and the 5xx the service's own ``/metrics`` saw) and the tracebacks in its
   log.
3. Runs ``embedkit train`` and ``embedkit score`` on bad configs and bad files: each must exit 2 with a
   message, no traceback, no MLflow run and no file left.
4. Kills ``embedkit train`` and ``embedkit score`` at random points (seeded) with SIGTERM and SIGKILL, then
   recovers as a user would (``embedkit train --resume RUN_ID``; ``embedkit score`` again) and checks:
   partial files left (temporary files, or an unreadable output), MLflow runs left non-terminal (RUNNING),
   killed trains that did not resume from their checkpoint.

The "lost" columns (5xx, tracebacks, partial files, runs left non-terminal, trains that did not resume)
should all be zero.

Usage: ``python bench/faults.py [--quick] [--seed 0]`` (about 5 minutes on 2 cores; ``--quick`` about 2).
Writes ``bench/results/faults.json`` (``faults_quick.json`` with ``--quick``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
#: Limits the service runs with (small, so that "over the limit" is cheap to send).
MAX_BODY = 200_000
MAX_ROWS = 500
TRAIN_ROWS = 2000


@dataclass
class Tally:
    """One section's counts; the last five are the "lost" columns (goal: zero)."""

    section: str
    requests: int = 0  # requests sent, or commands run
    faults: int = 0  # hostile inputs, bad files/configs, kills
    server_errors: int = 0  # 5xx answers
    tracebacks: int = 0  # "Traceback" in a stderr or the server log
    partial_files: int = 0  # temporary files, or unreadable outputs, left after recovery
    runs_non_terminal: int = 0  # MLflow runs left RUNNING after recovery
    not_resumed: int = 0  # killed trains that did not finish from their checkpoint with --resume
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  [{self.section}] {text}", flush=True)


# ---- helpers ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: The bench's folder (set by main): one MLflow store and one TMPDIR for every command it runs.
BENCH_DIR = Path(".")


def env_for(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBEDKIT_", "MLFLOW_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "MLFLOW_TRACKING_URI": f"sqlite:///{BENCH_DIR / 'mlflow.db'}",
            "TMPDIR": str(BENCH_DIR / "tmp"),
        }
    )
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def run_cmd(cmd: list[str], work: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=work, env=env_for(work), capture_output=True, text=True, timeout=timeout)


def temp_leftovers(root: Path) -> list[Path]:
    """Temporary files of embedkit's atomic writes (``.NAME.host.pid-xxxx.tmp``) anywhere under ``root``."""
    return [p for p in root.rglob(".*.tmp") if "-" in p.name]


def has_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" in text


CONFIG = """
[tracking]
experiment = "{experiment}"

[data]
source = "example"
n_rows = {rows}

[net]
layers = [32, 16]
emb_dims = {{ tailnum = 4, flight = 4, dest = 4 }}

[train]
epochs = {epochs}
batch_size = 256
seed = 0
lr = 0.01
device = "cpu"

[train.lr_find]
num = 10
"""


# ---- 1. the model ----------------------------------------------------------------------------------
def build_servable(work: Path) -> Path:
    from embedkit.datasets import flights
    from embedkit.nn.learner import Learner
    from embedkit.nn.trainer import TrainConfig
    from embedkit.servable import save_net_servable

    ex = flights(n_rows=TRAIN_ROWS)
    learn = Learner.from_frame(ex.train, ex.spec, train_config=TrainConfig(epochs=1, lr=1e-2, seed=0))
    learn.fit(ex.train, ex.valid)
    learn.save(work / "bundle")
    return save_net_servable(work / "servable", work / "bundle", name="faults-bench")


# ---- 2. the service --------------------------------------------------------------------------------
@contextlib.contextmanager
def live_service(servable: Path, work: Path) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    port = free_port()
    log = work / "server.log"
    cmd = [
        sys.executable, "-m", "service", "serve", "--model-uri", str(servable), "--port", str(port),
        "--max-body-bytes", str(MAX_BODY), "--max-rows", str(MAX_ROWS), "--log-level", "info",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env_for(work), stdout=out, stderr=subprocess.STDOUT)
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited: {log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(log.read_text()[-3000:])
            time.sleep(0.2)
        yield port, log, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def raw(port: int, data: bytes, timeout: float = 10, close_early: bool = False) -> int | None:
    """Send ``data`` as-is on a fresh connection; the answer's status (None: no answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if close_early:
            return None
        got = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                got += chunk
    return int(got[9:12]) if got.startswith(b"HTTP/1.1 ") and got[9:12].isdigit() else None


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    hdrs = {"Content-Length": str(len(body)), **(headers or {})}
    head += [f"{k}: {v}" for k, v in hdrs.items() if v is not None]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def record() -> dict[str, Any]:
    return {
        "carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N14228", "flight": 1545, "month": 1,
        "day": 1, "hour": 5, "dayofweek": 1, "sched_dep_time": 515, "sched_arr_time": 819, "distance": 1400,
    }  # fmt: skip


def hostile_requests() -> list[tuple[str, bytes, dict[str, Any]]]:
    """(name, raw request, options): malformed, oversized and hostile inputs, each a fault."""
    js = {"Content-Type": "application/json"}
    rec = record()

    def predict(body: bytes | str, headers: dict[str, str] | None = None) -> bytes:
        data = body.encode() if isinstance(body, str) else body
        return request("POST", "/predict", data, {**js, **(headers or {})})

    def records(**changes: Any) -> str:
        return json.dumps({"records": [{**rec, **changes}]})

    deep = "[" * 100_000 + "]" * 100_000
    cases: list[tuple[str, bytes, dict[str, Any]]] = [
        ("bad JSON", predict("{nope"), {}),
        ("truncated JSON", predict(records()[:-3]), {}),
        ("JSON array, not an object", predict("[1, 2, 3]"), {}),
        ("records not a list", predict('{"records": {"a": 1}}'), {}),
        ("empty records", predict('{"records": []}'), {}),
        ("string for a number", predict(records(distance="far")), {}),
        ("number for a string", predict(records(carrier=12)), {}),
        ("bool for an integer", predict(records(flight=True)), {}),
        ("float for an integer category", predict(records(flight=1545.5)), {}),
        ("huge number", predict(records(distance=1e308)), {}),
        ("overflowing number", predict(records(distance="1e999").replace('"1e999"', "1e999")), {}),
        ("huge integer", predict(records(flight=10**40)), {}),
        ("NaN literal", predict(records(distance=0).replace('"distance": 0', '"distance": NaN')), {}),
        ("Infinity literal", predict(records(distance=0).replace('"distance": 0', '"distance": -Infinity')), {}),
        ("NaN string", predict(records(distance="NaN")), {}),
        ("null everywhere", predict(json.dumps({"records": [dict.fromkeys(rec)]})), {}),
        ("missing column", predict(json.dumps({"records": [{"carrier": "UA"}]})), {}),
        ("deep nesting in a value", predict(records().replace('"UA"', deep)), {}),
        ("deep nesting as the body", predict(deep), {}),
        ("deep object nesting", predict('{"a":' * 50_000 + "1" + "}" * 50_000), {}),
        ("10k-character key", predict(json.dumps({"records": [{**rec, "k" * 10_000: 1}]})), {}),
        ("control characters", predict(records(carrier="\x00\x01\u202e")), {}),
        ("lone surrogate", predict(records().replace('"UA"', '"\\ud800"')), {}),
        ("invalid UTF-8", predict(records().encode().replace(b"UA", b"\xff\xfe")), {}),
        ("more rows than the limit", predict(json.dumps({"records": [rec] * (MAX_ROWS + 1)})), {}),
        ("text/plain", request("POST", "/predict", records().encode(), {"Content-Type": "text/plain"}), {}),
        ("no Content-Type", request("POST", "/predict", records().encode()), {}),
        ("form data", request("POST", "/predict", b"records=1", {"Content-Type": "application/x-www-form-urlencoded"}), {}),
        ("multipart", request("POST", "/predict", b"--x\r\n\r\n--x--", {"Content-Type": "multipart/form-data; boundary=x"}), {}),
        ("Content-Length over the limit", request("POST", "/predict", b"", {**js, "Content-Length": str(10**9)}), {}),
        ("Content-Length not a number", request("POST", "/predict", b"{}", {**js, "Content-Length": "abc"}), {}),
        ("negative Content-Length", request("POST", "/predict", b"{}", {**js, "Content-Length": "-5"}), {}),
        ("two Content-Lengths", request("POST", "/predict", b"{}", {**js, "Content-Length": "2, 3"}), {}),
        ("chunked body over the limit", b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
         + b"".join(b"%x\r\n" % 50_000 + b" " * 50_000 + b"\r\n" for _ in range(6)) + b"0\r\n\r\n", {}),
        ("bad chunk size", b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", {}),
        ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64), {}),
        ("HTTP/0.9", b"GET /health\r\n\r\n", {}),
        ("header without colon", b"GET /health HTTP/1.1\r\nHost x\r\n\r\n", {}),
        ("client leaves mid-body", request("POST", "/predict", records().encode()[:20], {**js, "Content-Length": "4000"}), {"close_early": True}),
        ("traversal ../", request("GET", "/embeddings/../../../etc/passwd"), {}),
        ("traversal in the value", request("GET", "/embeddings/dest/../../etc/passwd"), {}),
        ("encoded traversal", request("GET", "/embeddings/dest/..%2F..%2F..%2Fetc%2Fpasswd"), {}),
        ("encoded traversal, neighbors", request("GET", "/embeddings/dest/..%2F..%2Fetc%2Fpasswd/neighbors?k=5"), {}),
        ("NUL in the path", request("GET", "/embeddings/dest/a%00b"), {}),
        ("column that does not exist", request("GET", "/embeddings/%3Cscript%3E/x"), {}),
        ("empty value", request("GET", "/embeddings/dest/"), {}),
        ("10k-character value", request("GET", "/embeddings/dest/" + "a" * 10_000), {}),
        ("k not a number", request("GET", "/embeddings/dest/IAH/neighbors?k=ten"), {}),
        ("k huge", request("GET", "/embeddings/dest/IAH/neighbors?k=" + "9" * 400), {}),
        ("unknown query parameter", request("GET", "/embeddings/dest/IAH/neighbors?K=5"), {}),
        ("integer column, not an integer", request("GET", "/embeddings/flight/1e400"), {}),
        ("reload without a key", request("POST", "/admin/reload"), {}),
        ("wrong method", request("DELETE", "/predict"), {}),
        ("unknown route", request("GET", "/" + "x/" * 500), {}),
    ]  # fmt: skip
    return cases


def fuzz_service(servable: Path, work: Path, quick: bool) -> Tally:
    import httpx

    t = Tally("service")
    with live_service(servable, work) as (port, log, proc):
        base = f"http://127.0.0.1:{port}"
        # hand-made hostile requests
        for name, data, options in hostile_requests():
            t.requests += 1
            t.faults += 1
            try:
                status = raw(port, data, **options)
            except OSError as exc:  # the server closed on us mid-send (a refused oversized body)
                status = None
                if not isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                    t.note(f"{name}: {type(exc).__name__}: {exc}")
            if status is not None and status >= 500:
                t.server_errors += 1
                t.note(f"{name}: {status}")
            if status is None and not options.get("close_early"):
                t.note(f"{name}: no answer (connection closed)")
        # well-formed traffic in between: the service must still answer normally
        ok = httpx.post(f"{base}/predict", json={"records": [record()]}, timeout=10)
        t.requests += 1
        if ok.status_code != 200:
            t.note(f"a valid request after the hostile ones got {ok.status_code}")
        # schemathesis from the live OpenAPI document
        n, errors = schemathesis_run(base, examples=8 if quick else 30)
        t.requests += n
        t.faults += n // 2  # the negative half violates the schema on purpose
        t.server_errors += errors
        health = httpx.get(f"{base}/health", timeout=10).status_code
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        # /ready's 503 while the model loads is by design; any other 5xx is not
        fives = [line for line in metrics.splitlines() if line.startswith("embedkit_http_requests_total")
                 and 'status="5' in line and 'route="/ready",status="503"' not in line]  # fmt: skip
        if fives:
            t.note(f"/metrics counted 5xx: {fives}")
        if health != 200 or proc.poll() is not None:
            t.note("the service stopped answering")
            t.server_errors += 1
    text = log.read_text(errors="replace")
    t.tracebacks += text.count("Traceback (most recent call last)")
    return t


def schemathesis_run(base: str, examples: int) -> tuple[int, int]:
    """Every operation, positive then negative data; returns (requests sent, 5xx answers)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    api = schemathesis.openapi.from_url(f"{base}/openapi.json")
    sent = server_errors = 0
    for result in api.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case: Any) -> None:
                nonlocal sent, server_errors
                response = case.call(timeout=30)
                sent += 1
                if response.status_code >= 500:
                    server_errors += 1
                    print(f"  [service] schemathesis {case.method} {case.formatted_path}: "
                          f"{response.status_code}", flush=True)  # fmt: skip

            with contextlib.suppress(Unsatisfiable):
                call()
    return sent, server_errors


# ---- 3. bad configs and bad files ------------------------------------------------------------------
def bad_inputs(servable: Path, work: Path, quick: bool) -> Tally:
    import pandas as pd

    t = Tally("cli bad input")
    bad = work / "bad"
    bad.mkdir()
    good = CONFIG.format(experiment="bad-input", rows=TRAIN_ROWS, epochs=1)
    (bad / "rows.csv").write_text("a,b,y\n" + "".join(f"x{i % 3},{i},{i % 2}\n" for i in range(200)))
    frame = pd.DataFrame({"c": ["u", "v"] * 100, "x": [float("nan")] * 200, "y": [0, 1] * 100})
    frame.to_csv(bad / "empty_col.csv", index=False)
    frame.assign(x=["lots"] * 200).to_csv(bad / "words.csv", index=False)
    configs = {
        "unknown key": good.replace("epochs = 1", "epoch = 1"),
        "dropout 2.0": good.replace("layers = [32, 16]", "layers = [32, 16]\ndropout = 2.0"),
        "moms [2, 3]": good.replace("seed = 0\nlr", "moms = [2, 3]\nseed = 0\nlr"),
        "device cuda:7": good.replace('device = "cpu"', 'device = "cuda:7"'),
        "TOML syntax": good.replace("[train]", "[train"),
        "binary garbage": "\x00\xff\xfe garbage",
        "missing data file": good.replace('source = "example"', 'source = "nope.parquet"\ntarget = "y"'),
        "target not in the file": good.replace('source = "example"', 'source = "rows.csv"\ntarget = "late"').replace("n_rows = 4000", ""),
        "all-NaN column": good.replace('source = "example"', 'source = "empty_col.csv"\ntarget = "y"\ncontinuous = ["x"]').replace("n_rows = 4000", ""),
        "words in a number column": good.replace('source = "example"', 'source = "words.csv"\ntarget = "y"\ncontinuous = ["x"]').replace("n_rows = 4000", ""),
        "garbage CSV": good.replace('source = "example"', 'source = "garbage.csv"\ntarget = "y"').replace("n_rows = 4000", ""),
    }  # fmt: skip
    (bad / "garbage.csv").write_bytes(os.urandom(2000))
    if quick:
        configs = dict(list(configs.items())[::2])
    cases: list[tuple[str, list[str]]] = []
    for name, text in configs.items():
        path = bad / f"{name.replace(' ', '_')}.toml"
        path.write_text(text, errors="surrogateescape")
        cases.append((f"train: {name}", cli("train", "--config", str(path), "-q")))
    (bad / "not.parquet").write_text("not parquet")
    frame.to_parquet(bad / "wrong_columns.parquet")
    trunc = bad / "truncated.parquet"
    frame.to_parquet(trunc)
    trunc.write_bytes(trunc.read_bytes()[:-40])
    (bad / "outdir").mkdir()
    score_cases = {
        "missing input": ["--input", str(bad / "nope.parquet")],
        "not Parquet": ["--input", str(bad / "not.parquet")],
        "truncated Parquet": ["--input", str(trunc)],
        "input lacks the model's columns": ["--input", str(bad / "wrong_columns.parquet")],
        "output is a directory": ["--input", str(bad / "wrong_columns.parquet"), "--output", str(bad / "outdir")],
        "model that does not exist": ["--input", str(trunc), "--model", str(bad / "no-model")],
        "registry model that does not exist": ["--input", str(trunc), "--model", "models:/nope@champion"],
        "unknown --embeddings column": ["--input", str(bad / "wrong_columns.parquet"), "--embeddings", "nope"],
    }  # fmt: skip
    if quick:
        score_cases = dict(list(score_cases.items())[::2])
    for name, extra in score_cases.items():
        argv = ["score", "--model", str(servable), "--output", str(bad / "out.parquet"), "--no-progress"]
        # later flags win in argparse: the case's --model/--output replace the defaults above
        cases.append((f"score: {name}", cli(*argv, *extra)))
    for name, cmd in cases:
        t.requests += 1
        t.faults += 1
        proc = run_cmd(cmd, bad, timeout=300)
        if has_traceback(proc.stderr):
            t.tracebacks += 1
            t.note(f"{name}: traceback: {proc.stderr.strip().splitlines()[-1][:200]}")
        if proc.returncode != 2:
            t.note(f"{name}: exit {proc.returncode} (expected 2): {proc.stderr.strip()[-300:]}")
        elif "error" not in proc.stderr.lower():
            t.note(f"{name}: exit 2 without a message")
    runs = mlflow_runs(work)
    left = [r for r in runs if r["experiment"] == "bad-input"]
    if left:
        t.note(f"bad input left {len(left)} MLflow run(s): {[r['status'] for r in left]}")
    t.runs_non_terminal += sum(r["status"] == "RUNNING" for r in left)
    leftovers = temp_leftovers(bad) + [p for p in [bad / "out.parquet"] if p.exists()]
    t.partial_files += len(leftovers)
    return t


def mlflow_runs(work: Path) -> list[dict[str, str]]:
    """Every run in the bench's store (read with sqlite3 directly: always the current rows)."""
    import sqlite3

    db = work / "mlflow.db"
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
        rows = con.execute(
            "SELECT r.run_uuid, r.status, e.name FROM runs r JOIN experiments e "
            "ON r.experiment_id = e.experiment_id"
        ).fetchall()
    return [{"run_id": r, "status": st, "experiment": name} for r, st, name in rows]


# ---- 4. kills --------------------------------------------------------------------------------------
def kill_at(
    cmd: list[str], work: Path, started: Callable[[], bool], delay: float, sig: signal.Signals | None
) -> tuple[int | None, str, float, float]:
    """Start ``cmd``; once ``started()`` holds (its run exists, its output is being written), wait
    ``delay`` seconds and send ``sig`` (None: let it finish). Returns (exit code, or None if it finished
    first; stderr; seconds until started; seconds in all)."""
    err_path = work / f"stderr-{time.monotonic_ns()}.txt"
    t0 = time.monotonic()
    t_started = float("nan")
    killed = False
    with err_path.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=work, env=env_for(work), stdout=subprocess.DEVNULL, stderr=err)
        deadline = t0 + 300
        while proc.poll() is None and not started() and time.monotonic() < deadline:
            time.sleep(0.3)  # polls the MLflow store or the output folder: gently
        t_started = time.monotonic() - t0
        if sig is not None:
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
                killed = True
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = err_path.read_text(errors="replace")
    err_path.unlink()
    code = proc.returncode if (killed or sig is None) else None
    return code, text, t_started, time.monotonic() - t0


def kill_trains(work: Path, rng: random.Random, kills: list[signal.Signals]) -> Tally:
    from mlflow import MlflowClient

    t = Tally("kill train")
    tw = work / "train"
    tw.mkdir()
    epochs = 3
    config = tw / "config.toml"
    config.write_text(CONFIG.format(experiment="kills", rows=TRAIN_ROWS, epochs=epochs))
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    train_cmd = cli("train", "--config", str(config), "-q")

    def artifact_dirs() -> set[str]:
        # the run logs its config.json as soon as it starts: a new mlruns/<experiment>/<run id> folder
        # (watching the folder, not the sqlite store, keeps this process out of the child's way)
        return {p.name for p in tw.glob("mlruns/*/*") if p.is_dir()}

    def run_started(before: set[str]) -> Callable[[], bool]:
        return lambda: bool(artifact_dirs() - before)

    before = artifact_dirs()
    code, err, t_run, t_all = kill_at(train_cmd, tw, run_started(before), 0, None)
    t.requests += 1
    if code != 0:
        raise RuntimeError(f"the uninterrupted train failed: {err[-3000:]}")
    in_run = t_all - t_run
    t.note(f"uninterrupted train: {t_all:.1f} s, {in_run:.1f} s of it inside its MLflow run")
    for sig in kills:
        before = artifact_dirs()
        known = {r["run_id"] for r in mlflow_runs(work)}
        delay = rng.uniform(0.0, 0.9) * in_run  # a random point inside the run
        code, err, _, _ = kill_at(train_cmd, tw, run_started(before), delay, sig)
        t.requests += 1
        t.faults += 1
        if code is None:
            t.note(f"{sig.name} at +{delay:.1f} s: the train had already finished")
            continue
        if sig == signal.SIGTERM:
            if has_traceback(err):
                t.tracebacks += 1
                t.note(f"SIGTERM at +{delay:.1f} s: traceback on stderr: {err.strip()[-300:]}")
            if code not in (143, -signal.SIGTERM):
                t.note(f"SIGTERM at +{delay:.1f} s: exit {code}")
        new = [r for r in mlflow_runs(work) if r["run_id"] not in known]
        if not new:
            t.note(f"{sig.name} at +{delay:.1f} s: killed before its run started (nothing to resume)")
            continue
        run_id = new[0]["run_id"]
        status = new[0]["status"]
        checkpoints = list((tw / "runs" / run_id / "checkpoints").glob("checkpoint.pt"))
        epochs_done = len(client.get_metric_history(run_id, "epoch/train_loss"))
        t.note(f"{sig.name} at +{delay:.1f} s: run {run_id[:8]} {status}, {epochs_done} epoch(s) logged, "
               f"checkpoint {'yes' if checkpoints else 'no'}")  # fmt: skip
        if status == "FINISHED":
            continue
        resumed = run_cmd(cli("train", "--resume", run_id, "-q", "--json"), tw)
        t.requests += 1
        if has_traceback(resumed.stderr):
            t.tracebacks += 1
        steps = [m.step for m in client.get_metric_history(run_id, "epoch/train_loss")]
        final = client.get_run(run_id).info.status
        from_checkpoint = (not checkpoints) or "from the start" not in resumed.stderr
        if resumed.returncode != 0 or final != "FINISHED" or sorted(steps) != list(range(1, epochs + 1)):
            t.not_resumed += 1
            t.note(f"  resume of {run_id[:8]}: exit {resumed.returncode}, {final}, epochs {sorted(steps)}: "
                   f"{resumed.stderr.strip()[-300:]}")  # fmt: skip
        elif not from_checkpoint:
            t.not_resumed += 1
            t.note(f"  resume of {run_id[:8]} trained again from the start although a checkpoint existed")
    runs = [r for r in mlflow_runs(work) if r["experiment"] == "kills"]
    t.runs_non_terminal += sum(r["status"] == "RUNNING" for r in runs)
    t.partial_files += len(temp_leftovers(tw))
    for p in temp_leftovers(tw):
        t.note(f"left: {p.relative_to(work)}")
    return t


def whole(path: Path, rows: int) -> bool:
    import pyarrow.parquet as pq

    try:
        return bool(pq.read_metadata(path).num_rows == rows)
    except Exception:
        return False


def kill_scores(servable: Path, work: Path, rng: random.Random, kills: list[signal.Signals]) -> Tally:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedkit.datasets import FLIGHTS_TARGET, flights

    t = Tally("kill score")
    sw = work / "score"
    sw.mkdir()
    frame = flights(n_rows=20_000).frame.drop(columns=FLIGHTS_TARGET)
    idx = np.random.default_rng(0).integers(0, len(frame), 150_000)
    pq.write_table(pa.Table.from_pandas(frame.iloc[idx], preserve_index=False), sw / "in.parquet",
                   row_group_size=20_000)  # fmt: skip
    out = sw / "out.parquet"
    cmd = cli("score", "--model", str(servable), "--input", str(sw / "in.parquet"), "--output", str(out),
              "--chunk-rows", "5000", "--no-progress", "--overwrite")  # fmt: skip

    def writing() -> bool:
        return bool(temp_leftovers(sw))

    code, err, t_write, t_all = kill_at(cmd, sw, writing, 0, None)
    t.requests += 1
    if code != 0:
        raise RuntimeError(f"the uninterrupted score failed: {err[-3000:]}")
    out.unlink()
    in_write = t_all - t_write
    t.note(f"uninterrupted score: {t_all:.1f} s, {in_write:.1f} s of it writing the output")
    tmp_after_sigkill = 0
    for sig in kills:
        delay = rng.uniform(0.0, 0.9) * in_write
        code, err, _, _ = kill_at(cmd, sw, writing, delay, sig)
        t.requests += 1
        t.faults += 1
        left = temp_leftovers(sw)
        if code is None:
            t.note(f"{sig.name} at +{delay:.1f} s: the score had already finished")
        elif sig == signal.SIGTERM:
            if has_traceback(err):
                t.tracebacks += 1
            if code != 143 or len(err.strip().splitlines()) != 1:
                t.note(f"SIGTERM at +{delay:.1f} s: exit {code}, stderr {err.strip()[-300:]!r}")
            if left:
                t.partial_files += len(left)
                t.note(f"SIGTERM at +{delay:.1f} s left {[p.name for p in left]}")
            if out.exists() and whole(out, len(idx)):
                # the signal came after the output was renamed into place (the process was exiting):
                # the whole output, never a partial one; an incomplete file is counted below
                t.note(f"SIGTERM at +{delay:.1f} s came after the output was complete (exit {code})")
        else:
            tmp_after_sigkill += len(left)
        if code is not None and out.exists() and not whole(out, len(idx)):
            t.partial_files += 1  # a file under the final name must be the whole output
            t.note(f"{sig.name} at +{delay:.1f} s left an incomplete output file")
        # recovery as a user would: score again; the output must be whole and the leftovers gone
        again = run_cmd(cmd, sw)
        t.requests += 1
        if again.returncode != 0 or not whole(out, len(idx)):
            t.note(f"the rerun after {sig.name} failed: {again.stderr[-300:]}")
            t.partial_files += 1
        out.unlink(missing_ok=True)
    t.partial_files += len(temp_leftovers(sw))
    t.note(f"temporary files right after a SIGKILL (removed by the rerun): {tmp_after_sigkill}")
    return t


# ---- the run ---------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer examples, configs and kills (about 2 min)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = p.parse_args()
    out = args.out or RESULTS / ("faults_quick.json" if args.quick else "faults.json")
    rng = random.Random(args.seed)
    t_start = time.monotonic()
    train_kills = [signal.SIGTERM, signal.SIGKILL] * (1 if args.quick else 2)
    score_kills = [signal.SIGTERM, signal.SIGKILL] * (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="embedkit-faults-") as tmp:
        work = Path(tmp)
        global BENCH_DIR
        BENCH_DIR = work
        (work / "tmp").mkdir()
        print("training the service's model ...", flush=True)
        servable = build_servable(work)
        steps = [
            ("fuzzing the live service", lambda: fuzz_service(servable, work, args.quick)),
            ("bad configs and files", lambda: bad_inputs(servable, work, args.quick)),
            ("killing embedkit train", lambda: kill_trains(work, rng, train_kills)),
            ("killing embedkit score", lambda: kill_scores(servable, work, rng, score_kills)),
        ]
        tallies = []
        for what, step in steps:
            print(f"{what} ...", flush=True)
            t0 = time.monotonic()
            tally = step()
            tally.seconds = round(time.monotonic() - t0, 1)
            tallies.append(tally)
        left_in_tmpdir = sorted(
            p.name for p in (work / "tmp").iterdir() if not p.name.startswith("torchinductor_")
        )
    total = Tally("total")
    for name in ("requests", "faults", "server_errors", "tracebacks", "partial_files", "runs_non_terminal",
                 "not_resumed"):  # fmt: skip
        setattr(total, name, sum(getattr(t, name) for t in tallies))
    seconds = time.monotonic() - t_start
    lost = ("server_errors", "tracebacks", "partial_files", "runs_non_terminal", "not_resumed")
    result = {
        "command": "python bench/faults.py" + (" --quick" if args.quick else "") + f" --seed {args.seed}",
        "seconds": round(seconds, 1),
        "sections": [asdict(t) for t in tallies],
        "total": {k: v for k, v in asdict(total).items() if k not in ("section", "notes")},
        "all_lost_zero": all(getattr(total, k) == 0 for k in lost),
        "temp_dir_leftovers": left_in_tmpdir,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['command']}: {seconds:.0f} s on {os.cpu_count()} cores\n")
    print("| section | requests / commands | faults injected | 5xx | tracebacks | partial files "
          "| runs left RUNNING | trains not resumed | seconds |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in [*tallies, total]:
        label = f"**{t.section}**" if t.section == "total" else t.section
        print(f"| {label} | {t.requests} | {t.faults} | {t.server_errors} | {t.tracebacks} | {t.partial_files} "
              f"| {t.runs_non_terminal} | {t.not_resumed} | {t.seconds or seconds:.0f} |")  # fmt: skip
    print(f"\ntemporary-directory leftovers: {left_in_tmpdir or 'none'}; "
          f"all lost columns zero: {result['all_lost_zero']}; wrote {out}")  # fmt: skip


if __name__ == "__main__":
    main()
