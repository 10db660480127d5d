"""A servable built without training (no torch): embedding tables with a known cluster structure, made
up here, then embeddings → logistic regression packaged as a kind "pipeline" servable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from embedkit.preprocessing import CategoryVocab
from embedkit.tables import EmbeddingTable, EmbeddingTables


def clustered_table(
    name: str, values: list[str] | list[int], kind: str, dim: int = 8, n_clusters: int = 8, seed: int = 0
) -> EmbeddingTable:
    """Categories around ``n_clusters`` centres (category ``i`` in cluster ``i % n_clusters``), with
    Zipf-like training counts, so that the plot has groups, a few big points and a long tail."""
    rng = np.random.default_rng(seed)
    n = len(values)
    centres = rng.normal(size=(n_clusters, dim)) * 2.0
    vectors = centres[np.arange(n) % n_clusters] + rng.normal(scale=0.5, size=(n, dim))
    counts = np.ceil(20_000 / (1 + rng.permutation(n)) ** 0.9).astype(np.int64)
    reserved = rng.normal(scale=0.3, size=(2, dim))
    vocab = CategoryVocab(name, kind, list(values), counts.tolist(), missing_count=37, unknown_count=120)
    return EmbeddingTable(vocab, np.vstack([reserved, vectors]).astype(np.float32))


def build_clustered_servable(root: Path, n_items: int = 10_000, seed: int = 0) -> Path:
    """A servable with three embedded columns: ``item`` (``n_items`` string categories ``item-00000``
    ...), ``city`` (30 strings) and ``level`` (integers 0..19), and one number ``amount``."""
    from sklearn.linear_model import LogisticRegression

    from embedkit.servable import save_pipeline_servable
    from embedkit.transformer import EmbeddingTransformer

    tables = EmbeddingTables(
        [
            clustered_table("item", [f"item-{i:05d}" for i in range(n_items)], "string", seed=seed),
            clustered_table(
                "city", [f"city {i}" for i in range(30)], "string", dim=4, n_clusters=3, seed=seed + 1
            ),
            clustered_table("level", list(range(20)), "integer", dim=3, n_clusters=2, seed=seed + 2),
        ]
    )
    rng = np.random.default_rng(seed)
    n = 200
    x = pd.DataFrame(
        {
            "item": pd.Series([f"item-{i:05d}" for i in rng.integers(0, n_items, n)], dtype="str"),
            "city": pd.Series([f"city {i}" for i in rng.integers(0, 30, n)], dtype="str"),
            "level": rng.integers(0, 20, n).astype("int64"),
            "amount": rng.normal(size=n),
        }
    )
    y = (x["amount"] > 0).astype("int64")
    transformer = EmbeddingTransformer(tables=tables, columns=["item", "city", "level"]).fit(x)
    estimator = LogisticRegression(max_iter=200).fit(np.asarray(transformer.transform(x)), y)
    schema = [
        {"name": "item", "role": "categorical", "kind": "string"},
        {"name": "city", "role": "categorical", "kind": "string"},
        {"name": "level", "role": "categorical", "kind": "integer"},
        {"name": "amount", "role": "continuous", "kind": "number"},
    ]
    return save_pipeline_servable(
        root / "clustered",
        transformer=transformer,
        estimator=estimator,
        task="binary",
        classes=[0, 1],
        input_schema=schema,
        name="explore-test",
    )
