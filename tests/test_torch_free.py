"""Serving and batch scoring need no torch: the torch-free part of embedkit, the service and ``embedkit
score`` run with ``import torch`` made impossible (as on a machine where only ``embedkit[serve]`` is
installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_service_support import ROOT, build_net_servable, frame

#: Put first on sys.path by PYTHONPATH: makes every ``import torch`` fail, as if torch were not installed.
BLOCKER = """
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, _NoTorch())
"""


def _embedkit_outside_nn() -> list[str]:
    """Every module of embedkit but the torch part (embedkit.nn), listed from the files, not imported."""
    import pkgutil

    root = Path(__file__).resolve().parents[1] / "embedkit"
    names = [m.name for m in pkgutil.iter_modules([str(root)]) if m.name != "nn"]
    return ["embedkit", *(f"embedkit.{n}" for n in sorted(names))]


TORCH_FREE_MODULES = [
    *_embedkit_outside_nn(),
    "pipelines.cli",
    "pipelines.score",
    "service.app",
    "service.cli",
]


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("no-torch")
    (site / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def run(code: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_the_blocker_blocks(no_torch_env: dict[str, str]) -> None:
    out = run("import torch", no_torch_env)
    assert out.returncode != 0 and "blocked by the test" in out.stderr


def test_the_torch_free_part_imports_without_torch(no_torch_env: dict[str, str]) -> None:
    code = f"import importlib, sys\nfor m in {TORCH_FREE_MODULES!r}:\n    importlib.import_module(m)\n"
    code += (
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('embedkit.nn')))"
    )
    out = run(code, no_torch_env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"


def test_training_without_torch_says_what_to_install(no_torch_env: dict[str, str]) -> None:
    code = """
import pandas as pd
from embedkit import EmbeddingTransformer
X = pd.DataFrame({"c": ["a", "b"] * 20})
try:
    EmbeddingTransformer().fit(X, [0, 1] * 20)
except ImportError as exc:
    print(exc)
"""
    out = run(code, no_torch_env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'pip install "embedkit[train]"' in out.stdout


@pytest.fixture(scope="module")
def servables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A net, and LightGBM on its embeddings (trained here, with torch)."""
    import lightgbm as lgb

    from embedkit.servable import load_servable, save_pipeline_servable
    from embedkit.transformer import EmbeddingTransformer

    root = tmp_path_factory.mktemp("servables")
    net = build_net_servable(root)
    loaded = load_servable(net)
    df = frame()
    x = df[loaded.feature_columns]
    tr = EmbeddingTransformer(tables=loaded.tables, columns=["city", "level", "flag"]).fit(x)
    est = lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(tr.transform(x), df["y"])
    pipe = save_pipeline_servable(
        root / "lgbm",
        transformer=tr,
        estimator=est,
        task="binary",
        classes=[0, 1],
        input_schema=loaded.input_schema,
        name="lgbm-pipeline",
    )
    return {"net": net, "lightgbm": pipe}


RECORDS = [
    {"city": "c1", "level": 2, "flag": True, "amount": 12.5, "score": 0.3},
    {"city": "never-seen", "level": None, "flag": False, "amount": None, "score": -1.0},
]


@pytest.mark.parametrize("kind", ["net", "lightgbm"])
def test_the_service_serves_without_torch(
    servables: dict[str, Path], no_torch_env: dict[str, str], kind: str
) -> None:
    code = f"""
import json, sys, time
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings
with TestClient(create_app(Settings(model_uri={str(servables[kind])!r}))) as c:
    while c.get("/ready").status_code != 200:
        time.sleep(0.05)
    r = c.post("/predict", json={{"records": {RECORDS!r}}})
    e = c.get("/embeddings/city/c1/neighbors", params={{"k": 3}})
    print(json.dumps({{"predict": [r.status_code, r.json()], "neighbors": e.status_code,
                      "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}}))
"""
    out = run(code, no_torch_env)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] == []
    status, body = got["predict"]
    assert status == 200, body
    assert body["unknown"]["city"] == 1 and len(body["probabilities"]) == 2
    assert got["neighbors"] == 200
    # the same answer as the servable loaded here, where torch is importable
    from embedkit.servable import load_servable

    want = load_servable(servables[kind]).predict_proba(pd.DataFrame(RECORDS).astype({"amount": "float64"}))
    np.testing.assert_allclose(np.array(body["probabilities"]), want, atol=1e-6)


def test_embedkit_score_runs_without_torch(
    servables: dict[str, Path], no_torch_env: dict[str, str], tmp_path: Path
) -> None:
    df = frame(n=300).drop(columns="y")
    src, dst = tmp_path / "in.parquet", tmp_path / "out.parquet"
    df.to_parquet(src)
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "score", "--model", str(servables["lightgbm"]), "--input",
         str(src), "--output", str(dst), "--proba", "--no-progress", "--threads", "1"],
        cwd=tmp_path, env=no_torch_env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    scored = pd.read_parquet(dst)
    assert len(scored) == 300 and "prediction" in scored.columns

    from embedkit.servable import load_servable

    want = load_servable(servables["lightgbm"]).predict_proba(df)[:, 1]
    proba = [c for c in scored.columns if c.startswith("proba_")]
    np.testing.assert_allclose(scored[proba[-1]].to_numpy(), want, atol=1e-9)


def test_embedkit_serve_runs_without_torch(
    servables: dict[str, Path], no_torch_env: dict[str, str], tmp_path: Path
) -> None:
    """The real server started the way a user starts it (``embedkit serve``: the command's module,
    ``pipelines.cli``, hands over to the service), uvicorn, on a LightGBM-on-embeddings model."""
    import httpx
    from test_service_support import live_server

    with live_server(
        str(servables["lightgbm"]),
        tmp_path / "server.log",
        extra_env={"PYTHONPATH": no_torch_env["PYTHONPATH"]},
        embedkit_command=True,
    ) as server:
        server.wait_ready()
        r = httpx.post(f"{server.url}/predict", json={"records": RECORDS}, timeout=10)
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 2
        inv = httpx.post(f"{server.url}/invocations", json={"dataframe_records": RECORDS[:1]}, timeout=10)
        assert inv.status_code == 200 and inv.json()["predictions"][0]["proba_1"] == pytest.approx(
            r.json()["probabilities"][0][1]
        )
    assert "blocked by the test" not in server.output()
