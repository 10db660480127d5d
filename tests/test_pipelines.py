"""The MLflow pipelines end to end on a small slice of the example: runs, artifacts, registry, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines import cli, tracking

pytestmark = pytest.mark.slow

CONFIG = """
[tracking]
experiment = "pipelines-test"

[data]
source = "example"
n_rows = 3000

[net]
layers = [16, 8]
emb_dims = { tailnum = 4, flight = 4, dest = 4 }

[train]
epochs = 2
batch_size = 256
seed = 0

[train.lr_find]
num = 20

[downstream]
models = ["lightgbm", "random_forest", "knn"]
baselines = ["ordinal+lightgbm", "onehot+knn", "target+lightgbm"]

[downstream.lightgbm]
n_estimators = 20
num_leaves = 7
verbosity = -1
n_jobs = 1

[downstream.random_forest]
n_estimators = 10
n_jobs = 1

[downstream.knn]
n_neighbors = 10

[register]
name = "pipelines-test"
"""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: per-epoch logs that measure the machine, not the model
TIMINGS = ("epoch/seconds", "epoch/rows_per_s")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    code = cli.main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    return json.loads(out)


def model_metrics(run: tracking.RunInfo) -> dict[str, float]:
    return {k: v for k, v in run.metrics.items() if k not in TIMINGS}


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One `embedkit run` on the small config, in its own store (active for the whole module; a test's
    `mlflow_tmp` switches to a store of its own). Yields (folder, config path, tracking URI)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    config = tmp / "config.toml"
    config.write_text(CONFIG)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(tmp)
        code = cli.main(["run", "--config", str(config), "--json", "-q"])
        assert code == 0
        yield tmp, config, uri


@pytest.fixture(scope="module")
def result(pipeline):
    """The parent run of `embedkit run` (its tags link the three steps and the registered model)."""
    parents = [r for r in _runs() if r.tags.get(tracking.TAG_STEP) == "run"]
    assert len(parents) == 1
    return parents[0]


@pytest.fixture(scope="module")
def first_train(result):
    """The train run of `embedkit run`, read while the module's store is active."""
    return tracking.get_run(result.tags[tracking.TAG_TRAIN_RUN])


def _runs() -> list[tracking.RunInfo]:
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("pipelines-test")
    return [tracking._info(r) for r in client.search_runs([exp.experiment_id], max_results=100)]


# ---- `embedkit run` --------------------------------------------------------------------------------
def test_runs_are_nested_linked_and_finished(result):
    parent = result
    assert parent.status == "FINISHED"
    children = {c.tags[tracking.TAG_STEP]: c for c in tracking.child_runs(parent.run_id)}
    assert set(children) == {"train", "downstream", "register"}
    assert all(c.status == "FINISHED" for c in children.values())
    assert parent.tags[tracking.TAG_TRAIN_RUN] == children["train"].run_id
    assert parent.tags[tracking.TAG_DOWNSTREAM_RUN] == children["downstream"].run_id
    assert parent.tags[tracking.TAG_REGISTER_RUN] == children["register"].run_id
    assert children["downstream"].tags[tracking.TAG_TRAIN_RUN] == children["train"].run_id
    assert parent.tags["embedkit.model_uri"] == "models:/pipelines-test@champion"


def test_train_run_records_params_metrics_and_artifacts(result, tmp_path):
    train = tracking.get_run(result.tags[tracking.TAG_TRAIN_RUN])
    # the resolved config, flattened: the given keys and embedkit's defaults
    assert train.params["train.epochs"] == "2"
    assert train.params["net.layers"] == "[16, 8]"
    assert train.params["net.emb_dropout"] == "0.2"  # embedkit's default for 2,400 training rows
    assert train.params["net.max_emb_dim"] == "12"
    assert train.params["data.n_train"] == "2400"
    assert 0.5 < train.metrics["valid_auc"] <= 1
    assert {"valid_log_loss", "valid_accuracy", "lr_suggestion", "epochs_run"} <= set(train.metrics)
    # per-epoch metrics through the trainer callback, step = epoch
    assert [s for s, _ in tracking.metric_history(train.run_id, "epoch/train_loss")] == [1, 2]
    assert [s for s, _ in tracking.metric_history(train.run_id, "epoch/valid_auc")] == [1, 2]
    top = set(tracking.list_artifacts(train.run_id))
    assert {"bundle", "tables", "plots", "checkpoints", "config.json", "lr_finder.json"} <= top
    assert "checkpoints/checkpoint.pt" in tracking.list_artifacts(train.run_id, "checkpoints")
    assert (Path(train.tags["embedkit.run_dir"]) / "checkpoints" / "checkpoint.pt").exists()


def test_tables_artifact_passes_the_format_check(result, tmp_path):
    from embedkit.datasets import FLIGHTS_CATEGORICAL
    from embedkit.tables import load_tables

    run_id = result.tags[tracking.TAG_TRAIN_RUN]
    tables = load_tables(tracking.download_artifacts(run_id, "tables", tmp_path), verify=True)
    assert list(tables) == FLIGHTS_CATEGORICAL
    assert tables.source == run_id
    assert tables["tailnum"].dim == 4


def test_plots_are_pngs(result, tmp_path):
    from embedkit.tables import load_tables

    run_id = result.tags[tracking.TAG_TRAIN_RUN]
    train_plots = tracking.download_artifacts(run_id, "plots", tmp_path / "t")
    names = sorted(p.name for p in train_plots.iterdir())
    tables = load_tables(tracking.download_artifacts(run_id, "tables", tmp_path / "tables"))
    most = max(tables.values(), key=lambda t: (t.n_codes, t.dim)).name  # the projection's column
    assert names == ["curves.png", f"embeddings_{most}.png", "lr_finder.png"]
    comparison = tracking.download_artifacts(
        result.tags[tracking.TAG_DOWNSTREAM_RUN], "plots", tmp_path / "d"
    )
    for png in [*train_plots.iterdir(), *comparison.iterdir()]:
        assert_png(png)


def test_downstream_child_runs_and_comparison(result, tmp_path):
    downstream_id = result.tags[tracking.TAG_DOWNSTREAM_RUN]
    children = {c.tags["embedkit.nn.model"]: c for c in tracking.child_runs(downstream_id)}
    assert set(children) == {
        "lightgbm",
        "random_forest",
        "knn",
        "ordinal+lightgbm",
        "onehot+knn",
        "target+lightgbm",
    }
    for name, child in children.items():
        assert child.status == "FINISHED"
        assert {"valid_auc", "valid_log_loss", "valid_accuracy", "fit_seconds"} <= set(child.metrics), name
        # every model, baselines included, is a candidate of register and logs a servable
        assert child.tags[tracking.TAG_CANDIDATE] == "true"
        assert child.tags["embedkit.baseline"] == str("+" in name).lower()
        assert "servable" in tracking.list_artifacts(child.run_id)
    table = json.loads(
        tracking.download_artifacts(downstream_id, "comparison/comparison.json", tmp_path).read_text()
    )
    assert table["rows"][0]["name"] == "net"
    assert len(table["rows"]) == 7
    md = tracking.download_artifacts(downstream_id, "comparison/comparison.md", tmp_path).read_text()
    assert md.startswith("| model |") and "target+lightgbm" in md
    # the comparison says plainly whether the embeddings helped each estimator
    assert table["verdict"][0].startswith("best by valid_auc: ")
    for est in ("lightgbm", "knn"):
        (line,) = [v for v in table["verdict"] if v.startswith(f"{est}: embeddings")]
        emb = children[est].metrics["valid_auc"]
        best_base = max(c.metrics["valid_auc"] for n, c in children.items() if n.endswith(f"+{est}"))
        assert line.endswith("helped") == (emb > best_base), line
        assert f"- {line}" in md


def test_registered_alias_serves_the_servables_predictions(result, tmp_path):
    import mlflow.pyfunc
    from mlflow import MlflowClient

    from embedkit.servable import load_servable
    from pipelines.config import load_config
    from pipelines.sources import load_data

    version = MlflowClient().get_model_version_by_alias("pipelines-test", "champion")
    assert str(version.version) == result.tags["embedkit.registered_version"]
    chosen = result.tags["embedkit.chosen"]
    assert version.tags["embedkit.nn.model"] == chosen
    kind = "net" if chosen == "net" else "baseline" if "+" in chosen else "pipeline"
    assert version.tags["embedkit.servable_kind"] == kind
    assert version.tags[tracking.TAG_TRAIN_RUN] == result.tags[tracking.TAG_TRAIN_RUN]
    # the best candidate by valid_auc won, among all of them: the net, the embedding models, the baselines
    register = tracking.get_run(result.tags[tracking.TAG_REGISTER_RUN])
    cands = json.loads(tracking.download_artifacts(register.run_id, "candidates.json", tmp_path).read_text())
    assert chosen == max(cands["candidates"], key=lambda c: c["score"])["name"]
    assert {c["name"] for c in cands["candidates"]} == {
        "net", "lightgbm", "random_forest", "knn", "ordinal+lightgbm", "onehot+knn", "target+lightgbm"
    }  # fmt: skip

    model = mlflow.pyfunc.load_model("models:/pipelines-test@champion")
    assert model.metadata.signature is not None
    assert model.metadata.saved_input_example_info is not None
    data = load_data(load_config(None, ["data.n_rows=3000"]))
    x = data.valid[[c["name"] for c in model.metadata.get_input_schema().to_dict()]].head(300)
    got = model.predict(x)
    servable_dir = tracking.download_artifacts(
        version.tags["embedkit.source_run_id"], "bundle" if chosen == "net" else "servable", tmp_path / "s"
    )
    if chosen == "net":
        from embedkit.predictor import Predictor

        expected = Predictor.load(servable_dir)
    else:
        expected = load_servable(servable_dir)
    assert list(got.columns) == ["prediction", "proba_0", "proba_1"]
    np.testing.assert_allclose(
        got[["proba_0", "proba_1"]].to_numpy(), expected.predict_proba(x), rtol=1e-6, atol=1e-7
    )
    assert got["prediction"].tolist() == expected.predict(x).tolist()


def test_register_the_net(pipeline, result, tmp_path, capsys):
    import mlflow.pyfunc

    from embedkit.predictor import Predictor
    from pipelines.config import load_config
    from pipelines.sources import load_data

    _, config, _ = pipeline
    train_id = result.tags[tracking.TAG_TRAIN_RUN]
    out = run_cli(
        capsys,
        "register",
        "--config",
        str(config),
        "--train-run",
        train_id,
        "--set",
        'register.candidates=["net"]',
        "--set",
        'register.name="pipelines-test-net"',
    )
    assert (out["chosen"], out["model_uri"]) == ("net", "models:/pipelines-test-net@champion")
    model = mlflow.pyfunc.load_model(out["model_uri"])
    x = load_data(load_config(config)).valid.head(200)
    expected = Predictor.load(tracking.download_artifacts(train_id, "bundle", tmp_path))
    got = model.predict(x[expected.feature_columns])
    np.testing.assert_allclose(
        got["proba_1"].to_numpy(), expected.predict_proba(x)[:, 1], rtol=1e-6, atol=1e-7
    )


def test_register_can_choose_a_baseline_and_serves_it(pipeline, result, tmp_path, capsys):
    import mlflow.pyfunc

    from embedkit.servable import load_servable
    from pipelines.config import load_config
    from pipelines.sources import load_data

    _, config, _ = pipeline
    out = run_cli(
        capsys,
        "register",
        "--config",
        str(config),
        "--train-run",
        result.tags[tracking.TAG_TRAIN_RUN],
        "--downstream-run",
        result.tags[tracking.TAG_DOWNSTREAM_RUN],
        "--set",
        'register.candidates=["ordinal+lightgbm", "onehot+knn"]',
        "--set",
        'register.name="pipelines-test-baseline"',
    )
    assert out["chosen"] in ("ordinal+lightgbm", "onehot+knn")
    servable = load_servable(tracking.download_artifacts(out["chosen_run_id"], "servable", tmp_path))
    # the train run's tables come along for the embedding look-ups (the baseline does not use them)
    from embedkit.datasets import FLIGHTS_CATEGORICAL

    assert servable.kind == "baseline" and list(servable.tables) == FLIGHTS_CATEGORICAL
    x = load_data(load_config(config)).valid.head(200)[servable.feature_columns]
    got = mlflow.pyfunc.load_model(out["model_uri"]).predict(x)
    np.testing.assert_allclose(got["proba_1"].to_numpy(), servable.predict_proba(x)[:, 1], rtol=1e-6)
    child = tracking.get_run(out["chosen_run_id"])
    from sklearn.metrics import roc_auc_score

    y = load_data(load_config(config)).valid.head(200)["late"]
    assert abs(roc_auc_score(y, got["proba_1"]) - child.metrics["valid_auc"]) < 0.15  # the same model


def test_register_without_a_downstream_run_finds_the_newest_one(pipeline, result, capsys, caplog):
    _, config, _ = pipeline
    train_id = result.tags[tracking.TAG_TRAIN_RUN]
    with caplog.at_level("INFO", logger="pipelines"):
        out = run_cli(
            capsys, "register", "--config", str(config), "--train-run", train_id,
            "--set", 'register.name="pipelines-test-found"',
        )  # fmt: skip
    assert result.tags[tracking.TAG_DOWNSTREAM_RUN] in caplog.text
    assert len(out_candidates(out["register_run_id"], Path(config).parent / "found")) == 7


def test_same_config_and_seed_give_the_same_metrics(pipeline, first_train, capsys):
    _, config, _ = pipeline
    first = first_train
    out = run_cli(capsys, "train", "--config", str(config))
    second = tracking.get_run(out["train_run_id"])
    assert model_metrics(second) == model_metrics(first)
    for key in ("epoch/train_loss", "epoch/valid_log_loss"):
        assert tracking.metric_history(second.run_id, key) == tracking.metric_history(first.run_id, key)


# ---- the learning rate --------------------------------------------------------------------------
def test_train_run_trains_what_fit_net_trains_on_the_configs_frames(pipeline, first_train):
    from embedkit.nn.learner import fit_net
    from pipelines.config import load_config
    from pipelines.sources import load_data
    from pipelines.train import net_config, train_config

    cfg = load_config(pipeline[1])
    data = load_data(cfg)
    learn = fit_net(
        data.train,
        data.spec,
        valid=data.valid,
        task=data.task,
        net_config=net_config(cfg),
        train_config=train_config(cfg, None),
        min_frequency=cfg.data.min_frequency,
        lr_find=cfg.train.lr_find.model_dump(exclude_none=True),
    )
    # the same sweep, the same rate from it, the same net
    assert learn.lr_finder is not None
    assert float(first_train.params["lr_used"]) == learn.trainer.lr_max == learn.lr_finder.suggestion
    assert first_train.metrics["lr_suggestion"] == learn.lr_finder.suggestion
    valid = {f"valid_{k}": v for k, v in learn.evaluate(data.valid).items()}
    assert {k: first_train.metrics[k] for k in valid} == pytest.approx(valid, rel=1e-6)


def test_a_configured_rate_is_used_and_the_sweep_still_logged(mlflow_tmp, tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("n_rows = 3000", "n_rows = 1200").replace("epochs = 2", "epochs = 1"))
    out = run_cli(capsys, "train", "--config", str(config), "--set", "train.lr=0.003")
    run = tracking.get_run(out["train_run_id"])
    assert run.params["train.lr"] == "0.003" and float(run.params["lr_used"]) == 0.003
    assert run.metrics["lr_suggestion"] != 0.003  # the finder ran, for its plot, and was not followed
    assert "lr_finder.json" in tracking.list_artifacts(run.run_id)
    assert "plots/lr_finder.png" in tracking.list_artifacts(run.run_id, "plots")


# ---- interrupt and resume --------------------------------------------------------------------------
PAUSE_SCRIPT = """
import sys, time
from pathlib import Path
from embedkit.nn.callbacks import Callback
import pipelines.train as train_module

class PauseAtFirstCheckpoint(Callback):
    def on_checkpoint(self, trainer, path):
        Path("paused").write_text(path)  # the test sends SIGTERM once this exists
        time.sleep(120)

_default = train_module.default_callbacks
train_module.default_callbacks = lambda cfg, run_id: [*_default(cfg, run_id), PauseAtFirstCheckpoint()]
from pipelines.cli import main
sys.exit(main(sys.argv[1:]))
"""


def empty_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point TMPDIR (and Python's cached temporary directory) at a fresh, empty folder; returns it."""
    import tempfile

    scratch = tmp_path / "scratch-tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def leftovers(scratch: Path) -> list[str]:
    """What is left in ``scratch``, but torch's per-user kernel cache (``torchinductor_<user>``: one
    folder that every run reuses, created by torch itself, not per-run garbage)."""
    return sorted(p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_"))


def test_run_leaves_nothing_in_the_temp_dir(mlflow_tmp, tmp_path, monkeypatch, capsys):
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.replace("n_rows = 3000", "n_rows = 1200")
        .replace("epochs = 2", "epochs = 1")
        .replace('models = ["lightgbm", "random_forest", "knn"]', 'models = ["lightgbm"]')
        .replace('baselines = ["ordinal+lightgbm", "onehot+knn", "target+lightgbm"]', "baselines = []")
        + 'candidates = ["net", "lightgbm"]\n'
    )
    scratch = empty_temp_dir(tmp_path, monkeypatch)
    out = run_cli(capsys, "run", "--config", str(config))
    assert out["downstream_run_id"]
    assert leftovers(scratch) == []  # no embedkit-*/tables left by the downstream step
    run_cli(capsys, "downstream", "--config", str(config), "--train-run", out["train_run_id"])
    assert leftovers(scratch) == []


def test_sigterm_marks_killed_and_resume_finishes(first_train, mlflow_tmp, tmp_path, capsys, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    script = tmp_path / "pause_train.py"
    script.write_text(PAUSE_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), "train", "--config", str(config), "-q"],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_tmp},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "paused").exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "training never reached its first checkpoint"
            time.sleep(0.1)
        checkpoint = Path((tmp_path / "paused").read_text())
        assert checkpoint.exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "marked KILLED" in err
    run_id = checkpoint.parent.parent.name
    assert tracking.get_run(run_id).status == "KILLED"

    # the local run dir is gone (another machine, say): resume downloads the logged checkpoint
    import shutil

    shutil.rmtree(checkpoint.parent)
    scratch = empty_temp_dir(tmp_path, monkeypatch)
    out = run_cli(capsys, "train", "--resume", run_id)
    assert leftovers(scratch) == []  # the downloaded config.json went with its temporary folder
    assert out["train_run_id"] == run_id and out["epochs"] == 2
    resumed = tracking.get_run(run_id)
    assert resumed.status == "FINISHED"
    assert [s for s, _ in tracking.metric_history(run_id, "epoch/train_loss")] == [1, 2]
    assert resumed.metrics["epochs_run"] == 2
    assert checkpoint.exists()  # downloaded back to the run dir, then written by epoch 2
    # every epoch is seeded and the optimizer state is in the checkpoint: resuming changes nothing
    assert model_metrics(resumed) == model_metrics(first_train)
    # a finished run cannot be resumed again
    assert cli.main(["train", "--resume", run_id]) == 2
    assert "already FINISHED" in capsys.readouterr().err


# ---- a file source, regression ---------------------------------------------------------------------
def test_regression_from_a_csv_file(mlflow_tmp, tmp_path, capsys):
    import mlflow.pyfunc
    from _synthetic import grouped_categories

    from embedkit.servable import load_servable

    frame, _ = grouped_categories(n=1500, task="regression")
    frame.to_csv(tmp_path / "rows.csv", index=False)
    (tmp_path / "reg.toml").write_text(
        '[data]\nsource = "rows.csv"\ntarget = "y"\n[net]\nlayers = [8]\n[train]\nepochs = 1\n'
        "[train.lr_find]\nnum = 20\n"
        '[downstream]\nmodels = ["lightgbm", "knn"]\nbaselines = ["target+lightgbm"]\n'
        "[downstream.lightgbm]\nn_estimators = 20\nverbosity = -1\nn_jobs = 1\n"
        '[register]\nname = "reg"\nselect_by = "valid_rmse"\ncandidates = ["net", "lightgbm", "knn"]\n'
    )
    out = run_cli(capsys, "run", "--config", str(tmp_path / "reg.toml"))
    cands = {c["name"]: c["score"] for c in out_candidates(out["register_run_id"], tmp_path)}
    assert set(cands) == {"net", "lightgbm", "knn"}
    assert out["chosen"] == min(cands, key=cands.get)  # rmse: smaller wins
    assert set(out["train_metrics"]) == {"valid_rmse", "valid_mae"}
    model = mlflow.pyfunc.load_model(out["model_uri"])
    x = frame[["cat", "other", "x"]].head(50)
    got = model.predict(x)
    assert list(got.columns) == ["prediction"]
    if out["chosen"] != "net":
        servable = load_servable(
            tracking.download_artifacts(out["chosen_run_id"], "servable", tmp_path / "s")
        )
        np.testing.assert_allclose(got["prediction"].to_numpy(), servable.predict(x), rtol=1e-6)


def out_candidates(register_run_id: str, tmp_path: Path) -> list[dict]:
    path = tracking.download_artifacts(register_run_id, "candidates.json", tmp_path / "c")
    return json.loads(path.read_text())["candidates"]


# ---- bad config values and bad data: exit 2, a clear message, and no MLflow run left ---------------
def _all_runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)  # the test's own store, whatever an earlier test set
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["net.dropout=2.0"], "config key 'net.dropout': a dropout probability must be at least 0"),
        (["train.moms=[2,3]"], "config key 'train.moms': both momentums"),
        (['train.device="cuda:7"'], "config key 'train.device': 'cuda:7' was asked for"),
        (["data.continuous=['carrier']"], "continuous column 'carrier' has non-numeric values"),
    ],
)
def test_bad_values_exit_2_before_any_run(mlflow_tmp, tmp_path, capsys, overrides, message):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    sets = [a for o in overrides for a in ("--set", o)]
    assert cli.main(["train", "--config", str(config), *sets]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err[-2000:]
    assert _all_runs(mlflow_tmp) == []


def test_bad_data_file_exits_2_before_any_run(mlflow_tmp, tmp_path, capsys):
    from _synthetic import grouped_categories

    frame, _ = grouped_categories(n=300, task="regression")
    frame["empty"] = np.nan
    frame.to_csv(tmp_path / "rows.csv", index=False)
    (tmp_path / "c.toml").write_text(
        '[data]\nsource = "rows.csv"\ntarget = "y"\ncontinuous = ["x", "empty"]\n'
        '[register]\nselect_by = "valid_rmse"\n'
    )
    assert cli.main(["train", "--config", str(tmp_path / "c.toml")]) == 2
    err = capsys.readouterr().err
    assert "column 'empty' is entirely missing in the training data; drop it or fill it" in err, err
    assert _all_runs(mlflow_tmp) == []
    frame["empty"] = "lots"  # a continuous column of words
    frame.to_csv(tmp_path / "rows.csv", index=False)
    assert cli.main(["train", "--config", str(tmp_path / "c.toml")]) == 2
    err = capsys.readouterr().err
    assert "continuous column 'empty' has non-numeric values (e.g. 'lots')" in err, err
    assert _all_runs(mlflow_tmp) == []
