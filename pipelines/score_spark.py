"""Batch scoring on Apache Spark, and the embedding tables as Spark SQL views.

Two engines, same columns as ``embedkit score`` (:mod:`pipelines.score`):

- ``arrow`` (default): the model is resolved once on the driver (``models:/``, ``runs:/`` or a local
  servable or bundle, as ``embedkit score`` does), sent to the executors as a broadcast variable, and each
  partition is scored by :func:`pipelines.score.score_chunk` through ``DataFrame.mapInArrow``. Executors
  need the embedkit package, not access to MLflow. Writes ``prediction``, ``proba_<class>`` and
  ``{column}__emb_{i}`` columns, equal to local scoring.
- ``mlflow``: MLflow's ``mlflow.pyfunc.spark_udf`` over the registered pyfunc model (``env_manager="local"``:
  the executors' Python environment). Writes ``prediction`` and ``proba_<class>``; embedding columns come
  from joining the tables instead (below).

The embedding tables are plain Parquet (one file per column; see docs/formats.md): :func:`register_embedding_views`
makes each a temporary view, and :func:`embedding_join_sql` writes the join that gives a raw column its
vectors with the net's rules (a null value takes the ``missing`` row, a value not in the table the
``unknown`` row).

Run: ``spark-submit pipelines/score_spark.py --model URI --input PATH --output PATH`` (or ``python -m
pipelines.score_spark ... --master local[2]``). See docs/scale.md for clusters.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from embedkit.exceptions import DataError, EmbedkitError
from embedkit.servable import Servable, load_servable

# absolute imports: spark-submit runs this file as a script, outside its package
from pipelines.score import (
    ScoreOptions,
    add_output_arguments,
    check_input_columns,
    needed_columns,
    output_schema,
    resolve_model,
    resolve_options,
    score_chunk,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ENGINES = ("arrow", "mlflow")


# ---- scoring ---------------------------------------------------------------------------------------
def scored_dataframe(
    df: DataFrame,
    servable_dir: str | Path,
    *,
    proba: bool = False,
    embeddings: Iterable[str] | None = None,
    with_embeddings: bool = False,
    keep: Iterable[str] | None = None,
) -> DataFrame:
    """``df`` scored by the servable at ``servable_dir`` (lazy: nothing runs until an action).

    The servable's files are sent to the executors as a broadcast variable (they need embedkit installed,
    not access to the model's location).
    """
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    servable_dir = Path(servable_dir)
    servable = load_servable(servable_dir)
    options = resolve_options(
        servable, proba=proba, embeddings=embeddings, with_embeddings=with_embeddings, keep=keep
    )
    check_input_columns(servable, options, df.columns)
    source = df.select(*needed_columns(servable, options))
    schema = output_schema(servable, options, to_arrow_schema(source.schema))
    # The servable's files travel as a broadcast variable: it lives as long as the application needs it,
    # whatever happens to the driver's directory, and each executor receives it once.
    files = source.sparkSession.sparkContext.broadcast(_pack(servable_dir))
    key = f"{servable_dir.resolve()}:{servable.meta.get('created_at')}"

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        local = _unpacked_servable(key, files.value)
        for batch in batches:
            yield from score_chunk(local, batch, options, schema).to_batches()

    return source.mapInArrow(score_partition, from_arrow_schema(schema))


def _pack(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (a servable is JSON, Parquet and weights: megabytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


#: In each executor's Python worker, the last servable loaded (workers are reused across partitions).
_LOADED: dict[str, Servable] = {}


def _unpacked_servable(key: str, files: dict[str, bytes]) -> Servable:
    if key not in _LOADED:
        with tempfile.TemporaryDirectory(prefix="embedkit-servable-") as tmp:
            for rel, data in files.items():
                target = Path(tmp) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            servable = load_servable(tmp)  # reads everything into memory: the files can go
        _LOADED.clear()
        _LOADED[key] = servable
    return _LOADED[key]


def mlflow_scored_dataframe(
    df: DataFrame, model_uri: str, servable: Servable, options: ScoreOptions
) -> DataFrame:
    """``df`` scored by MLflow's ``spark_udf`` over the registered pyfunc model (no embedding columns)."""
    from pyspark.sql.functions import col, struct
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    from pipelines import tracking

    if options.embeddings:
        raise DataError(
            "the mlflow engine writes predictions only; use --engine arrow for embedding columns, or join "
            "the embedding tables in Spark SQL (register_embedding_views)"
        )
    if not model_uri.startswith(("models:/", "runs:/")):
        raise DataError(
            f"the mlflow engine takes a models:/ or runs:/ URI of a pyfunc model, not {model_uri!r}"
        )
    check_input_columns(servable, options, df.columns)
    schema = output_schema(servable, options, to_arrow_schema(df.select(*options.keep).schema))
    result = pa.schema([f for f in schema if f.name not in options.keep])
    udf = tracking.spark_udf(df.sparkSession, model_uri, from_arrow_schema(result))
    scored = udf(struct(*[col(f"`{c}`") for c in servable.feature_columns]))
    return df.select(*[col(f"`{c}`") for c in options.keep], scored.alias("_embedkit")).select(
        *[col(f"`{c}`") for c in options.keep], *[col(f"_embedkit.`{f.name}`") for f in result]
    )


@dataclass
class SparkScoreResult:
    output: str
    engine: str
    columns: list[str]


def score_spark(
    spark: SparkSession,
    model_uri: str,
    input_path: str,
    output_path: str,
    *,
    engine: str = "arrow",
    proba: bool = False,
    embeddings: Iterable[str] | None = None,
    with_embeddings: bool = False,
    keep: Iterable[str] | None = None,
    mode: str = "errorifexists",
) -> SparkScoreResult:
    """Read the Parquet ``input_path``, score it with ``model_uri`` and write Parquet to ``output_path``.

    ``mode`` is Spark's save mode (``errorifexists`` or ``overwrite``). Paths are any Spark reads and
    writes (local, ``hdfs://``, ``s3a://``, ...).
    """
    if engine not in ENGINES:
        raise DataError(f"engine {engine!r}: expected one of {ENGINES}")
    df = spark.read.parquet(input_path)
    with tempfile.TemporaryDirectory(prefix="embedkit-spark-") as work:
        resolved = resolve_model(model_uri, work)
        if engine == "arrow":
            scored = scored_dataframe(
                df, resolved, proba=proba, embeddings=embeddings, with_embeddings=with_embeddings, keep=keep
            )
        else:
            servable = load_servable(resolved)
            options = resolve_options(
                servable, proba=proba, embeddings=embeddings, with_embeddings=with_embeddings, keep=keep
            )
            scored = mlflow_scored_dataframe(df, model_uri, servable, options)
        scored.write.mode(mode).parquet(output_path)
    return SparkScoreResult(output_path, engine, scored.columns)


# ---- embedding tables in Spark SQL -----------------------------------------------------------------
@dataclass(frozen=True)
class EmbeddingView:
    column: str  # the categorical column it embeds
    view: str  # the temporary view's name
    dim: int


def tables_dir(servable_dir: str | Path) -> Path:
    """The embedding tables directory inside a servable (a net's bundle, or a pipeline's transformer)."""
    path = Path(servable_dir)
    meta = load_servable(path).meta
    return path / meta["bundle"] / "tables" if meta["kind"] == "net" else path / "tables"


def register_embedding_views(
    spark: SparkSession, tables: str | Path, prefix: str = "emb_"
) -> dict[str, EmbeddingView]:
    """Register each table of the embedding tables directory ``tables`` as the temporary view
    ``{prefix}{column}``. The directory is checked first (format version, checksums)."""
    from embedkit.tables import load_tables

    path = Path(tables)
    load_tables(path, verify=True)
    manifest = json.loads((path / "manifest.json").read_text())
    views = {}
    for entry in manifest["columns"]:
        view = f"{prefix}{entry['name']}"
        spark.read.parquet(str(path / entry["file"])).createOrReplaceTempView(view)
        views[entry["name"]] = EmbeddingView(entry["name"], view, int(entry["dim"]))
    return views


def embedding_join_sql(source: str, views: Iterable[EmbeddingView]) -> str:
    """SQL selecting every column of the view ``source`` plus ``{column}__emb_{i}`` for each view.

    A null value gets the ``missing`` row's vector, a value absent from the table the ``unknown`` row's:
    the same vectors as ``embedkit score --embeddings`` and ``EmbeddingTransformer``.
    """
    selects, joins = ["s.*"], []
    for j, v in enumerate(views):
        c = f"s.`{v.column}`"
        for i in range(v.dim):
            e = f"emb_{i}"
            selects.append(
                f"CASE WHEN {c} IS NULL THEN m{j}.{e} ELSE coalesce(v{j}.{e}, u{j}.{e}) END "
                f"AS `{v.column}__emb_{i}`"
            )
        joins += [
            f"LEFT JOIN (SELECT * FROM `{v.view}` WHERE kind = 'value') v{j} ON {c} = v{j}.category",
            f"CROSS JOIN (SELECT * FROM `{v.view}` WHERE kind = 'missing') m{j}",
            f"CROSS JOIN (SELECT * FROM `{v.view}` WHERE kind = 'unknown') u{j}",
        ]
    return "SELECT " + ",\n       ".join(selects) + f"\nFROM `{source}` s\n" + "\n".join(joins)


# ---- the command -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="score_spark",
        description="Score a Parquet dataset on Spark with an embedkit model (spark-submit this file).",
    )
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS, runs:/RUN_ID/PATH or a servable dir")
    p.add_argument("--input", required=True, help="Parquet input (any path Spark reads)")
    p.add_argument("--output", required=True, help="Parquet output directory (any path Spark writes)")
    p.add_argument("--engine", choices=ENGINES, default="arrow", help="arrow (default) or mlflow's spark_udf")
    add_output_arguments(p)
    p.add_argument("--master", help="Spark master when not run by spark-submit, e.g. local[2]")
    return p


def main(argv: list[str] | None = None) -> int:
    from pyspark.errors import AnalysisException
    from pyspark.sql import SparkSession

    args = build_parser().parse_args(argv)
    builder: Any = SparkSession.builder.appName("embedkit-score")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    try:
        result = score_spark(
            spark,
            args.model,
            args.input,
            args.output,
            engine=args.engine,
            proba=args.proba,
            embeddings=args.embeddings,
            with_embeddings=args.with_embeddings,
            keep=args.keep,
            mode="overwrite" if args.overwrite else "errorifexists",
        )
    except (EmbedkitError, AnalysisException) as exc:  # bad model, columns or paths; output exists
        sys.stderr.write(f"error: {exc}\n")
        return 2
    finally:
        if args.master:
            spark.stop()
    sys.stdout.write(json.dumps(result.__dict__) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
