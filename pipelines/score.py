"""Batch scoring on one machine: ``embedkit score --model URI --input PATH --output PATH``.

The input (a Parquet file or a directory of them) is read in chunks of ``--chunk-rows`` rows, each chunk is
scored and appended to the output Parquet file, so memory stays bounded by the chunk (and the input's row
groups), not by the input's size. The output is written to a temporary sibling and renamed into place at the
end: a failed or interrupted run leaves no partial file behind.

Output columns, in order: the ``--keep`` columns (ids passed through unchanged), ``prediction`` (the class
label, or the value for regression), ``proba_<class>`` per class with ``--proba`` (classifiers), and
``{column}__emb_{i}`` (float32) for each column of ``--embeddings`` (or every embedded column with
``--with-embeddings``). The names and values are those of the registered pyfunc model and of
``EmbeddingTransformer.get_feature_names_out``.

The model is a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI (resolved like the service does,
against ``MLFLOW_TRACKING_URI``, else ``./mlflow.db``), a ``runs:/RUN_ID/PATH`` URI (a logged pyfunc model,
servable or bundle), or a local servable or model bundle directory.

From Python: :func:`score_parquet` (file to file) and :func:`score_chunk` (one table or DataFrame to an
Arrow table), which the Spark job (:mod:`pipelines.score_spark`) applies to each partition.

Exit codes: 0 done, 2 a problem with the arguments, the model or the data (the message says which), 130
interrupted (Ctrl-C), 143 terminated (SIGTERM); either way the temporary output is removed and nothing is
written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from embedkit._io import atomic_path
from embedkit.exceptions import DataError, EmbedkitError, FormatError
from embedkit.outputs import class_index, proba_from_raw
from embedkit.servable import SERVABLE_FILE, Servable, load_servable

from .signals import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, sigterm_raises

DEFAULT_CHUNK_ROWS = 100_000
PREDICTION = "prediction"


# ---- options and the output schema -----------------------------------------------------------------
@dataclass(frozen=True)
class ScoreOptions:
    """What to write besides ``prediction``: class probabilities, embedding columns, pass-through columns."""

    proba: bool = False
    embeddings: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()


def resolve_options(
    servable: Servable,
    *,
    proba: bool = False,
    embeddings: Iterable[str] | None = None,
    with_embeddings: bool = False,
    keep: Iterable[str] | None = None,
) -> ScoreOptions:
    """Check the options against the model; ``with_embeddings`` means every embedded column."""
    if proba and servable.task == "regression":
        raise DataError("--proba is for classifiers; this model does regression (drop --proba)")
    emb = list(servable.tables) if with_embeddings else list(embeddings or [])
    unknown = [c for c in emb if c not in servable.tables]
    if unknown:
        raise DataError(
            f"--embeddings: column(s) {unknown} have no embedding table; this model embeds {list(servable.tables)}"
        )
    keep_t = tuple(keep or ())
    options = ScoreOptions(proba=proba, embeddings=tuple(dict.fromkeys(emb)), keep=keep_t)
    produced = _produced_names(servable, options)
    clash = [c for c in keep_t if c in produced]
    if clash:
        raise DataError(f"--keep: column(s) {clash} clash with output columns of the same name; rename them")
    return options


def _produced_names(servable: Servable, options: ScoreOptions) -> list[str]:
    names = [PREDICTION]
    if options.proba:
        names += [f"proba_{c}" for c in servable.classes or []]
    for col in options.embeddings:
        names += [f"{col}__emb_{i}" for i in range(servable.tables[col].dim)]
    return names


def _label_type(servable: Servable) -> pa.DataType:
    if servable.task == "regression":
        return pa.float64()
    try:
        return pa.array(list(servable.classes or [])).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.string()


def needed_columns(servable: Servable, options: ScoreOptions) -> list[str]:
    """The input columns scoring reads: the model's features, then the ``keep`` columns."""
    return list(dict.fromkeys([*servable.feature_columns, *options.keep]))


def check_input_columns(servable: Servable, options: ScoreOptions, names: Sequence[str]) -> None:
    """A :class:`DataError` naming every feature or ``--keep`` column the input lacks."""
    have = set(names)
    missing = [c for c in servable.feature_columns if c not in have]
    if missing:
        raise DataError(
            f"input column(s) {missing} missing; the model needs {servable.feature_columns} "
            "(rename the input's columns to match)"
        )
    missing_keep = [c for c in options.keep if c not in have]
    if missing_keep:
        raise DataError(f"--keep: column(s) {missing_keep} not in the input; it has {list(names)}")


def output_schema(servable: Servable, options: ScoreOptions, input_schema: pa.Schema) -> pa.Schema:
    """The Arrow schema of every scored chunk (``keep`` columns take their input type)."""
    fields = [input_schema.field(c) for c in options.keep]
    fields.append(pa.field(PREDICTION, _label_type(servable)))
    if options.proba:
        fields += [pa.field(f"proba_{c}", pa.float64()) for c in servable.classes or []]
    for col in options.embeddings:
        fields += [pa.field(f"{col}__emb_{i}", pa.float32()) for i in range(servable.tables[col].dim)]
    return pa.schema(fields)


# ---- one chunk -------------------------------------------------------------------------------------
def score_chunk(
    servable: Servable,
    data: pa.Table | pa.RecordBatch | pd.DataFrame,
    options: ScoreOptions,
    schema: pa.Schema,
) -> pa.Table:
    """Score one chunk of rows; the result has ``schema`` (see :func:`output_schema`) and ``len(data)`` rows."""
    if isinstance(data, pd.DataFrame):
        frame = data.reset_index(drop=True)
        arrow = None
    else:
        arrow = data
        frame = data.select(servable.feature_columns).to_pandas()
    cols: list[pa.Array] = []
    for name in options.keep:
        typ = schema.field(name).type
        if arrow is None:
            cols.append(pa.Array.from_pandas(frame[name], type=typ))
        else:
            col = arrow.column(name)
            cols.append(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
    raw = servable.predict_raw(frame)
    if servable.task == "regression":
        cols.append(pa.array(np.asarray(raw, dtype=np.float64)))
    else:
        labels = np.asarray(servable.classes, dtype=object)[class_index(servable.task, raw)]
        cols.append(pa.array(labels, type=schema.field(PREDICTION).type))
        if options.proba:
            proba = np.ascontiguousarray(proba_from_raw(servable.task, raw).T, dtype=np.float64)
            cols += [pa.array(p) for p in proba]
    for name in options.embeddings:
        table = servable.tables[name]
        # (dim, n) C-contiguous: each embedding column is one contiguous row, handed to Arrow without a copy
        vectors = table.gather_matrix(np.float32)[:, table.encode(frame[name])]
        cols += [pa.array(v) for v in vectors]
    return pa.Table.from_arrays(cols, schema=schema)


# ---- files -----------------------------------------------------------------------------------------
def open_input(path: str | os.PathLike[str]) -> ds.Dataset:
    """The Parquet file or directory at ``path`` as a dataset; a clear error when it is missing or not Parquet."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"input {p} does not exist; --input takes a Parquet file or a directory of them")
    try:
        return ds.dataset(p, format="parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"input {p} is not readable as Parquet: {exc}") from None


def iter_chunks(dataset: ds.Dataset, columns: list[str], chunk_rows: int) -> Iterator[pa.Table]:
    """The dataset's rows in file order, as tables of exactly ``chunk_rows`` rows (the last one shorter).

    Each file is read row group by row group (``ParquetFile.iter_batches``): the dataset scanner reads
    ahead of a slow consumer without bound, this does not. Batches are cut at row-group boundaries; they
    are re-grouped here so that chunk sizes do not depend on how the files were written.
    """
    pending: list[pa.RecordBatch] = []
    n_pending = 0
    for batch in _file_batches(dataset, columns, chunk_rows):
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        n_pending += batch.num_rows
        while n_pending >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows).combine_chunks()
            rest = table.slice(chunk_rows)
            pending = rest.to_batches() if rest.num_rows else []
            n_pending = rest.num_rows
    if n_pending:
        yield pa.Table.from_batches(pending).combine_chunks()


def _file_batches(dataset: ds.Dataset, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    schema = pa.schema([dataset.schema.field(c) for c in columns])
    for path in dataset.files:  # type: ignore[attr-defined]
        with pq.ParquetFile(path) as pf:
            missing = [c for c in columns if c not in pf.schema_arrow.names]
            if missing:
                raise DataError(f"input file {path} lacks column(s) {missing} that the other files have")
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                yield batch if batch.schema == schema else batch.select(columns).cast(schema)


@dataclass
class ScoreResult:
    output: Path
    rows: int
    chunks: int
    seconds: float
    columns: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


def score_parquet(
    servable: Servable,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    options: ScoreOptions | None = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    overwrite: bool = False,
    progress: bool = False,
) -> ScoreResult:
    """Score the Parquet file or directory ``input_path`` chunk by chunk into the Parquet file ``output_path``.

    Every check (input columns, output path) runs before anything is written; the output appears only when
    all rows are scored.
    """
    options = options or ScoreOptions()
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be at least 1, got {chunk_rows}")
    out = Path(output_path)
    if out.is_dir():
        raise DataError(f"output {out} is a directory; --output takes a Parquet file path")
    if out.exists() and not overwrite:
        raise DataError(f"output {out} exists; pass --overwrite to replace it")
    dataset = open_input(input_path)
    check_input_columns(servable, options, dataset.schema.names)
    columns = needed_columns(servable, options)
    schema = output_schema(servable, options, dataset.schema)
    total = dataset.count_rows() if progress else None
    bar = _progress(total) if progress else None
    t0 = time.perf_counter()
    rows = chunks = 0
    try:
        with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            for chunk in iter_chunks(dataset, columns, chunk_rows):
                writer.write_table(score_chunk(servable, chunk, options, schema))
                rows += chunk.num_rows
                chunks += 1
                if bar is not None:
                    bar.update(chunk.num_rows)
    finally:
        if bar is not None:
            bar.close()
    return ScoreResult(out, rows, chunks, time.perf_counter() - t0, schema.names)


def _progress(total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="rows", unit_scale=True, file=sys.stderr, desc="scoring", mininterval=0.5)


# ---- the model -------------------------------------------------------------------------------------
def resolve_model(uri: str, workdir: str | os.PathLike[str]) -> Path:
    """The local servable directory for ``uri`` (downloaded or built under ``workdir`` when needed).

    ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` go through :mod:`embedkit.model_uri` (as the service does); ``runs:/RUN_ID/PATH``
    downloads the artifact; a model bundle (a logged pyfunc model's, a run's ``bundle`` artifact or a local
    one) is wrapped as a servable.
    """
    from embedkit.model_uri import REGISTRY_SCHEME, download_registered, find_servable, resolve_local

    work = Path(workdir)
    if uri.startswith(REGISTRY_SCHEME):
        from mlflow.exceptions import MlflowException

        try:
            # EMBEDKIT_TRACKING_URI as for the service, else MLFLOW_TRACKING_URI, else ./mlflow.db
            store = os.environ.get("EMBEDKIT_TRACKING_URI")
            return download_registered(uri, store, work / "registry").path
        except ValueError as exc:  # not models:/NAME@ALIAS or models:/NAME/VERSION
            raise DataError(str(exc)) from None
        except MlflowException as exc:  # a name, alias or version the registry lacks
            raise DataError(f"model {uri}: {exc.message}") from None
    if uri.startswith("runs:/"):
        from . import tracking

        run_id, _, artifact = uri.removeprefix("runs:/").partition("/")
        if not run_id or not artifact:
            raise DataError(f"model URI {uri!r}: expected runs:/RUN_ID/ARTIFACT_PATH")
        try:
            local = tracking.download_artifacts(run_id, artifact, work / "run")
        except tracking.TrackingError as exc:
            raise DataError(str(exc)) from None
        return _as_servable(local, work, find_servable)
    local = Path(uri.removeprefix("file://")).expanduser()
    if not local.exists():
        raise DataError(
            f"model {uri!r} not found: expected models:/NAME@ALIAS, runs:/RUN_ID/PATH or a servable or "
            "bundle directory"
        )
    if (local / SERVABLE_FILE).is_file():
        return resolve_local(str(local)).path
    return _as_servable(local, work, find_servable)


def _as_servable(path: Path, work: Path, find_servable: Any) -> Path:
    from embedkit.bundle import PREPROCESSOR, WEIGHTS

    if (path / PREPROCESSOR).is_file() and (path / WEIGHTS).is_file():
        from embedkit.servable import save_net_servable

        return save_net_servable(work / "from-bundle", path)
    try:
        return Path(find_servable(path))
    except FormatError as exc:
        raise DataError(f"{path}: neither an embedkit servable nor a model bundle ({exc})") from None


# ---- the command -----------------------------------------------------------------------------------
def _score(args: argparse.Namespace) -> ScoreResult:
    with tempfile.TemporaryDirectory(prefix="embedkit-score-") as work:
        servable = load_servable(resolve_model(args.model, work))
    options = resolve_options(
        servable,
        proba=args.proba,
        embeddings=args.embeddings,
        with_embeddings=args.with_embeddings,
        keep=args.keep,
    )
    return score_parquet(
        servable,
        args.input,
        args.output,
        options,
        chunk_rows=args.chunk_rows,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )


def _columns(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """What goes into the output besides the predictions (shared with the Spark job)."""
    emb = p.add_mutually_exclusive_group()
    emb.add_argument("--embeddings", type=_columns, metavar="COL[,COL]", help="add {col}__emb_{i} columns")
    emb.add_argument(
        "--with-embeddings", action="store_true", help="add the columns of every embedded column"
    )
    p.add_argument(
        "--keep", type=_columns, default=[], metavar="COL[,COL]", help="input columns to pass through (ids)"
    )
    p.add_argument("--proba", action="store_true", help="add proba_<class> columns (classifiers)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="embedkit score",
        description="Score a Parquet file or directory in chunks into a Parquet file (bounded memory).",
    )
    p.add_argument(
        "--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH or a dir"
    )
    p.add_argument("--input", required=True, help="a Parquet file or a directory of Parquet files")
    p.add_argument("--output", required=True, help="the Parquet file to write")
    p.add_argument(
        "--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help=f"rows per chunk ({DEFAULT_CHUNK_ROWS})"
    )
    add_output_arguments(p)
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="compute threads (BLAS, OpenMP; default: the libraries' own; 1 is often faster on a machine shared "
        "with other jobs)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            sys.stderr.write(f"error: --threads must be at least 1, got {args.threads}\n")
            return 2
        from embedkit.inference import set_compute_threads

        set_compute_threads(args.threads)
    try:
        with sigterm_raises():  # SIGTERM like Ctrl-C: the temporary output is removed on the way out
            result = _score(args)
    except Terminated:
        sys.stderr.write("terminated (SIGTERM): no output was written\n")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: no output was written\n")
        return EXIT_INTERRUPTED
    except EmbedkitError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    out = {
        "output": str(result.output),
        "rows": result.rows,
        "chunks": result.chunks,
        "seconds": round(result.seconds, 3),
        "rows_per_s": round(result.rows_per_s),
        "columns": result.columns,
    }
    if args.json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write(
            f"scored {result.rows:,} rows in {result.seconds:.1f} s ({result.rows_per_s:,.0f} rows/s) "
            f"into {result.output}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
