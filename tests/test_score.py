"""Batch scoring on one machine (``embedkit score``, ``pipelines.score``): chunked equals all at once,
every output column matches the model, bad input fails with exit code 2 and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_service_support import build_net_servable, build_pipeline_servable, frame, register

from embedkit.exceptions import DataError
from embedkit.servable import load_servable
from pipelines import cli
from pipelines.score import ScoreOptions, output_schema, resolve_options, score_chunk, score_parquet


@pytest.fixture(scope="module")
def servables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("score-models")
    out = {
        task: build_net_servable(root / task, task=task) for task in ("binary", "multiclass", "regression")
    }
    out["pipeline"] = build_pipeline_servable(root / "pipeline", out["binary"])
    return out


def rows(n: int, task: str = "binary", seed: int = 1) -> pd.DataFrame:
    df = frame(n=n, seed=seed, task=task).drop(columns="y")
    df.insert(0, "row_id", np.arange(n, dtype=np.int64) * 10)
    return df


def write_dir(df: pd.DataFrame, path: Path, files: int = 3, row_group_size: int = 170) -> Path:
    """``df`` split over several Parquet files with small, uneven row groups (chunks must not follow them)."""
    path.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(df)), files)):
        table = pa.Table.from_pandas(df.iloc[part], preserve_index=False)
        pq.write_table(table, path / f"part-{i:03d}.parquet", row_group_size=row_group_size)
    return path


def score_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict | None, str]:
    code = cli.main(["score", *argv, "--no-progress", "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


# ---- chunked == all at once, and equal to the model ------------------------------------------------
@pytest.mark.floats
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression", "pipeline"])
def test_chunked_scoring_equals_scoring_at_once(servables, tmp_path, task):
    servable = load_servable(servables[task])
    df = rows(2500, task="multiclass" if task == "multiclass" else "binary")
    if task == "pipeline":  # its logistic regression takes "amount" as is, and no NaN
        df["amount"] = df["amount"].fillna(0.0)
    src = write_dir(df, tmp_path / "in")
    options = resolve_options(servable, proba=task != "regression", with_embeddings=True, keep=["row_id"])

    result = score_parquet(servable, src, tmp_path / "out.parquet", options, chunk_rows=700)
    assert (result.rows, result.chunks) == (2500, 4)  # 700 + 700 + 700 + 400, whatever the row groups
    got = pq.read_table(tmp_path / "out.parquet")
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups == 4

    schema = output_schema(servable, options, pa.Table.from_pandas(df, preserve_index=False).schema)
    at_once = score_chunk(servable, df, options, schema)
    assert got.schema == at_once.schema == schema
    g, a = got.to_pandas(), at_once.to_pandas()
    assert g["row_id"].tolist() == df["row_id"].tolist()
    # a matmul's last bits depend on the batch size (AVX-512 kernels block differently): labels must be
    # equal, float predictions and probabilities equal within float32 rounding
    if g["prediction"].dtype.kind != "f":
        assert g["prediction"].tolist() == a["prediction"].tolist()
    floats = [c for c in g.columns if c.startswith(("proba_", "prediction")) and g[c].dtype.kind == "f"]
    np.testing.assert_allclose(g[floats].to_numpy(), a[floats].to_numpy(), rtol=1e-6, atol=1e-7)
    emb = [c for c in g.columns if "__emb_" in c]
    np.testing.assert_array_equal(g[emb].to_numpy(), a[emb].to_numpy())

    # and each column is what the model says
    x = df[servable.feature_columns]
    expected = servable.predict(x)
    if task == "regression":
        np.testing.assert_allclose(g["prediction"].to_numpy(), expected, rtol=1e-6)
        assert schema.field("prediction").type == pa.float64()
        assert not any(c.startswith("proba_") for c in g.columns)
    else:
        assert g["prediction"].tolist() == list(expected)
        proba = g[[f"proba_{c}" for c in servable.classes]].to_numpy()
        np.testing.assert_allclose(proba, servable.predict_proba(x), rtol=1e-6, atol=1e-7)
    for col, table in servable.tables.items():
        names = [f"{col}__emb_{i}" for i in range(table.dim)]
        np.testing.assert_array_equal(g[names].to_numpy(), table.lookup(df[col]))
        assert all(schema.field(n).type == pa.float32() for n in names)


def test_a_single_file_chunk_larger_than_the_input_and_no_extras(servables, tmp_path):
    servable = load_servable(servables["binary"])
    df = rows(300)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "in.parquet")
    result = score_parquet(servable, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_rows=10_000)
    assert (result.rows, result.chunks, result.columns) == (300, 1, ["prediction"])
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.schema.field("prediction").type == pa.int64()  # classes [0, 1] keep their type
    assert got.column("prediction").to_pylist() == servable.predict(df).tolist()


def test_empty_input_gives_an_empty_file_with_the_schema(servables, tmp_path):
    servable = load_servable(servables["multiclass"])
    df = rows(0, task="multiclass")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "in.parquet")
    options = resolve_options(servable, proba=True, embeddings=["city"])
    result = score_parquet(servable, tmp_path / "in.parquet", tmp_path / "out.parquet", options)
    got = pq.read_table(tmp_path / "out.parquet")
    assert result.rows == got.num_rows == 0
    assert got.column_names == ["prediction", "proba_high", "proba_low", "proba_mid"] + [
        f"city__emb_{i}" for i in range(servable.tables["city"].dim)
    ]


def test_a_failure_midway_leaves_no_output(servables, tmp_path, monkeypatch):
    servable = load_servable(servables["binary"])
    src = write_dir(rows(1000), tmp_path / "in")
    calls = {"n": 0}
    real = servable.model.predict_raw

    def fails_on_the_third_chunk(inputs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real(inputs)

    monkeypatch.setattr(servable.model, "predict_raw", fails_on_the_third_chunk)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        score_parquet(servable, src, out_dir / "scores.parquet", chunk_rows=300)
    assert list(out_dir.iterdir()) == []  # neither the output nor a temporary file


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_mid_run_removes_the_temporary_file_and_says_so(servables, tmp_path, sig):
    """A real ``embedkit score`` process, signalled while it writes: no output, no temporary file, one
    line on stderr, 143 for SIGTERM (128 + 15) and 130 for SIGINT."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(rows(200_000), preserve_index=False), src, row_group_size=2_000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "score", "--model", str(servables["binary"]), "--input",
         str(src), "--output", str(out_dir / "o.parquet"), "--chunk-rows", "500", "--no-progress"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.endswith(".tmp") and p.stat().st_size > 0 for p in out_dir.iterdir()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the scoring never started writing"
            time.sleep(0.05)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (143 if sig == "SIGTERM" else 130), err
    assert list(out_dir.iterdir()) == []  # neither the output nor the temporary file
    assert err.count("\n") == 1 and err.endswith("no output was written\n"), err
    assert "Traceback" not in err


# ---- the command -----------------------------------------------------------------------------------
def test_cli_scores_a_registered_model_like_the_pyfunc_model(servables, mlflow_tmp, tmp_path, capsys):
    import mlflow.pyfunc

    version = register(mlflow_tmp, servables["binary"], "score-test", "champion", tmp_path / "artifacts")
    df = rows(1200)
    src = write_dir(df, tmp_path / "in", files=2)
    code, out, err = score_cli(
        capsys,
        "--model",
        "models:/score-test@champion",
        "--input",
        str(src),
        "--output",
        str(tmp_path / "scores.parquet"),
        "--chunk-rows",
        "500",
        "--keep",
        "row_id,city",
        "--embeddings",
        "city",
        "--proba",
    )
    assert code == 0, err
    assert (out["rows"], out["chunks"]) == (1200, 3) and version == "1"
    got = pd.read_parquet(tmp_path / "scores.parquet")
    dim = load_servable(servables["binary"]).tables["city"].dim
    assert list(got.columns) == ["row_id", "city", "prediction", "proba_0", "proba_1"] + [
        f"city__emb_{i}" for i in range(dim)
    ]
    assert got["row_id"].tolist() == df["row_id"].tolist()
    assert got["city"].isna().tolist() == df["city"].isna().tolist()  # ids pass through, nulls included
    pyfunc = mlflow.pyfunc.load_model("models:/score-test@champion").predict(df.drop(columns="row_id"))
    assert got["prediction"].tolist() == pyfunc["prediction"].tolist()
    np.testing.assert_allclose(
        got[["proba_0", "proba_1"]].to_numpy(), pyfunc[["proba_0", "proba_1"]].to_numpy(), rtol=1e-6
    )

    # a run's logged servable and a local model bundle give the same scores
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(servables["binary"]), "servable")
    for model in (f"runs:/{run.info.run_id}/servable", str(servables["binary"].parent / "bundle")):
        target = tmp_path / f"scores-{len(list(tmp_path.glob('scores-*')))}.parquet"
        code, _, err = score_cli(capsys, "--model", model, "--input", str(src), "--output", str(target))
        assert code == 0, err
        assert pd.read_parquet(target)["prediction"].tolist() == got["prediction"].tolist()


def test_cli_progress_bar_and_summary_go_to_stderr_and_stdout(servables, tmp_path, capsys):
    pq.write_table(pa.Table.from_pandas(rows(400), preserve_index=False), tmp_path / "in.parquet")
    src, out = str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet")
    model = str(servables["regression"])
    code = cli.main(["score", "--model", model, "--input", src, "--output", out, "--chunk-rows", "100"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "scored 400 rows" in out and "scoring" in err and "400/400" in err


def test_cli_errors_name_the_problem_and_write_nothing(servables, tmp_path, capsys):
    df = rows(200)
    good = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), good)
    no_level = tmp_path / "no_level.parquet"
    pq.write_table(pa.Table.from_pandas(df.drop(columns="level"), preserve_index=False), no_level)
    model = str(servables["binary"])
    out = tmp_path / "out.parquet"

    def fails(*argv: str, match: str) -> None:
        code, _, err = score_cli(capsys, *argv)
        assert code == 2, err
        assert match in err, err
        assert "Traceback" not in err

    fails(
        "--model", model, "--input", str(tmp_path / "nope"), "--output", str(out), match="nope does not exist"
    )
    fails("--model", model, "--input", str(no_level), "--output", str(out), match="['level'] missing")
    fails(
        "--model", model, "--input", str(good), "--output", str(out), "--keep", "order_id", match="order_id"
    )
    fails(
        "--model", model, "--input", str(good), "--output", str(out), "--embeddings", "amount", match="amount"
    )
    fails("--model", str(servables["regression"]), "--input", str(good), "--output", str(out), "--proba",
          match="--proba is for classifiers")  # fmt: skip
    fails(
        "--model", str(tmp_path / "no-model"), "--input", str(good), "--output", str(out), match="not found"
    )
    fails("--model", str(tmp_path), "--input", str(good), "--output", str(out), match="neither")
    fails("--model", "models:/x", "--input", str(good), "--output", str(out), match="models:/NAME@ALIAS")
    fails("--model", model, "--input", str(good), "--output", str(tmp_path), match="is a directory")
    fails("--model", model, "--input", str(good), "--output", str(out), "--threads", "0", match="--threads")
    assert not out.exists()

    # an existing output is kept unless --overwrite
    out.write_bytes(b"precious")
    fails("--model", model, "--input", str(good), "--output", str(out), match="--overwrite")
    assert out.read_bytes() == b"precious"
    code, result, err = score_cli(
        capsys, "--model", model, "--input", str(good), "--output", str(out), "--overwrite"
    )
    assert code == 0, err
    assert result["rows"] == 200 and pq.read_table(out).num_rows == 200


def test_options_are_checked_against_the_model(servables):
    servable = load_servable(servables["multiclass"])
    with pytest.raises(DataError, match=r"clash with output columns"):
        resolve_options(servable, proba=True, keep=["proba_low"])
    assert resolve_options(servable, embeddings=["city", "city"]) == ScoreOptions(embeddings=("city",))
    assert resolve_options(servable, with_embeddings=True).embeddings == ("city", "level", "flag")


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_bundle_tables_servable_and_scores_follow_the_umask(tmp_path, umask):
    import os
    import stat

    previous = os.umask(umask)
    try:
        servable = build_net_servable(tmp_path / "model")
        out = tmp_path / "scores.parquet"
        score_parquet(load_servable(servable), write_dir(rows(300), tmp_path / "in"), out, chunk_rows=100)
    finally:
        os.umask(previous)
    made = [tmp_path / "model", *(tmp_path / "model").rglob("*"), out]
    assert any(p.name == "manifest.json" for p in made) and any(p.suffix == ".parquet" for p in made)
    for path in made:
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == want, (path, oct(stat.S_IMODE(path.stat().st_mode)))
