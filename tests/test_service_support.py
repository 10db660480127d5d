"""Helpers of the service tests (no tests here): tiny servables, an MLflow registration and a live server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-key-0123456789"

#: One valid record for the models built by :func:`frame` (binary / multiclass / regression, no dates).
RECORD: dict[str, Any] = {"city": "c1", "level": 2, "flag": True, "amount": 12.5, "score": -0.3}


def frame(n: int = 400, seed: int = 0, task: str = "binary", dates: bool = False) -> pd.DataFrame:
    """Every input kind the service types: string, integer and boolean categories, numbers with gaps."""
    rng = np.random.default_rng(seed)
    city = rng.integers(0, 8, n)
    df = pd.DataFrame(
        {
            "city": pd.Series([f"c{c}" for c in city], dtype="str").where(rng.random(n) > 0.05),
            "level": rng.integers(0, 5, n).astype("int64"),
            "flag": rng.random(n) > 0.5,
            "amount": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2.0, 10.0, n)),
            "score": rng.normal(size=n),
        }
    )
    if dates:
        df["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 400, n), unit="D")
    signal_ = (city % 3) - 1 + 0.5 * df["score"].to_numpy()
    if task == "binary":
        df["y"] = (signal_ + rng.normal(scale=0.5, size=n) > 0).astype("int64")
    elif task == "multiclass":
        df["y"] = np.array(["low", "mid", "high"])[city % 3]
    else:
        df["y"] = signal_ + rng.normal(scale=0.1, size=n)
    return df


def build_net_servable(
    root: Path, task: str = "binary", dates: bool = False, name: str = "svc-test", seed: int = 0
) -> Path:
    """Train a tiny net for one epoch and package it as a servable directory under ``root``."""
    from embedkit.nn.learner import Learner
    from embedkit.nn.trainer import TrainConfig
    from embedkit.servable import save_net_servable
    from embedkit.spec import FeatureSpec

    df = frame(task=task, dates=dates, seed=seed)
    spec = FeatureSpec(
        target="y",
        categorical=["city", "level", "flag"],
        continuous=["amount", "score"],
        dates=["when"] if dates else [],
    )
    learn = Learner.from_frame(
        df,
        spec,
        task=task,
        train_config=TrainConfig(epochs=1, lr=1e-2, batch_size=128, seed=seed, device="cpu"),
    )
    learn.fit(df)
    learn.save(root / "bundle")
    return save_net_servable(root / "servable", root / "bundle", name=name)


def build_pipeline_servable(root: Path, net_servable: Path) -> Path:
    """Embeddings of ``net_servable`` → logistic regression, packaged as a kind "pipeline" servable."""
    from sklearn.linear_model import LogisticRegression

    from embedkit.servable import load_servable, save_pipeline_servable
    from embedkit.transformer import EmbeddingTransformer

    net = load_servable(net_servable)
    df = frame()
    x = df[net.feature_columns]
    transformer = EmbeddingTransformer(tables=net.tables, columns=["city", "level", "flag"]).fit(x)
    features = np.nan_to_num(np.asarray(transformer.transform(x)))
    estimator = LogisticRegression(max_iter=200).fit(features, df["y"])
    return save_pipeline_servable(
        root / "pipeline",
        transformer=transformer,
        estimator=estimator,
        task="binary",
        classes=[0, 1],
        input_schema=net.input_schema,
        name="svc-pipeline",
    )


def register(tracking_uri: str, servable: Path, name: str, alias: str, artifacts: Path) -> str:
    """Register ``servable`` as the pipelines do (models-from-code ``pipelines/pyfunc_model.py``); returns
    the new version and points ``alias`` at it."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name("svc-tests")
    exp_id = (
        exp.experiment_id
        if exp
        else mlflow.create_experiment("svc-tests", artifact_location=artifacts.as_uri())
    )
    with mlflow.start_run(experiment_id=exp_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(ROOT / "pipelines" / "pyfunc_model.py"),
            artifacts={"servable": str(servable)},
            pip_requirements=["mlflow"],
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    MlflowClient(tracking_uri=tracking_uri).set_registered_model_alias(name, alias, version)
    return version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The service in a subprocess on 127.0.0.1 (a real uvicorn), stopped with SIGTERM: started as
    ``python -m service serve --model-uri ...``, with ``embedkit_command=True`` through the ``embedkit``
    command's own module (``python -m pipelines.cli serve ...``, what ``embedkit serve`` runs), or with
    ``factory=True`` as ``uvicorn service.app:create_app --factory`` configured by ``EMBEDKIT_*``
    environment variables."""

    def __init__(
        self,
        model_uri: str,
        log: Path,
        extra_env: dict[str, str] | None = None,
        args: list[str] | None = None,
        factory: bool = False,
        embedkit_command: bool = False,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDKIT_")}
        env.update({"PYTHONPATH": str(ROOT), **(extra_env or {})})
        if factory:
            env["EMBEDKIT_MODEL_URI"] = model_uri
            cmd = [
                sys.executable,
                "-m",
                "uvicorn",
                "service.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *(args or []),
            ]
        else:
            cmd = [
                sys.executable,
                "-m",
                *(["pipelines.cli"] if embedkit_command else ["service"]),
                "serve",
                "--model-uri",
                model_uri,
                "--port",
                str(self.port),
                "--log-level",
                "info",
                *(args or []),
            ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0, headers: dict[str, str] | None = None) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ready", headers=headers, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"the server was not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int:
        self.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@contextlib.contextmanager
def live_server(model_uri: str, log: Path, **kwargs: Any) -> Iterator[LiveServer]:
    server = LiveServer(model_uri, log, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def build_baseline_servable(
    root: Path, estimator: str = "lightgbm", encoder: str = "ordinal", tables: Any = None
) -> Path:
    """A downstream baseline (``encoder`` codes → ``estimator``), packaged as a kind "baseline" servable."""
    from embedkit.servable import save_baseline_servable
    from pipelines.sklearn_models import make_baseline

    df = frame()
    cats, conts = ["city", "level", "flag"], ["amount", "score"]
    params = {"n_estimators": 20, "verbosity": -1} if estimator == "lightgbm" else {}
    model = make_baseline(encoder, estimator, "binary", cats, conts, params, seed=0)
    model.fit(df[cats + conts], df["y"])
    kinds = {"city": "string", "level": "integer", "flag": "boolean"}
    schema = [{"name": c, "role": "categorical", "kind": kinds[c]} for c in cats]
    schema += [{"name": c, "role": "continuous", "kind": "number"} for c in conts]
    return save_baseline_servable(
        root / "baseline",
        encoder=model[:-1],
        estimator=model[-1],
        task="binary",
        classes=[0, 1],
        input_schema=schema,
        name="svc-baseline",
        tables=tables,
    )
