"""The ``downstream`` step: the embedding tables feed LightGBM / RandomForest / k-NN, next to baselines.

Takes a train run id (its ``tables/`` artifact) or a tables directory. Each model is a nested child run
with its parameters, validation metrics (AUC / log loss / accuracy, or RMSE / MAE) and timings; each model
on the embeddings also logs a ``servable/`` artifact (the format ``register`` and the service load). The
step's own run logs the comparison table (``comparison/comparison.{csv,md,json}``) and its plot.

Run: ``embedkit downstream --config FILE --train-run RUN_ID`` (or ``--tables DIR``).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedkit.evaluation import task_metrics
from embedkit.exceptions import FormatError

from . import plots, tracking
from .config import METRIC_MODES, ConfigError, PipelineConfig
from .sklearn_models import make_baseline, make_estimator
from .sources import Dataset, load_data

log = logging.getLogger("pipelines")

TAG_MODEL = "embedkit.nn.model"
TAG_ENCODER = "embedkit.encoder"
EMBEDDINGS = "embeddings"


@dataclass
class DownstreamResult:
    run_id: str
    rows: list[dict[str, Any]]  # the comparison table, one row per model (the net first, when known)
    child_runs: dict[str, str] = field(default_factory=dict)  # model name -> run id


def downstream(
    cfg: PipelineConfig,
    data: Dataset | None = None,
    *,
    train_run_id: str | None = None,
    tables_path: str | Path | None = None,
) -> DownstreamResult:
    """Fit the configured downstream models and baselines, one nested child run each."""
    if (train_run_id is None) == (tables_path is None):
        raise ConfigError(
            "downstream needs the embedding tables: pass a train run id (--train-run) or a "
            "tables directory (--tables), not both"
        )
    data = data if data is not None else load_data(cfg)
    net_row = None
    if train_run_id is not None:
        tables, net_row = _tables_from_run(train_run_id, data)
    else:
        tables = _load_tables(Path(tables_path))  # type: ignore[arg-type]
    categorical = [c for c in data.spec.categorical or [] if c in tables]
    continuous = list(data.spec.continuous or [])
    if not categorical:
        raise ConfigError(
            f"the tables hold {list(tables)}, none of the data's categorical columns "
            f"{data.spec.categorical}; train on this data first"
        )
    if data.spec.dates:
        log.warning(
            "date columns %s are not used downstream (their parts are net inputs only)", data.spec.dates
        )
    x_train, y_train = _rows(data, cfg.downstream.max_train_rows, cfg.downstream.seed)
    x_valid, y_valid = data.valid[categorical + continuous], _encode(data, data.valid)
    x_train = x_train[categorical + continuous]
    tags = {
        tracking.TAG_TRAIN_RUN: train_run_id,
        "embedkit.tables": str(tables_path) if tables_path else None,
    }
    rows: list[dict[str, Any]] = [net_row] if net_row else []
    children: dict[str, str] = {}
    with tracking.step_run(
        "downstream",
        experiment=cfg.tracking.experiment,
        run_name="downstream",
        tags={k: v for k, v in tags.items() if v},
    ) as run_id:
        tracking.log_params(
            {
                "models": cfg.downstream.models,
                "baselines": cfg.downstream.baselines,
                "n_train": len(x_train),
                "n_valid": len(x_valid),
                "categorical": categorical,
                "continuous": continuous,
                "seed": cfg.downstream.seed,
            }
        )
        with tempfile.TemporaryDirectory(prefix="embedkit-downstream-") as work:
            for name in cfg.downstream.names():
                encoder, _, estimator = name.rpartition("+")
                row = _fit_one(
                    cfg,
                    data,
                    name,
                    encoder or EMBEDDINGS,
                    estimator,
                    tables,
                    categorical,
                    continuous,
                    x_train,
                    y_train,
                    x_valid,
                    y_valid,
                    train_run_id,
                    Path(work),
                )
                rows.append(row)
                children[name] = row["run_id"]
        _log_comparison(rows, data.task)
    return DownstreamResult(run_id, rows, children)


# ---- one model -------------------------------------------------------------------------------------
def _fit_one(
    cfg: PipelineConfig,
    data: Dataset,
    name: str,
    encoder: str,
    estimator: str,
    tables: Any,
    categorical: list[str],
    continuous: list[str],
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    x_valid: pd.DataFrame,
    y_valid: np.ndarray,
    train_run_id: str | None,
    work: Path,
) -> dict[str, Any]:
    params = dict(getattr(cfg.downstream, estimator))
    seed = cfg.downstream.seed
    baseline = encoder != EMBEDDINGS
    tags = {
        TAG_MODEL: name,
        TAG_ENCODER: encoder,
        "embedkit.estimator": estimator,
        # every model is a candidate of the register step: a baseline that beats the embedding
        # models is the honest choice
        tracking.TAG_CANDIDATE: "true",
        "embedkit.baseline": str(baseline).lower(),
        tracking.TAG_TRAIN_RUN: train_run_id,
    }
    run_name = name if baseline else f"{estimator}+embeddings"
    with tracking.step_run(
        "downstream_model",
        experiment=cfg.tracking.experiment,
        run_name=run_name,
        tags={k: v for k, v in tags.items() if v is not None},
    ) as run_id:
        tracking.log_params(
            {"encoder": encoder, "estimator": estimator, **{f"params.{k}": v for k, v in params.items()}}
        )
        log.info(
            "fitting %s on %d rows (%s) ...",
            run_name,
            len(x_train),
            "baseline" if baseline else "embedding tables",
        )
        t0 = time.perf_counter()
        if baseline:
            model = make_baseline(encoder, estimator, data.task, categorical, continuous, params, seed)
            model.fit(x_train, y_train)
            fit_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            pred = _predict_raw(model, x_valid, data.task)
        else:
            from embedkit.transformer import EmbeddingTransformer

            et = EmbeddingTransformer(tables=tables, columns=categorical).fit(x_train)
            z_train = np.asarray(et.transform(x_train))
            model = make_estimator(estimator, data.task, params, seed)
            model.fit(z_train, y_train)
            fit_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            pred = _predict_raw(model, np.asarray(et.transform(x_valid)), data.task)
        predict_s = time.perf_counter() - t1
        metrics = {
            f"valid_{k}": v
            for k, v in task_metrics(
                data.task, y_valid, pred, n_classes=data.target.n_classes or None
            ).items()
        }
        tracking.log_metrics({**metrics, "fit_seconds": fit_s, "predict_seconds": predict_s})
        if baseline:
            servable = _save_baseline(
                work / name, model, tables, categorical, continuous, data, name, metrics
            )
        else:
            servable = _save_servable(work / name, et, model, data, name, metrics)
        tracking.log_artifacts(servable, "servable")
        log.info("%s: %s (fit %.1fs)", run_name, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), fit_s)
    return {
        "model": run_name,
        "name": name,
        "encoder": encoder,
        "estimator": estimator,
        "baseline": baseline,
        "run_id": run_id,
        **metrics,
        "fit_seconds": fit_s,
        "predict_seconds": predict_s,
    }


def _predict_raw(model: Any, x: Any, task: str) -> np.ndarray:
    """P(class 1), class probabilities, or values: the shape ``embedkit.evaluation`` and servables use."""
    if task == "regression":
        return np.asarray(model.predict(x), dtype=np.float64)
    p = model.predict_proba(x)
    return p[:, 1] if task == "binary" else p


def _save_servable(
    path: Path, transformer: Any, estimator: Any, data: Dataset, name: str, metrics: dict[str, float]
) -> Path:
    from embedkit.servable import save_pipeline_servable

    schema = _input_schema(transformer, data)
    return save_pipeline_servable(
        path,
        transformer=transformer,
        estimator=estimator,
        task=data.task,
        classes=data.target.classes,
        input_schema=schema,
        name=name,
        metrics=metrics,
    )


def _save_baseline(
    path: Path,
    model: Any,
    tables: Any,
    categorical: list[str],
    continuous: list[str],
    data: Dataset,
    name: str,
    metrics: dict[str, float],
) -> Path:
    from embedkit.servable import save_baseline_servable

    schema = [{"name": c, "role": "categorical", "kind": tables[c].vocab.kind} for c in categorical]
    schema += [{"name": c, "role": "continuous", "kind": "number"} for c in continuous]
    return save_baseline_servable(
        path,
        encoder=model[:-1],
        estimator=model[-1],
        task=data.task,
        classes=data.target.classes,
        input_schema=schema,
        name=name,
        metrics=metrics,
        tables=tables,  # the net's tables: the service's embedding look-ups work whichever model wins
    )


def _input_schema(transformer: Any, data: Dataset) -> list[dict[str, Any]]:
    """Embedded columns with their category kind, then the passed-through numbers."""
    out = []
    for c in transformer.columns_:
        out.append({"name": c, "role": "categorical", "kind": transformer.tables_[c].vocab.kind})
    for c in transformer.passthrough_:
        out.append({"name": c, "role": "continuous", "kind": "number"})
    return out


# ---- inputs ----------------------------------------------------------------------------------------
def _encode(data: Dataset, frame: pd.DataFrame) -> np.ndarray:
    """The target as class ids 0..k-1 (classifiers) or values (regression)."""
    y = data.target.encode(frame[data.spec.target])
    return y if data.task == "regression" else y.astype(np.int64)


def _rows(data: Dataset, max_rows: int | None, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    train = data.train
    if max_rows is not None and len(train) > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(train), max_rows, replace=False))
        train = train.iloc[idx].reset_index(drop=True)
    return train, _encode(data, train)


def _load_tables(path: Path) -> Any:
    from embedkit.tables import load_tables

    if not path.exists():
        raise ConfigError(f"embedding tables directory {str(path)!r} does not exist")
    try:
        return load_tables(path)
    except FormatError as exc:
        raise ConfigError(f"cannot use the embedding tables at {str(path)!r}: {exc}") from None


def _tables_from_run(run_id: str, data: Dataset) -> tuple[Any, dict[str, Any]]:
    info = tracking.get_run(run_id)
    if info.tags.get(tracking.TAG_STEP) != "train":
        raise ConfigError(
            f"run {run_id} is not a train run (its step is {info.tags.get(tracking.TAG_STEP)!r})"
        )
    if info.status != "FINISHED":
        raise ConfigError(
            f"train run {run_id} is {info.status}, not FINISHED; resume it first "
            f"(embedkit train --resume {run_id})"
        )
    fp = info.tags.get("embedkit.data_fingerprint")
    if fp and fp != data.fingerprint:
        log.warning(
            "train run %s used other data (fingerprint %s, here %s): its validation rows may have "
            "been training rows of the net",
            run_id,
            fp,
            data.fingerprint,
        )
    with tempfile.TemporaryDirectory(prefix="embedkit-tables-") as tmp:  # the tables load into memory
        tables = _load_tables(tracking.download_artifacts(run_id, "tables", tmp))
    row = {
        "model": "net",
        "name": "net",
        "encoder": "net",
        "estimator": "net",
        "baseline": False,
        "run_id": run_id,
        **{k: v for k, v in info.metrics.items() if k in METRIC_MODES},
    }
    return tables, row


# ---- the comparison --------------------------------------------------------------------------------
def _log_comparison(rows: list[dict[str, Any]], task: str) -> None:
    frame = pd.DataFrame(rows)
    metric = "valid_auc" if task != "regression" else "valid_rmse"
    lines = verdict(rows, metric)
    for line in lines:
        log.info("%s", line)
    tracking.log_text(frame.to_csv(index=False), "comparison/comparison.csv")
    tracking.log_text(
        markdown_table(frame) + "\n" + "\n".join(f"- {line}" for line in lines) + "\n",
        "comparison/comparison.md",
    )
    tracking.log_dict({"task": task, "rows": rows, "verdict": lines}, "comparison/comparison.json")
    if metric in frame.columns:
        tracking.log_figure(plots.comparison_figure(rows, metric, lines[:1]), "plots/comparison.png")


def verdict(rows: list[dict[str, Any]], metric: str) -> list[str]:
    """Plain sentences: which model is best by ``metric``, and for each estimator whether the embeddings
    beat its best baseline (the same estimator on ordinal, one-hot or target encoding)."""
    better = max if METRIC_MODES.get(metric, "max") == "max" else min
    scored = [r for r in rows if isinstance(r.get(metric), float) and np.isfinite(r[metric])]
    if not scored:
        return []
    best = better(scored, key=lambda r: r[metric])
    kind = "a baseline, not an embedding model" if best.get("baseline") else "uses the embeddings"
    lines = [f"best by {metric}: {best['model']} ({best[metric]:.4f}; {kind})"]
    for est in dict.fromkeys(
        r["estimator"] for r in scored if not r.get("baseline") and r["estimator"] != "net"
    ):
        emb = [r for r in scored if r["estimator"] == est and not r.get("baseline")]
        base = [r for r in scored if r["estimator"] == est and r.get("baseline")]
        if not emb or not base:
            continue
        e, b = emb[0], better(base, key=lambda r: r[metric])
        helped = better(e[metric], b[metric]) == e[metric] and e[metric] != b[metric]
        lines.append(
            f"{est}: embeddings {e[metric]:.4f} vs {b['model']} {b[metric]:.4f}: the embeddings "
            + ("helped" if helped else "did NOT help")
        )
    return lines


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (floats to 4 decimals)."""
    cols = [c for c in frame.columns if c not in ("name",)]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if v != v else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for rec in frame[cols].to_dict("records"):
        lines.append("| " + " | ".join(cell(rec[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["downstream", *sys.argv[1:]]))
