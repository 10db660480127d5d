"""Training and inference on a CUDA GPU (bf16/fp16 autocast). Skipped on machines without one.

CI has no GPU; these run where one is present (``pytest -m cuda``), e.g. before a release.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from _synthetic import grouped_categories

from embedkit import EmbeddingTransformer, FeatureSpec
from embedkit.nn.callbacks import Callback
from embedkit.nn.learner import Learner
from embedkit.nn.model import SPARSE_MIN_ROWS, NetConfig
from embedkit.nn.trainer import CHECKPOINT_NAME, TrainConfig, read_checkpoint
from embedkit.predictor import Predictor

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SPEC = FeatureSpec(target="y", categorical=["cat", "other"], continuous=["x"], dates=[])


def _learner(df, task="binary", epochs=4, **cfg):
    tc = TrainConfig(**{"epochs": epochs, "batch_size": 256, "lr": 1e-2, "device": "cuda", **cfg})
    return Learner.from_frame(df, SPEC, task=task, net_config=NetConfig(layers=[64, 32]), train_config=tc)


def test_trains_on_the_gpu_with_mixed_precision():
    df, _ = grouped_categories(n=6000, task="binary")
    learn = _learner(df)
    assert learn.trainer.device.type == "cuda"
    assert learn.trainer.amp in (torch.bfloat16, torch.float16)
    learn.fit(df.iloc[:5000], df.iloc[5000:])
    assert all(p.device.type == "cuda" for p in learn.model.parameters())
    # master weights stay float32 under autocast
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    hist = learn.history.epochs
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert learn.evaluate(df.iloc[5000:])["auc"] > 0.85


def test_bundle_saved_on_gpu_loads_on_cpu_with_the_same_predictions(tmp_path):
    df, _ = grouped_categories(n=4000, task="binary", seed=1)
    learn = _learner(df, epochs=3)
    learn.fit(df.iloc[:3500], df.iloc[3500:])
    learn.save(tmp_path / "bundle")
    from embedkit.bundle import read_bundle
    from embedkit.nn.model import load_net, to_prediction

    contents = read_bundle(tmp_path / "bundle")
    codes, cont = contents.preprocessor.transform(df.iloc[3500:])
    net = load_net(contents, device="cuda")
    assert next(net.parameters()).device.type == "cuda"
    with torch.inference_mode():
        gpu = (
            to_prediction(
                "binary", net(torch.from_numpy(codes.astype(np.int64)).cuda(), torch.from_numpy(cont).cuda())
            )
            .cpu()
            .numpy()
        )
    cpu = Predictor.load(tmp_path / "bundle")  # numpy, on the CPU
    np.testing.assert_allclose(cpu.predict_raw(df.iloc[3500:]), gpu, atol=1e-4)


def test_checkpoint_written_on_gpu_resumes(tmp_path):
    class StopAfterFirst(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            trainer.stop_training = True

    df, _ = grouped_categories(n=3000, task="regression")
    kw = dict(task="regression", epochs=4, batch_size=128, checkpoint_dir=str(tmp_path), restore_best=False)
    learn = _learner(df, **kw)
    learn.trainer.callbacks.callbacks.append(StopAfterFirst())
    learn.fit(df.iloc[:2500], df.iloc[2500:])
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)["next_epoch"] == 1
    resumed = _learner(df, **kw)
    hist = resumed.fit(df.iloc[:2500], df.iloc[2500:], resume_from=tmp_path)
    assert [e["epoch"] for e in hist.epochs] == [1, 2, 3, 4]
    # it learned: well under the error of predicting the mean
    assert resumed.evaluate(df.iloc[2500:])["rmse"] < 0.7 * df["y"].std()


def test_large_vocabulary_updates_lazily_on_the_gpu():
    rng = np.random.default_rng(0)
    n = 20_000
    big = rng.integers(0, SPARSE_MIN_ROWS * 2, n)
    effect = rng.normal(size=SPARSE_MIN_ROWS * 2)
    df = grouped_categories(n=n, task="regression")[0]
    df["cat"] = pd.Series([f"v{c}" for c in big], dtype="str")
    df["y"] = effect[big] + 0.3 * df["x"].to_numpy()
    learn = _learner(df, task="regression", epochs=4, lr=3e-2)
    emb = learn.model.embeds[0]
    # in the one gather (dense gradient): on the GPU LazyAdamW updates it under a row mask
    assert emb.num_embeddings >= SPARSE_MIN_ROWS and learn.model.lazy_embeddings() == [emb] and not emb.sparse
    learn.fit(df.iloc[:18_000], df.iloc[18_000:])
    assert learn.history.epochs[-1]["train_loss"] < learn.history.epochs[0]["train_loss"]


def test_lr_find_on_the_gpu_restores_the_weights():
    df, _ = grouped_categories(n=4000, task="binary")
    learn = _learner(df)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    res = learn.lr_find(df, num=60)
    assert np.isfinite(res.suggestion) and 1e-6 < res.suggestion < 10
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_transformer_trains_on_the_gpu_and_transforms_without_it():
    df, groups = grouped_categories(n=4000, task="binary")
    X, y = df[["cat", "other", "x"]], df["y"]
    et = EmbeddingTransformer(columns=["cat", "other"], epochs=3, device="cuda", random_state=0)
    out = et.fit(X, y).transform(X)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert out.shape[0] == len(X)
