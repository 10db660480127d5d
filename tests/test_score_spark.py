"""Batch scoring on a local Spark (``local[2]``): the Spark job writes what local scoring writes, through the
Arrow engine and through MLflow's ``spark_udf``, and the embedding tables join in Spark SQL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_service_support import build_net_servable, frame, register

from embedkit.servable import load_servable
from pipelines.score import output_schema, resolve_options, score_chunk

pytestmark = [
    pytest.mark.spark,
    # pyspark 4.x on pandas 3: its own deprecation notices, not ours
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
pyspark = pytest.importorskip("pyspark")


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One small local Spark for the module: 2 cores, 2 shuffle partitions, no UI."""
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as mp:
        # the executors' Python is this one (with embedkit installed)
        mp.setenv("PYSPARK_PYTHON", sys.executable)
        mp.setenv("PYSPARK_DRIVER_PYTHON", sys.executable)
        session = (
            SparkSession.builder.master("local[2]")
            .appName("embedkit-tests")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.default.parallelism", "2")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.memory", "1g")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.local.dir", str(tmp_path_factory.mktemp("spark-local")))
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_net_servable(tmp_path_factory.mktemp("spark-model"), task="multiclass")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    """600 rows in 3 files, with missing cities and a city the model never saw."""
    df = frame(n=600, seed=5, task="multiclass").drop(columns="y")
    df.loc[::50, "city"] = "never-seen"
    df.insert(0, "row_id", np.arange(len(df), dtype=np.int64))
    root = tmp_path_factory.mktemp("spark-data") / "in"
    root.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(df)), 3)):
        pq.write_table(pa.Table.from_pandas(df.iloc[part], preserve_index=False), root / f"part-{i}.parquet")
    return df, root


def local_scores(model: Path, df: pd.DataFrame, **options: object) -> pd.DataFrame:
    servable = load_servable(model)
    opts = resolve_options(servable, **options)  # type: ignore[arg-type]
    schema = output_schema(servable, opts, pa.Table.from_pandas(df, preserve_index=False).schema)
    return score_chunk(servable, df, opts, schema).to_pandas()


def assert_same_scores(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    got = got.sort_values("row_id").reset_index(drop=True)
    assert list(got.columns) == list(expected.columns)
    assert got["row_id"].tolist() == expected["row_id"].tolist()
    assert got["prediction"].tolist() == expected["prediction"].tolist()
    floats = [c for c in expected.columns if c.startswith("proba_") or "__emb_" in c]
    np.testing.assert_allclose(got[floats].to_numpy(), expected[floats].to_numpy(), rtol=1e-6, atol=1e-7)


def test_arrow_engine_equals_local_scoring_with_embeddings(spark, model, data, tmp_path):
    from pipelines.score_spark import main

    df, src = data
    out = tmp_path / "scored"
    argv = ["--model", str(model), "--input", str(src), "--output", str(out)]
    code = main([*argv, "--proba", "--with-embeddings", "--keep", "row_id"])
    assert code == 0
    got = pd.read_parquet(out)
    assert_same_scores(got, local_scores(model, df, proba=True, with_embeddings=True, keep=["row_id"]))
    assert got["city__emb_0"].dtype == np.float32

    # an existing output is an error (exit 2) unless --overwrite
    assert main([*argv, "--keep", "row_id"]) == 2
    assert main([*argv, "--keep", "row_id", "--overwrite"]) == 0
    assert pd.read_parquet(out).columns.tolist() == ["row_id", "prediction"]
    # a missing feature column is named before Spark runs anything
    from embedkit.exceptions import DataError
    from pipelines.score_spark import scored_dataframe

    with pytest.raises(DataError, match=r"\['level'\] missing"):
        scored_dataframe(spark.read.parquet(str(src)).drop("level"), model)


def test_mlflow_spark_udf_engine_on_the_registered_model(spark, model, data, mlflow_tmp, tmp_path):
    from pipelines.score_spark import score_spark

    register(mlflow_tmp, model, "spark-test", "champion", tmp_path / "artifacts")
    df, src = data
    out = tmp_path / "scored"
    result = score_spark(
        spark, "models:/spark-test@champion", str(src), str(out), engine="mlflow", proba=True, keep=["row_id"]
    )
    assert result.columns == ["row_id", "prediction", "proba_high", "proba_low", "proba_mid"]
    assert_same_scores(pd.read_parquet(out), local_scores(model, df, proba=True, keep=["row_id"]))


def test_embedding_tables_join_in_spark_sql(spark, model, data):
    from pipelines.score_spark import embedding_join_sql, register_embedding_views, tables_dir

    df, src = data
    views = register_embedding_views(spark, tables_dir(model))
    assert {c: v.view for c, v in views.items()} == {
        "city": "emb_city",
        "level": "emb_level",
        "flag": "emb_flag",
    }
    assert spark.sql("SELECT count(*) AS n FROM emb_city WHERE kind = 'value'").first()["n"] == 8

    spark.read.parquet(str(src)).createOrReplaceTempView("rows")
    sql = embedding_join_sql("rows", [views["city"], views["level"]])
    got = spark.sql(sql).toPandas().sort_values("row_id").reset_index(drop=True)
    expected = local_scores(model, df, embeddings=["city", "level"], keep=["row_id"])
    emb = [c for c in expected.columns if "__emb_" in c]
    assert got.columns.tolist() == [*df.columns, *emb]
    # null cities take the missing row, "never-seen" the unknown row: as in local scoring
    assert df["city"].isna().any() and (df["city"] == "never-seen").any()
    np.testing.assert_array_equal(got[emb].to_numpy(np.float32), expected[emb].to_numpy())
