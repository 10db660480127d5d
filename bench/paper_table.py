"""Guo & Berkhahn's table on our example: KNN, random forest, LightGBM and the net, per encoding.

Entity Embeddings of Categorical Variables (Guo & Berkhahn, 2016) fed a net's learned embeddings to
KNN, random forests and gradient boosting in place of the raw categories. This script repeats that
experiment on the built-in example (``embedkit.datasets.flights()``: late arrival, 261,877 training /
65,469 validation rows, 9 categorical and 3 continuous columns).

Rows are models, columns encodings of the 9 categorical columns (the 3 continuous columns always go in
as they are; KNN sees every column standardised):

- ``ordinal``: ``OrdinalEncoder`` codes (sorted values, so month, day and hour keep their order);
- ``one-hot`` (KNN only): ``OneHotEncoder`` (sparse), each indicator then standardised like the rest;
- ``target``: scikit-learn's ``TargetEncoder`` (cross-fitted on the training rows in ``fit_transform``);
- ``native`` (LightGBM only): pandas ``category`` columns, LightGBM's own categorical splits;
- ``embeddings``: ``EmbeddingTransformer`` vectors from a net trained on the training rows only (its
  early stopping holds out 10% of them; the validation rows are never seen). This is the paper's plain
  recipe: the training rows get the vectors of a net that has seen their targets (in-sample);
- ``embeddings, cross-fitted``: the training rows get out-of-fold vectors instead
  (``EmbeddingTransformer(cv=5).fit_transform``: each row's vector comes from a net trained on the
  other folds, mapped into the full net's coordinates); the validation rows get the full net's vectors;
- ``embeddings + codes`` and ``embeddings + codes, cross-fitted``: the in-sample or the out-of-fold
  vectors next to the ordinal codes, so that a tree can still split on a single date or aircraft and
  use the vectors for what codes cannot say (which categories behave alike);
- ``random vectors + codes``, the control: the codes next to the tables the nets started from (one
  random vector per category, of the tables' widths and the recipe's initial spread), never trained.
  An embedding column that does no better than this owes its result to the extra per-category
  columns, not to what the net learnt.

Why cross-fitting: a net memorises part of the training rows' targets in the vectors of rare
categories (tailnum and flight have thousands of values, a few dozen rows each), exactly like target
encoding without folds; a downstream model trained on in-sample vectors learns to trust them, and they
do not carry that information on new rows. Narrower tables memorise less: the recipe's widths are
``RECIPE_EMB_DIMS`` (``--emb-dims '{}'`` uses the library's default rule instead).

The recipe starts the embeddings at std ``RECIPE_EMB_INIT_STD`` = 1.0 (``NetConfig.emb_init_std``)
rather than fast.ai's 0.01 (``--emb-init-std 0.01``). At 0.01 every rare category starts near the
origin and stays near every other rare one; at 1.0 each keeps a distinct random part. On this example
that lifted the net itself (validation AUC 0.771 to 0.790) and the random forest on its vectors; the
control column shows how much of the forest's gain a random part alone gives. Cross-fitting's nets all
start each category at the same vector (``NetConfig.emb_init_seed``), so that random part is the same
in the out-of-fold vectors and in the full table.

The ``net`` row is the net that produced the embeddings, scored on the validation rows.

Each cell holds validation AUC, log loss and the seconds spent fitting (encoder + model). The embedding
nets' training time (the full net and one per fold) is printed once and kept in the JSON
(``embedding_nets``), not repeated in the embedding cells; the ``net`` row's time is its own training.
k-NN (k=50, distance computed by brute force) queries a fixed random sample of ``--knn-valid-rows``
validation rows (all training rows are its neighbours), so its cells are measured on that sample; every
other model is scored on all validation rows. Models: ``KNeighborsClassifier(50)`` on standardised
features; ``RandomForestClassifier(100 trees, min_samples_leaf=5, max_features="sqrt")``;
``LGBMClassifier(500 trees, learning_rate 0.05, 63 leaves)``.

Usage::

    python bench/paper_table.py                      # the full example (tens of minutes on 2 cores)
    python bench/paper_table.py --rows 30000 --knn-valid-rows 2000   # a quick look

Prints a markdown table and writes ``bench/results/paper_table.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os

# torch (the nets) and LightGBM both run OpenMP thread pools in this process; with the default active
# wait, idle threads of one spin against the other's work (LightGBM fits took 10x longer on 2 cores)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import platform
import sys
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler, TargetEncoder

from embedkit import EmbeddingTransformer, FeatureSpec
from embedkit.datasets import FLIGHTS_CATEGORICAL, FLIGHTS_CONTINUOUS, FLIGHTS_TARGET, flights
from embedkit.nn.learner import Learner
from embedkit.nn.model import NetConfig, value_keyed_init
from embedkit.nn.trainer import TrainConfig
from embedkit.tables import EmbeddingTable

RESULTS = Path(__file__).resolve().parent / "results" / "paper_table.json"
CAT, CONT = FLIGHTS_CATEGORICAL, FLIGHTS_CONTINUOUS
EMB_IN, EMB_CF = "embeddings", "embeddings, cross-fitted"
EMB_CODES, EMB_CF_CODES = "embeddings + codes", "embeddings + codes, cross-fitted"
EMBEDDINGS = [EMB_IN, EMB_CF, EMB_CODES, EMB_CF_CODES]
RANDOM_CODES = "random vectors + codes"  # the control: the nets' initial tables, never trained
ENCODINGS = ["ordinal", "one-hot", "target", "native", *EMBEDDINGS, RANDOM_CODES]
#: embedding widths of the recipe (the library's default rule gives tailnum 166, flight 160, dest 22:
#: wider tables memorise more of the training rows, see the module docstring)
RECIPE_EMB_DIMS = {"tailnum": 16, "flight": 16, "dest": 10}
#: the recipe's embedding init std (``NetConfig.emb_init_std``; fast.ai's, the library default, is 0.01)
RECIPE_EMB_INIT_STD = 1.0
MODELS = ["KNN", "random forest", "LightGBM", "net"]
#: which encodings each model is run with (one-hot only for KNN, native only for LightGBM)
CELLS = {
    "KNN": ["ordinal", "one-hot", "target", *EMBEDDINGS, RANDOM_CODES],
    "random forest": ["ordinal", "target", *EMBEDDINGS, RANDOM_CODES],
    "LightGBM": ["ordinal", "target", "native", *EMBEDDINGS, RANDOM_CODES],
    "net": [EMB_IN],
}


def ordinal() -> OrdinalEncoder:
    return OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2)


def encoder(name: str, seed: int) -> Any:
    """The encoding as a scikit-learn transformer over the categorical + continuous columns."""
    if name == "ordinal":
        return ColumnTransformer([("codes", ordinal(), CAT)], remainder="passthrough")
    if name == "one-hot":
        oh = OneHotEncoder(handle_unknown="ignore", min_frequency=5, sparse_output=True)
        return ColumnTransformer([("onehot", oh, CAT)], remainder="passthrough", sparse_threshold=1.0)
    if name == "target":
        folds = StratifiedKFold(5, shuffle=True, random_state=seed)
        te = TargetEncoder(target_type="binary", cv=folds)
        return ColumnTransformer([("target", te, CAT)], remainder="passthrough")
    raise ValueError(name)


def model(name: str, seed: int, n_jobs: int) -> Any:
    if name == "KNN":
        return KNeighborsClassifier(n_neighbors=50, algorithm="brute", n_jobs=n_jobs)
    if name == "random forest":
        return RandomForestClassifier(
            n_estimators=100, min_samples_leaf=5, max_features="sqrt", n_jobs=n_jobs, random_state=seed
        )
    if name == "LightGBM":
        return lgb.LGBMClassifier(
            n_estimators=500, learning_rate=0.05, num_leaves=63, n_jobs=n_jobs, random_state=seed, verbose=-1
        )
    raise ValueError(name)


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return {"auc": float(roc_auc_score(y, p)), "log_loss": float(log_loss(y, p))}


def cell(
    model_name: str,
    enc_name: str,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    knn_rows: np.ndarray,
    features: dict[str, tuple[np.ndarray, np.ndarray]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    X, y = train[CAT + CONT], train[FLIGHTS_TARGET].to_numpy()
    Xv, yv = valid[CAT + CONT], valid[FLIGHTS_TARGET].to_numpy()
    t0 = time.perf_counter()
    if model_name == "LightGBM" and enc_name == "native":
        X = X.astype({c: "category" for c in CAT})
        # values unseen in training become missing (LightGBM's own treatment of a new category)
        Xv = Xv.assign(**{c: Xv[c].where(Xv[c].isin(X[c].cat.categories)) for c in CAT})
        Xv = Xv.astype({c: pd.CategoricalDtype(X[c].cat.categories) for c in CAT})
        steps = []
    elif enc_name in features:  # embedded once, shared by every model
        X, Xv = features[enc_name]
        steps = []
    else:
        steps = [encoder(enc_name, args.seed)]
    if model_name == "KNN":
        steps.append(StandardScaler(with_mean=enc_name != "one-hot"))
    pipe = make_pipeline(*steps, model(model_name, args.seed, args.n_jobs))
    pipe.fit(X, y)
    fit_s = time.perf_counter() - t0
    if model_name == "KNN":
        Xv, yv = Xv[knn_rows] if isinstance(Xv, np.ndarray) else Xv.iloc[knn_rows], yv[knn_rows]
    p = pipe.predict_proba(Xv)[:, 1]
    return {**scores(yv, p), "fit_s": fit_s, "valid_rows": len(yv)}


def embedding_features(
    train: pd.DataFrame, valid: pd.DataFrame, args: argparse.Namespace
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """The three embedding encodings, each as (training rows, validation rows) feature arrays.

    One ``EmbeddingTransformer(cv=5)`` trains the net on all training rows plus one net per fold:
    ``fit_transform`` gives each training row the vector of the fold net that did not see it (mapped
    into the full net's coordinates), ``transform`` the full net's vectors (in-sample for training rows).
    """
    X, y = train[CAT + CONT], train[FLIGHTS_TARGET].to_numpy()
    et = EmbeddingTransformer(
        columns=CAT,
        epochs=args.epochs,
        valid_fraction=0.1,
        cv=args.cv,
        random_state=args.seed,
        device=args.device,
        # an explicit init seed, shared by the full net and the fold nets, so that the control below
        # can rebuild the tables they started from
        net_params={"emb_dims": args.emb_dims, "emb_init_std": args.emb_init_std, "emb_init_seed": args.seed},
    )
    t0 = time.perf_counter()
    cross_fitted = et.fit_transform(X, y)
    fit_s = time.perf_counter() - t0
    in_sample, valid_vectors = et.transform(X), et.transform(valid[CAT + CONT])
    codes = ordinal().fit(X[CAT])
    code_tr, code_va = codes.transform(X[CAT]), codes.transform(valid[CAT])
    # the control: the tables the nets started from (value-keyed init: one random vector per category,
    # the unknown and missing rows too, of each table's width and the recipe's spread), never trained
    initial = {}
    for c in CAT:
        t = et.tables_[c]
        initial[c] = EmbeddingTable(
            t.vocab, value_keyed_init(list(t.vocab.index), c, t.dim, args.seed, args.emb_init_std)
        )
    rand_tr, rand_va = ([initial[c].lookup(frame[c]) for c in CAT] for frame in (X, valid))
    features = {
        EMB_IN: (in_sample, valid_vectors),
        EMB_CF: (cross_fitted, valid_vectors),
        EMB_CODES: (np.c_[code_tr, in_sample], np.c_[code_va, valid_vectors]),
        EMB_CF_CODES: (np.c_[code_tr, cross_fitted], np.c_[code_va, valid_vectors]),
        RANDOM_CODES: (
            np.c_[code_tr, X[CONT].to_numpy(), *rand_tr],
            np.c_[code_va, valid[CONT].to_numpy(), *rand_va],
        ),
    }
    info = {"nets_fit_s": fit_s, "n_nets": 1 + args.cv, "emb_dims": {c: et.tables_[c].dim for c in CAT}}
    return features, info


def train_net(train: pd.DataFrame, valid: pd.DataFrame, args: argparse.Namespace) -> dict[str, Any]:
    """The net row: the same recipe trained with a Learner (10% of the training rows held out for early
    stopping / restoring the best epoch), scored on the validation rows."""
    spec = FeatureSpec(target=FLIGHTS_TARGET, categorical=CAT, continuous=CONT, dates=[])
    hold = np.random.default_rng(args.seed + 1).random(len(train)) < 0.1
    fit_part, hold_part = train[~hold], train[hold]
    t0 = time.perf_counter()
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed, device=args.device)
    net_cfg = NetConfig(emb_dims=dict(args.emb_dims), emb_init_std=args.emb_init_std)
    learn = Learner.from_frame(fit_part, spec, net_config=net_cfg, train_config=cfg)
    learn.fit(fit_part, hold_part)
    fit_s = time.perf_counter() - t0
    p = learn.predict_proba(valid)[:, 1]
    epochs = learn.history.epochs
    tables = learn.embedding_tables()
    net = {
        **scores(valid[FLIGHTS_TARGET].to_numpy(), p),
        "fit_s": fit_s,
        "valid_rows": len(valid),
        "lr": learn.trainer.lr_max,
        "best_epoch": learn.history.best_epoch,
        "epochs": [{k: v for k, v in e.items() if isinstance(v, int | float)} for e in epochs],
        "emb_dims": {c: tables[c].dim for c in CAT},
    }
    return net


def markdown(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    head = "| model | " + " | ".join(ENCODINGS) + " |"
    lines = [head, "|---|" + "---:|" * len(ENCODINGS)]
    for m in MODELS:
        row = [m]
        for e in ENCODINGS:
            r = results.get(m, {}).get(e)
            row.append(f"{r['auc']:.3f} / {r['log_loss']:.3f} / {r['fit_s']:.0f} s" if r else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=None, help="keep only the first N rows of the example")
    ap.add_argument("--knn-valid-rows", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the embedding net")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--device", default="auto", help="the net's torch device")
    ap.add_argument(
        "--emb-dims",
        type=json.loads,
        default=RECIPE_EMB_DIMS,
        metavar="JSON",
        help=f"embedding widths (default {json.dumps(RECIPE_EMB_DIMS)}; '{{}}' = the library's default rule)",
    )
    ap.add_argument(
        "--emb-init-std",
        type=float,
        default=RECIPE_EMB_INIT_STD,
        help=f"std of the embeddings' initial vectors (default {RECIPE_EMB_INIT_STD}; fast.ai's is 0.01)",
    )
    ap.add_argument("--cv", type=int, default=5, help="folds of the cross-fitted embeddings")
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--encodings", nargs="+", default=ENCODINGS, choices=ENCODINGS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    ex = flights(n_rows=args.rows)
    train, valid = ex.train, ex.valid
    rng = np.random.default_rng(args.seed)
    knn_rows = np.sort(rng.choice(len(valid), min(args.knn_valid_rows, len(valid)), replace=False))
    print(f"{len(train):,} training rows, {len(valid):,} validation rows", file=sys.stderr)

    results: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in args.models}
    if "net" in args.models:
        results["net"][EMB_IN] = train_net(train, valid, args)
    features, nets = embedding_features(train, valid, args)
    print(f"embedding nets: {nets}", file=sys.stderr, flush=True)
    for m in args.models:
        for e in CELLS[m]:
            if m == "net" or e not in args.encodings:
                continue
            results[m][e] = cell(m, e, train, valid, knn_rows, features, args)
            r = results[m][e]
            print(
                f"{m:>13} | {e:<18} | AUC {r['auc']:.4f} | log loss {r['log_loss']:.4f} | {r['fit_s']:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    lgbm = results.get("LightGBM", {})
    goals: dict[str, bool] = {}
    for m in ("KNN", "random forest"):
        embs = [r["auc"] for e, r in results.get(m, {}).items() if e in EMBEDDINGS]
        if embs and "ordinal" in results[m]:
            best_emb = max(embs)
            goals[f"{m}: embeddings > ordinal + 0.01 AUC"] = best_emb > results[m]["ordinal"]["auc"] + 0.01
    if all(e in lgbm for e in ("ordinal", "target", "native", *EMBEDDINGS)):
        other = max(lgbm[e]["auc"] for e in ("ordinal", "target", "native"))
        best_emb = max(lgbm[e]["auc"] for e in EMBEDDINGS)
        goals["LightGBM: embeddings > best other encoding"] = best_emb > other
    for m in ("KNN", "random forest", "LightGBM"):
        row = results.get(m, {})
        if RANDOM_CODES in row and EMB_CODES in row:
            # is the lift the net's learning, or only the extra per-category columns?
            learned = max(row[e]["auc"] for e in (EMB_CODES, EMB_CF_CODES) if e in row)
            control = row[RANDOM_CODES]["auc"]
            goals[f"{m}: embeddings + codes > random vectors + codes + 0.01 AUC"] = learned > control + 0.01
    report = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": {"train": len(train), "valid": len(valid), "knn_valid": len(knn_rows)},
        "results": results,
        "embedding_nets": nets,
        "goals": goals,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "sklearn": sklearn.__version__,
            "lightgbm": lgb.__version__,
        },
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(args.out)
    print("cells: validation AUC / log loss / fit seconds\n")
    print(markdown(results))
    print("\ngoals: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in goals.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
