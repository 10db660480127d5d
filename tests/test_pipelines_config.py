"""Pipeline configs: validation messages, overrides, and bad configs failing before anything is registered."""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedkit.nn.model import NetConfig
from embedkit.nn.trainer import TrainConfig
from pipelines import cli
from pipelines.config import ConfigError, NetSection, PipelineConfig, TrainSection, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "pipelines" / "configs"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def no_registered_model(uri: str) -> bool:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models() == []


# ---- the shipped configs ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["example.toml", "small.toml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.data.is_example
    assert cfg.register.resolved_mode == "max"


def test_sections_only_name_embedkit_fields():
    # [net] and [train] pass their keys to NetConfig / TrainConfig: a renamed field there must show here
    net_fields = {f.name for f in dataclasses.fields(NetConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(NetSection.model_fields) <= net_fields
    assert set(TrainSection.model_fields) - {"lr_find"} <= train_fields


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.epochs=3", "data.n_rows=100", "net.layers=[8, 4]", "data.split.seed=7"])
    assert cfg.train.overrides() == {"epochs": 3}
    assert (cfg.data.n_rows, cfg.net.layers, cfg.data.split.seed) == (100, [8, 4], 7)
    assert load_config(None, ["data.source=flights.csv", "data.target=late"]).data.source == "flights.csv"


def test_round_trip_through_dict(tmp_path):
    cfg = load_config(write(tmp_path / "c.toml", '[data]\nsource = "d.csv"\ntarget = "y"\n'))
    again = PipelineConfig.from_dict(cfg.to_dict())
    assert again.data_path() == (tmp_path / "d.csv").resolve()  # relative to the config file's folder
    assert again.to_dict() == cfg.to_dict()


# ---- messages --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepoch = 2\n", "config key 'train.epoch' is not known; did you mean 'train.epochs'?"),
        ("[trian]\nepochs = 2\n", "config key 'trian' is not known; did you mean 'train'?"),
        (
            "[train.lr_find]\nnm = 3\n",
            "config key 'train.lr_find.nm' is not known; did you mean 'train.lr_find.num'?",
        ),
        ('[train]\nepochs = "two"\n', "config key 'train.epochs' must be an integer (got 'two')"),
        ("[data]\nn_rows = 1.5\n", "config key 'data.n_rows' must be an integer (got 1.5)"),
        ("[data]\nn_rows = -1\n", "config key 'data.n_rows' must be greater than 0 (got -1)"),
        ('[net]\ndropout = "x"\n', "config key 'net.dropout' must be a list or a number (got 'x')"),
        ("[tracking]\nlog_checkpoints = 1\n", "config key 'tracking.log_checkpoints' must be true or false"),
        (
            '[data]\nsource = "x.csv"\n',
            "config key 'data.target': a data file needs the target column's name",
        ),
        ('[register]\nselect_by = "valid_aucc"\n', "did you mean 'valid_auc'?"),
        (
            '[register]\nalias = "latest"\n',
            "config key 'register.alias': 'latest' is not a valid MLflow alias",
        ),
        (
            '[register]\ncandidates = ["ordinal+svm"]\n',
            "or a baseline '<encoder>+<estimator>' such as 'ordinal+lightgbm'",
        ),
        (
            "[downstream.knn]\nn_neighbor = 5\n",
            "config key 'downstream.knn.n_neighbor': not a parameter of the knn "
            "estimator; did you mean 'n_neighbors'?",
        ),
        ('[downstream]\nbaselines = ["foo+knn"]\n', "baseline 'foo+knn' is not '<encoder>+<estimator>'"),
        ('[train]\nmonitor = "aucc"\n', "config key 'train.monitor' must be 'log_loss', 'auc'"),
        ("[net]\nemb_init_std = inf\n", "config key 'net.emb_init_std' must be a finite number (got inf)"),
        ("[net]\nemb_init_std = 0.0\n", "config key 'net.emb_init_std' must be greater than 0 (got 0.0)"),
        (
            "[net]\ndropout = 2.0\n",
            "config key 'net.dropout': a dropout probability must be at least 0 and below 1 (got 2.0); "
            "e.g. dropout = 0.1",
        ),
        ("[net]\ndropout = [0.1, -0.5]\n", "config key 'net.dropout': a dropout probability must be"),
        ("[net]\ndropout = nan\n", "config key 'net.dropout': a dropout probability must be"),
        (
            "[train]\nmoms = [2, 3]\n",
            "config key 'train.moms': both momentums (Adam's beta1 at the start/end and in the middle of "
            "the one-cycle) must be at least 0 and below 1 (got [2.0, 3.0]); e.g. moms = [0.95, 0.85]",
        ),
        (
            '[train]\ndevice = "gpu"\n',
            "config key 'train.device': 'gpu' is not a device; use 'auto' (a GPU when there is one), "
            "'cpu', 'cuda', 'cuda:N' or 'mps'",
        ),
        ('[train]\ndevice = "cuda:x"\n', "config key 'train.device': 'cuda:x' is not a device"),
    ],
)
def test_messages_name_the_key_and_the_fix(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path / "c.toml", text))


def test_several_problems_are_listed_together(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path / "c.toml", "[train]\nbatch = 3\n[net]\nlayers = 'a'\n"))
    msg = str(info.value)
    assert "did you mean 'train.batch_size'" in msg and "config key 'net.layers' must be a list" in msg


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(write(tmp_path / "bad.toml", "[train\nepochs = 2"))
    with pytest.raises(ConfigError, match=re.escape("is not 'section.key=value'")):
        load_config(None, ["train.epochs"])


# ---- bad configs through the CLI: exit 2, a clear message, nothing registered ----------------------
@pytest.fixture
def csv_data(tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], n),
            "size": rng.normal(size=n),
            "label": rng.integers(0, 2, n),
        }
    )
    frame.to_csv(tmp_path / "data.csv", index=False)
    return tmp_path / "data.csv"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepoch = 2\n", "did you mean 'train.epochs'?"),
        ('[train]\nepochs = "two"\n', "config key 'train.epochs' must be an integer"),
        (
            '[data]\nsource = "data.csv"\ntarget = "labl"\n',
            "config key 'data.target' is 'labl' but {data} has no such column; did you mean 'label'?",
        ),
        ('[data]\nsource = "garbage.parquet"\ntarget = "label"\n', "cannot read {garbage} as parquet"),
        ('[data]\nsource = "missing.csv"\ntarget = "label"\n', "data file {missing} does not exist"),
        (
            '[data]\nsource = "data.csv"\ntarget = "label"\ncategorical = ["colour"]\n',
            "column 'colour' is listed as categorical but is not in the data",
        ),
        (
            '[data]\nsource = "data.csv"\ntarget = "label"\n[register]\nselect_by = "valid_rmse"\n',
            "config key 'register.select_by' is 'valid_rmse' but the task is binary",
        ),
    ],
)
def test_bad_config_fails_before_any_run(mlflow_tmp, tmp_path, csv_data, capsys, text, message):
    (tmp_path / "garbage.parquet").write_bytes(b"not a parquet file at all")
    config = write(tmp_path / "bad.toml", text)
    message = message.format(
        data=str(csv_data),
        garbage=repr(str(tmp_path / "garbage.parquet")),
        missing=repr(str(tmp_path / "missing.csv")),
    )
    assert cli.main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow call was made at all
    assert no_registered_model(mlflow_tmp)


def test_downstream_and_register_refuse_unknown_runs(mlflow_tmp, tmp_path, csv_data, capsys):
    config = write(tmp_path / "c.toml", '[data]\nsource = "data.csv"\ntarget = "label"\n')
    assert cli.main(["downstream", "--config", str(config), "--train-run", "0" * 32]) == 2
    assert "no MLflow run" in capsys.readouterr().err
    assert cli.main(["register", "--config", str(config), "--train-run", "0" * 32]) == 2
    assert "no MLflow run" in capsys.readouterr().err
    assert no_registered_model(mlflow_tmp)


# ---- commands provided elsewhere -------------------------------------------------------------------
def test_serve_dispatches_lazily(monkeypatch):
    seen = {}
    fake = types.ModuleType("service.cli")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "service.cli", fake)
    assert cli.main(["serve", "--port", "8080"]) == 0
    assert seen["argv"] == ["--port", "8080"]


def test_missing_external_command_says_so(monkeypatch, capsys):
    monkeypatch.setitem(cli.EXTERNAL, "serve", ("embedkit_no_such_module.cli", "main", "the service"))
    assert cli.main(["serve"]) == 2
    assert "`embedkit serve` (the service) is not available" in capsys.readouterr().err


def test_register_warns_when_a_train_run_has_no_downstream_run(monkeypatch, caplog):
    from pipelines import register, tracking

    monkeypatch.setattr(tracking, "downstream_runs_of", lambda run_id: [])
    with caplog.at_level("WARNING", logger="pipelines"):
        assert register.find_downstream_run("abc123") is None
    assert "no finished downstream run of train run abc123: the net is the only candidate" in caplog.text


def test_register_candidates_accept_all_and_baselines():
    from pipelines.config import load_config

    assert load_config(None).register.candidates == ["all"]
    cfg = load_config(None, ['register.candidates=["net", "ordinal+lightgbm"]'])
    assert cfg.register.candidates == ["net", "ordinal+lightgbm"]
    with pytest.raises(ConfigError, match="baseline '<encoder>\\+<estimator>'"):
        load_config(None, ['register.candidates=["ordinal+svm"]'])


def test_train_threads_flag_sets_the_training_threads(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[data]\nsource = "example"\nn_rows = 100\n')
    args = cli._parser().parse_args(["train", "--config", str(cfg_file), "--threads", "3"])
    cfg = cli._config(args)
    assert cfg.train.threads == 3
    from pipelines.train import train_config

    assert train_config(cfg, None).threads == 3
    with pytest.raises(ConfigError, match="train.threads"):
        load_config(None, ["train.threads=0"])


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7"])
def test_a_cuda_device_needs_a_cuda_gpu(tmp_path, device):
    import torch

    if torch.cuda.is_available() and device != "cuda:7":
        assert load_config(None, [f'train.device="{device}"']).train.device == device
        return
    with pytest.raises(ConfigError, match=re.escape(f"config key 'train.device': '{device}' was asked for")):
        load_config(None, [f'train.device="{device}"'])


@pytest.mark.parametrize("ok", ['train.device="auto"', 'train.device="cpu"', "net.dropout=[0.0, 0.5]"])
def test_good_values_pass(ok):
    load_config(None, [ok, "train.moms=[0.9, 0.0]"])


def test_train_without_config_or_resume_is_refused(capsys):
    from pipelines import cli

    assert cli.main(["train"]) == 2
    err = capsys.readouterr().err
    assert "error: embedkit train needs --config FILE" in err and "--resume RUN_ID" in err
    assert cli.main(["train", "--set", "train.epochs=1"]) == 2
