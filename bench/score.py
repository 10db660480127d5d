"""Benchmark ``embedkit score``: rows/s and peak memory, for inputs of several sizes.

Model: a flights net trained for one epoch on ``--train-rows`` rows of the built-in example and saved as a
servable (``embedkit.servable.save_net_servable``). Data: the example's rows resampled with replacement to
each size in ``--sizes`` (default 1M and 5M), written as one Parquet file with 100k-row row groups, with a
``row_id`` column.

Each size is scored by ``python -m pipelines.cli score`` in a child process (``--chunk-rows``, ``--keep
row_id --proba``; with ``--embeddings`` also every embedding column), so that its peak resident memory
(``ru_maxrss`` from ``os.wait4``, the kernel's own high-water mark) is its own and not this script's. The
claim: peak memory stays the same whatever the input's size, since only one chunk (and one row group) is
held at a time.

Usage: ``python bench/score.py [--sizes 1000000,5000000] [--chunk-rows 100000] [--embeddings]``
Writes ``bench/results/score.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "score.json"
ROW_GROUP = 100_000
#: The bound the issue asks for: peak RSS of the scoring process, in MB, at any input size.
PEAK_RSS_BOUND_MB = 1500


def prepare_model(workdir: Path, train_rows: int) -> Path:
    from embedkit.datasets import flights
    from embedkit.nn.learner import Learner
    from embedkit.nn.trainer import TrainConfig
    from embedkit.servable import save_net_servable

    ex = flights(n_rows=train_rows)
    learn = Learner.from_frame(ex.train, ex.spec, train_config=TrainConfig(epochs=1, lr=1e-2, seed=0))
    learn.fit(ex.train, ex.valid)
    learn.save(workdir / "bundle")
    return save_net_servable(workdir / "servable", workdir / "bundle", name="embedkit-score-bench")


def write_input(path: Path, rows: int, seed: int) -> None:
    """``rows`` rows resampled from the example, written row group by row group (bounded memory here too)."""
    from embedkit.datasets import FLIGHTS_TARGET, flights

    frame = flights().frame.drop(columns=FLIGHTS_TARGET)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    rng = np.random.default_rng(seed)
    schema = pa.schema([pa.field("row_id", pa.int64()), *table.schema])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            part = table.take(rng.integers(0, table.num_rows, n))
            ids = pa.array(np.arange(start, start + n, dtype=np.int64))
            writer.write_table(part.add_column(0, "row_id", ids), row_group_size=ROW_GROUP)


def score_in_child(
    model: Path, src: Path, out: Path, chunk_rows: int, embeddings: bool, threads: int | None
) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "score",
        "--model",
        str(model),
        "--input",
        str(src),
        "--output",
        str(out),
        "--chunk-rows",
        str(chunk_rows),
        "--keep",
        "row_id",
        "--proba",
        "--no-progress",
        "--json",
        *(["--with-embeddings"] if embeddings else []),
        *(["--threads", str(threads)] if threads else []),
    ]
    log_out, log_err = out.with_suffix(".stdout"), out.with_suffix(".stderr")
    t0 = time.perf_counter()
    with log_out.open("w") as fo, log_err.open("w") as fe:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fo, stderr=fe, text=True)
        # wait4: this child's own resource usage, peak RSS included
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stdout, stderr = log_out.read_text(), log_err.read_text()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"embedkit score exited with {code}:\n{stderr[-3000:]}")
    result = json.loads(stdout)
    scale = 1 / 1024 if platform.system() == "Linux" else 1 / 2**20  # ru_maxrss: KiB on Linux
    return {
        "rows": result["rows"],
        "chunks": result["chunks"],
        "score_s": result["seconds"],
        "rows_per_s": result["rows_per_s"],
        "process_wall_s": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss * scale),
        "input_mb": round(src.stat().st_size / 1e6, 1),
        "output_mb": round(out.stat().st_size / 1e6, 1),
        "output_columns": len(result["columns"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000000,5000000", help="comma-separated row counts")
    ap.add_argument("--chunk-rows", type=int, default=100_000)
    ap.add_argument("--train-rows", type=int, default=20_000)
    ap.add_argument("--embeddings", action="store_true", help="also write every embedding column")
    ap.add_argument("--threads", type=int, help="embedkit score --threads (default: torch's own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    runs = []
    with tempfile.TemporaryDirectory(prefix="embedkit-score-bench-") as tmp:
        work = Path(tmp)
        model = prepare_model(work, args.train_rows)
        for n in sizes:
            src = work / f"input-{n}.parquet"
            write_input(src, n, args.seed)
            run = score_in_child(
                model, src, work / f"scores-{n}.parquet", args.chunk_rows, args.embeddings, args.threads
            )
            runs.append(run)
            src.unlink()
            (work / f"scores-{n}.parquet").unlink()

    peaks = [r["peak_rss_mb"] for r in runs]
    result = {
        "sizes": sizes,
        "chunk_rows": args.chunk_rows,
        "embeddings": args.embeddings,
        "threads": args.threads,
        "runs": runs,
        "peak_rss_bound_mb": PEAK_RSS_BOUND_MB,
        "peak_rss_spread_mb": max(peaks) - min(peaks),
        "within_bound": max(peaks) <= PEAK_RSS_BOUND_MB,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"embedkit score, chunks of {args.chunk_rows:,} rows, --keep row_id --proba"
        f"{' --with-embeddings' if args.embeddings else ''}"
        f"{f' --threads {args.threads}' if args.threads else ''}; load average {result['load_average_1min']} "
        f"on {os.cpu_count()} cores\n"
    )
    print("| rows | chunks | score s | rows/s | peak RSS MB | input MB | output MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['rows']:,} | {r['chunks']} | {r['score_s']:.1f} | {r['rows_per_s']:,} | {r['peak_rss_mb']} | "
            f"{r['input_mb']} | {r['output_mb']} |"
        )
    print(
        f"\npeak RSS spread across sizes: {result['peak_rss_spread_mb']} MB; bound {PEAK_RSS_BOUND_MB} MB: "
        f"{'met' if result['within_bound'] else 'NOT met'}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
