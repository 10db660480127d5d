"""Figures the runs log: training curves, a 2-D projection of an embedding table, the model comparison.

Built on ``matplotlib.figure.Figure`` directly (no pyplot state, safe without a display).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

#: the reserved rows of every table (codes 0 and 1), drawn apart from the values
_RESERVED = {0: "missing", 1: "unknown"}


def curves_figure(epochs: list[dict[str, Any]]) -> Figure:
    """Loss per epoch (training and validation) and the other validation metrics per epoch."""
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_metric = fig.subplots(1, 2)
    x = [int(e["epoch"]) for e in epochs]

    def series(key: str) -> list[float]:
        return [float(e.get(key, np.nan)) for e in epochs]

    ax_loss.plot(x, series("train_loss"), marker="o", label="train loss")
    for key in ("valid_log_loss", "valid_rmse"):
        if any(key in e for e in epochs):
            ax_loss.plot(x, series(key), marker="o", label=key.replace("_", " "))
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss")
    ax_loss.legend()
    shown = False
    for key in ("valid_auc", "valid_accuracy", "valid_mae"):
        if any(key in e for e in epochs):
            ax_metric.plot(x, series(key), marker="o", label=key.replace("_", " "))
            shown = True
    ax_metric.set_xlabel("epoch")
    ax_metric.set_title("validation metrics")
    if shown:
        ax_metric.legend()
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def widest_table(tables: Any) -> Any:
    """The table with the most categories (ties: the most dimensions); ``tables`` maps name -> table."""
    return max(tables.values(), key=lambda t: (t.n_codes, t.dim))


def projection_figure(table: Any, n_labels: int = 15, max_points: int = 5000) -> Figure:
    """PCA of one column's embedding vectors to 2-D; the ``n_labels`` most frequent categories are named,
    the missing and unknown rows marked. Point size follows the training count."""
    from sklearn.decomposition import PCA

    w = np.asarray(table.weights, dtype=np.float64)
    values = table.vocab.decode_values()
    counts = np.asarray(table.vocab.counts, dtype=np.float64)
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    if w.shape[1] >= 2 and w.shape[0] >= 2:
        xy = PCA(n_components=2, random_state=0).fit_transform(w)
    else:  # a 1-D embedding: plot it against zero
        xy = np.column_stack([w[:, 0], np.zeros(len(w))])
    pts = xy[2:]
    order = np.argsort(-counts, kind="stable")
    shown = order[:max_points]
    size = 8 + 60 * np.sqrt(counts[shown] / max(counts.max(initial=1.0), 1.0))
    ax.scatter(pts[shown, 0], pts[shown, 1], s=size, alpha=0.5, label="categories")
    top = order[:n_labels]
    ax.scatter(
        pts[top, 0],
        pts[top, 1],
        s=size[: len(top)],
        facecolors="none",
        edgecolors="black",
        linewidths=0.8,
        label=f"{len(top)} most frequent",
    )
    for i in top:
        ax.annotate(str(values.iloc[i]), pts[i], fontsize=8, xytext=(3, 3), textcoords="offset points")
    for code, name in _RESERVED.items():
        ax.scatter([xy[code, 0]], [xy[code, 1]], marker="x", s=80, label=name)
    ax.set_title(f"embeddings of {table.name!r} ({len(values)} categories, {table.dim} dims), PCA to 2-D")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def comparison_figure(rows: list[dict[str, Any]], metric: str, notes: list[str] | None = None) -> Figure:
    """A bar per model of ``metric`` (rows without it are left out); ``notes`` go under the title."""
    have = [r for r in rows if r.get(metric) is not None and np.isfinite(r[metric])]
    fig = Figure(figsize=(7, 0.5 * max(len(have), 2) + 1.5))
    ax = fig.subplots()
    names = [r["model"] for r in have]
    vals = [float(r[metric]) for r in have]
    ax.barh(names, vals, color=["tab:orange" if r.get("baseline") else "tab:blue" for r in have])
    for i, v in enumerate(vals):
        ax.annotate(f"{v:.4f}", (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlabel(metric)
    title = f"{metric} by model (orange: baselines)"
    ax.set_title(title + "".join(f"\n{n}" for n in notes or []), fontsize=9 if notes else None)
    ax.invert_yaxis()
    if vals:
        lo, hi = min(vals), max(vals)
        pad = (hi - lo) * 0.2 or abs(hi) * 0.05 or 0.1
        ax.set_xlim(max(lo - pad, 0) if lo >= 0 else lo - pad, hi + pad)
    fig.tight_layout()
    return fig
