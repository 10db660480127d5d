"""The service's pandas-free scoring path gives what embedkit's Preprocessor and torch net give."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from test_service_support import frame

from embedkit.nn.learner import Learner
from embedkit.nn.model import NetConfig, to_prediction
from embedkit.nn.trainer import TrainConfig
from embedkit.servable import load_servable, save_net_servable
from embedkit.spec import FeatureSpec
from service import scoring
from service.fastnet import compile_net
from service.scoring import NetEncoder, Scorer, _timestamp_key

# numpy and torch paths, batches of several sizes: rerun by `make test` with ATEN_CPU_CAPABILITY=default
pytestmark = pytest.mark.floats


def _servable(root: Path, task: str = "binary", net: NetConfig | None = None) -> Any:
    """A net whose categorical inputs have every vocabulary kind: string, integer, boolean, timestamp."""
    df = frame(task=task)
    rng = np.random.default_rng(1)
    df["day"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 6, len(df)), unit="D")
    spec = FeatureSpec(
        target="y", categorical=["city", "level", "flag", "day"], continuous=["amount", "score"], dates=[]
    )
    learn = Learner.from_frame(
        df,
        spec,
        task=task,
        net_config=net,
        train_config=TrainConfig(epochs=1, lr=1e-2, batch_size=128, device="cpu"),
    )
    learn.fit(df)
    learn.save(root / "bundle")
    return load_servable(save_net_servable(root / "servable", root / "bundle"))


@pytest.fixture(scope="module")
def servable(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _servable(tmp_path_factory.mktemp("scoring"))


def random_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Seen, unseen and missing values of every kind, as the validator hands them over."""
    rng = np.random.default_rng(seed)
    cities = ["c0", "c3", "c7", "never", "", "C1", None]
    levels = [0, 2, 4, 5, -1, 2**63, -(2**70), None]
    flags = [True, False, None]
    days = [
        dt.datetime(2024, 1, 3),
        dt.datetime(2024, 1, 3, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 3, 5, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        dt.date(2024, 1, 4),
        dt.datetime(2024, 1, 3, 0, 0, 1),
        dt.datetime(1, 1, 1),
        dt.datetime(9999, 1, 1),
        None,
    ]
    out = []
    for _ in range(n):
        out.append(
            {
                "city": cities[rng.integers(len(cities))],
                "level": levels[rng.integers(len(levels))],
                "flag": flags[rng.integers(len(flags))],
                "day": days[rng.integers(len(days))],
                "amount": None if rng.random() < 0.2 else float(rng.normal(20, 10)),
                "score": None if rng.random() < 0.2 else float(rng.normal()),
            }
        )
    return out


def as_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The same records as a DataFrame for embedkit's own (pandas) path."""
    df = pd.DataFrame(records)
    df["level"] = pd.Series([r["level"] for r in records], dtype=object)
    df["day"] = pd.Series(
        [
            None
            if r["day"] is None
            else pd.Timestamp(scoring.naive_utc(r["day"]))
            if dt.datetime(1678, 1, 1) <= scoring.naive_utc(r["day"]) <= dt.datetime(2262, 1, 1)
            else pd.Timestamp("1677-09-21 00:12:44")
            for r in records
        ],
        dtype="datetime64[ns]",
    )
    return df.astype({"amount": "float64", "score": "float64"})


def test_encoder_gives_the_preprocessors_codes(servable: Any) -> None:
    records = random_records(500)
    codes, cont = NetEncoder(servable.predictor).encode(records)
    want_codes, want_cont = servable.predictor.preprocessor.transform(as_frame(records))
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_allclose(cont, want_cont, rtol=1e-6)
    assert (codes == 1).any() and (codes == 0).any() and (codes >= 2).any()


def test_scorer_matches_the_servable(servable: Any) -> None:
    records = random_records(300, seed=3)
    body = {"records": [{**r, "day": None if r["day"] is None else r["day"].isoformat()} for r in records]}
    scorer = Scorer(servable, max_rows=1000, extra_columns="ignore")
    scores = scorer.score_body(json.dumps(body).encode())
    frame_ = as_frame(records)
    np.testing.assert_allclose(np.array(scores.probabilities), servable.predict_proba(frame_), atol=1e-5)
    assert scores.predictions == servable.predict(frame_).tolist()
    assert scores.unknown == servable.unknown_counts(frame_)


def test_torch_and_numpy_paths_agree(servable: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    records = random_records(50, seed=5)
    scorer = Scorer(servable, max_rows=1000, extra_columns="ignore")
    assert scorer.net is not None and scorer.net.numpy_net is not None
    fast = scorer.score(records)
    monkeypatch.setattr(scoring, "NUMPY_MAX_ROWS", 0)
    slow = scorer.score(records)
    np.testing.assert_allclose(fast.probabilities, slow.probabilities, atol=1e-5)
    # one row (views instead of fancy indexing) gives the same as a batch
    one = scorer.score(records[:1])
    np.testing.assert_allclose(one.probabilities, slow.probabilities[:1], atol=1e-5)


@pytest.mark.parametrize(
    "task,net",
    [
        ("multiclass", None),
        ("regression", None),
        ("regression", NetConfig(y_range=(-3.0, 3.0))),
        ("binary", NetConfig(layers=[16], dropout=0.0, use_bn=False, bn_cont=False)),
    ],
)
def test_numpy_net_matches_torch(tmp_path: Path, task: str, net: NetConfig | None) -> None:
    servable = _servable(tmp_path, task, net)
    model = servable.predictor.model
    compiled = compile_net(model, task)
    assert compiled is not None
    rng = np.random.default_rng(0)
    for n in (1, 7, 300):
        codes = np.stack([rng.integers(0, c, n) for c in model.cardinalities], axis=1).astype(np.int64)
        cont = rng.normal(size=(n, model.n_cont)).astype(np.float32)
        with torch.inference_mode():
            want = to_prediction(task, model(torch.from_numpy(codes), torch.from_numpy(cont))).numpy()
        np.testing.assert_allclose(compiled.predict(codes, cont), want, atol=1e-5)


def test_unknown_layers_keep_torch(servable: Any) -> None:
    model = servable.predictor.model
    body = model.body
    try:
        model.body = torch.nn.Sequential(*body, torch.nn.Tanh())
        assert compile_net(model, "binary") is None
    finally:
        model.body = body
    assert compile_net(model, "binary") is not None


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 1, 3),
        dt.datetime(2024, 1, 3, 12, 30, 0, 123456),
        dt.datetime(1970, 1, 1),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
        dt.datetime(2024, 1, 3, 5, tzinfo=dt.timezone(dt.timedelta(hours=-7))),
        dt.date(2000, 2, 29),
    ],
)
def test_timestamp_keys_are_pandas_nanoseconds(value: dt.date) -> None:
    want = pd.Timestamp(value).tz_convert(None) if getattr(value, "tzinfo", None) else pd.Timestamp(value)
    assert _timestamp_key(value) == want.value
