"""What extra columns next to the ordinal codes cost LightGBM on the example (a control for the paper table).

``bench/paper_table.py`` finds that no encoding added to the ordinal codes helps LightGBM on the
flights example, learned embeddings included. This script measures the same LightGBM (the paper
table's: 500 trees, learning rate 0.05, 63 leaves) on the codes plus columns that carry no
information, or only per-category information:

- ``codes``: the 9 ordinal codes and the 3 continuous columns (the paper table's ``ordinal`` cell);
- ``+ noise``: 42 columns of independent standard-normal noise;
- ``+ random per-category vectors``: a random vector per value of tailnum (16 wide), flight (16) and
  dest (10), 42 columns again, the same for every row of a value;
- ``+ target encoding``: scikit-learn's cross-fitted ``TargetEncoder`` of tailnum, flight and dest.

Each row: validation AUC, log loss, fit seconds, and the AUC change against ``codes``.

Usage::

    python bench/lightgbm_extra_columns.py            # the full example, about 2 minutes on 2 cores

Prints a markdown table and writes ``bench/results/lightgbm_extra_columns.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see paper_table.py
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from paper_table import CAT, CONT, model, ordinal, scores
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import TargetEncoder

from embedkit.datasets import FLIGHTS_TARGET, flights

RESULTS = Path(__file__).parent / "results" / "lightgbm_extra_columns.json"
WIDTHS = {"tailnum": 16, "flight": 16, "dest": 10}  # the paper table's recipe widths


def per_category(train: pd.Series, valid: pd.Series, dim: int, rng: np.random.Generator) -> tuple:
    """One random vector per value (values seen only in validation get vectors too: no unknown row)."""
    values = pd.Index(pd.concat([train, valid]).astype(str).unique())
    vectors = rng.standard_normal((len(values), dim)).astype(np.float32)
    return tuple(vectors[values.get_indexer(s.astype(str))] for s in (train, valid))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=None, help="keep only the first N rows of the example")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    ex = flights(n_rows=args.rows)
    train, valid = ex.train, ex.valid
    y, yv = train[FLIGHTS_TARGET].to_numpy(), valid[FLIGHTS_TARGET].to_numpy()
    codes = ordinal().fit(train[CAT])
    base_tr = np.c_[codes.transform(train[CAT]), train[CONT].to_numpy()]
    base_va = np.c_[codes.transform(valid[CAT]), valid[CONT].to_numpy()]
    rng = np.random.default_rng(args.seed)
    n_extra = sum(WIDTHS.values())
    cat_tr, cat_va = zip(*(per_category(train[c], valid[c], d, rng) for c, d in WIDTHS.items()), strict=True)
    folds = StratifiedKFold(5, shuffle=True, random_state=args.seed)
    te = TargetEncoder(target_type="binary", cv=folds)
    te_tr = te.fit_transform(train[list(WIDTHS)], y)
    te_va = te.transform(valid[list(WIDTHS)])
    variants = {
        "codes": ([], []),
        f"+ noise ({n_extra} columns)": (
            [rng.standard_normal((len(train), n_extra))],
            [rng.standard_normal((len(valid), n_extra))],
        ),
        f"+ random per-category vectors ({n_extra} columns)": (list(cat_tr), list(cat_va)),
        "+ target encoding (tailnum, flight, dest)": ([te_tr], [te_va]),
    }
    results: dict[str, dict[str, float]] = {}
    for name, (extra_tr, extra_va) in variants.items():
        t0 = time.perf_counter()
        lgbm = model("LightGBM", args.seed, args.n_jobs).fit(np.c_[base_tr, *extra_tr], y)
        fit_s = time.perf_counter() - t0
        results[name] = {**scores(yv, lgbm.predict_proba(np.c_[base_va, *extra_va])[:, 1]), "fit_s": fit_s}
        print(f"{name:<45} AUC {results[name]['auc']:.4f} {fit_s:.1f} s", file=sys.stderr, flush=True)

    base = results["codes"]["auc"]
    lines = ["| LightGBM on | AUC | change | log loss | fit s |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['auc']:.4f} | {r['auc'] - base:+.4f} | {r['log_loss']:.4f} | {r['fit_s']:.0f} |"
        )
    report = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": {"train": len(train), "valid": len(valid)},
        "results": results,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(args.out)
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
