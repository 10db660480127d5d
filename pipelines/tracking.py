"""Every MLflow call of the pipelines goes through this module (``pyfunc_model.py`` aside).

- :func:`configure`: the tracking URI: ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<cwd>/mlflow.db``
  (MLflow's own default store, made explicit), whose artifacts go to ``./mlruns``.
- :func:`step_run`: a run as a context manager that ends ``FINISHED``, ``FAILED`` or, on Ctrl-C/SIGTERM,
  ``KILLED``; reopening a run id continues it.
- :class:`EpochLogger`: the trainer callback that logs each epoch's metrics (``step`` = epoch number);
  :class:`LRFinderLogger` logs the LR finder's sweep and the rate used.
- logging helpers (params, metrics, tags, figures, artifacts), look-ups (runs, metric histories, artifacts)
  and the registry (a pyfunc model registered under a name with an alias and tags).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from embedkit.nn.callbacks import Callback

if TYPE_CHECKING:
    from embedkit.nn.lr_finder import LRFinderResult
    from embedkit.nn.trainer import Trainer

log = logging.getLogger("pipelines")

DEFAULT_DB = "mlflow.db"
#: MLflow's limit on one param value's length; longer values are cut (the full config is an artifact).
_MAX_PARAM_LEN = 6000

TAG_STEP = "embedkit.step"
TAG_PARENT = "embedkit.parent_run_id"
TAG_TRAIN_RUN = "embedkit.train_run_id"
TAG_DOWNSTREAM_RUN = "embedkit.downstream_run_id"
TAG_REGISTER_RUN = "embedkit.register_run_id"
TAG_CANDIDATE = "embedkit.candidate"


class TrackingError(RuntimeError):
    """A run, artifact or registered model the pipeline needs is not there."""


# ---- set-up ----------------------------------------------------------------------------------------
def configure() -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI``, or at ``./mlflow.db`` when it is unset; returns the URI."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"
    mlflow.set_tracking_uri(uri)
    return uri


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on ``uri``."""
    if uri.startswith("sqlite:///") and Path(uri[len("sqlite:///") :]) == Path.cwd() / DEFAULT_DB:
        uri = f"sqlite:///{DEFAULT_DB}"
    return f"mlflow ui --backend-store-uri {uri}"


# ---- runs ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def step_run(
    step: str,
    *,
    experiment: str,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[str]:
    """Start (or, with ``run_id``, reopen) a run; nested under the active run when there is one.

    Yields the run id. The run ends ``FINISHED``; ``KILLED`` on ``KeyboardInterrupt`` (Ctrl-C, and SIGTERM
    once the CLI has turned it into one); ``FAILED`` on any other exception (re-raised).
    """
    sync_tracking_uri()
    if run_id is None:
        mlflow.set_experiment(experiment)
    parent = mlflow.active_run()
    nested = parent is not None
    all_tags = {TAG_STEP: step, **(tags or {})}
    if parent is not None:
        all_tags[TAG_PARENT] = parent.info.run_id
    try:
        active = mlflow.start_run(
            run_id=run_id, run_name=run_name, nested=nested, tags=all_tags if run_id is None else None
        )
    except MlflowException as exc:
        raise TrackingError(f"cannot start the {step} run: {exc.message}") from None
    rid = active.info.run_id
    try:
        yield rid
    except KeyboardInterrupt:
        log.warning("%s run %s interrupted; marked KILLED", step, rid)
        _end(rid, "KILLED")
        raise
    except BaseException:
        _end(rid, "FAILED")
        raise
    else:
        _end(rid, "FINISHED")


def _end(run_id: str, status: str) -> None:
    # Ctrl-C may land while MLflow is between calls: make sure the status is written for *this* run
    # even when it is no longer the active one.
    with contextlib.suppress(KeyboardInterrupt):
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(status=status)
        else:
            MlflowClient().set_terminated(run_id, status=status)


def sync_tracking_uri() -> None:
    """Re-read the tracking URI unless a run is active (whose store must not change under it)."""
    if mlflow.active_run() is None:
        configure()


# ---- logging (to the active run) -------------------------------------------------------------------
def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys: ``{"train": {"epochs": 2}}`` -> ``{"train.epochs": 2}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def log_params(params: dict[str, Any]) -> None:
    """Log (flattened) params; values become strings cut to MLflow's limit."""
    flat = {k: ("None" if v is None else str(v))[:_MAX_PARAM_LEN] for k, v in flatten(params).items()}
    mlflow.log_params(flat)


def log_metrics(metrics: dict[str, Any], step: int | None = None) -> None:
    """Log the finite numeric values of ``metrics`` (others are skipped)."""
    clean = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if v == v and abs(v) != float("inf"):
            clean[k] = float(v)
    if clean:
        mlflow.log_metrics(clean, step=step)


def set_tags(tags: dict[str, Any], run_id: str | None = None) -> None:
    clean = {k: str(v) for k, v in tags.items() if v is not None}
    if run_id is None:
        mlflow.set_tags(clean)
    else:
        client = MlflowClient()
        for k, v in clean.items():
            client.set_tag(run_id, k, v)


def log_figure(fig: Any, artifact_file: str) -> None:
    """Log a matplotlib figure as a PNG (``artifact_file`` like ``plots/curves.png``) and close it."""
    try:
        mlflow.log_figure(fig, artifact_file, save_kwargs={"dpi": 100, "bbox_inches": "tight"})
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def log_artifacts(local_dir: str | Path, artifact_path: str) -> None:
    mlflow.log_artifacts(str(local_dir), artifact_path=artifact_path)


def log_artifact(local_file: str | Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(local_file), artifact_path=artifact_path)


def log_dict(obj: Any, artifact_file: str) -> None:
    mlflow.log_dict(obj, artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


class EpochLogger(Callback):
    """Logs each epoch's numeric logs to the active run with ``step`` = the epoch number (1-based), as
    ``epoch/<name>`` (``epoch/train_loss``, ``epoch/valid_auc``, ...). The final model's metrics are logged
    by the train step under plain names (``valid_auc``), comparable across runs.

    On a resumed run, epochs already in the checkpoint's history but missing from the run (the process
    stopped between the checkpoint and the log call) are logged first.
    """

    PREFIX = "epoch/"

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def on_train_begin(self, trainer: Trainer) -> None:
        done = set(logged_steps(self.run_id, f"{self.PREFIX}train_loss"))
        for logs in trainer.history.epochs:
            if int(logs["epoch"]) not in done:
                self._log(logs)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        self._log(logs)

    def _log(self, logs: dict[str, Any]) -> None:
        step = int(logs["epoch"])
        log_metrics({f"{self.PREFIX}{k}": v for k, v in logs.items() if k != "epoch"}, step=step)


class CheckpointLogger(Callback):
    """Logs each checkpoint file as the artifact ``checkpoints/checkpoint.pt`` of the active run."""

    def on_checkpoint(self, trainer: Trainer, path: str) -> None:
        log_artifact(path, "checkpoints")


class LRFinderLogger(Callback):
    """Logs the LR finder's sweep to the active run (``plots/lr_finder.png``, ``lr_finder.json``, the
    metric ``lr_suggestion``) and the peak rate the fit trains at (the param ``lr_used``)."""

    def on_lr_found(self, trainer: Trainer, lr: float, finder: LRFinderResult | None) -> None:
        if finder is not None:
            log_figure(finder.plot(), "plots/lr_finder.png")
            log_dict(finder.to_dict(), "lr_finder.json")
            log_metrics({"lr_suggestion": finder.suggestion})
        log_params({"lr_used": lr})
        source = "from the config" if trainer.config.lr is not None else "LR finder"
        log.info("learning rate %.3g (%s)", lr, source)


# ---- look-ups --------------------------------------------------------------------------------------
@dataclass
class RunInfo:
    run_id: str
    name: str
    status: str
    experiment_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def _info(run: Any) -> RunInfo:
    return RunInfo(
        run.info.run_id,
        run.info.run_name,
        run.info.status,
        run.info.experiment_id,
        dict(run.data.metrics),
        dict(run.data.params),
        dict(run.data.tags),
    )


def get_run(run_id: str) -> RunInfo:
    sync_tracking_uri()
    try:
        return _info(MlflowClient().get_run(run_id))
    except MlflowException as exc:
        raise TrackingError(
            f"no MLflow run {run_id!r} in {mlflow.get_tracking_uri()}: {exc.message}"
        ) from None


def child_runs(parent_run_id: str) -> list[RunInfo]:
    """The runs nested directly under ``parent_run_id``, oldest first."""
    parent = get_run(parent_run_id)
    runs = MlflowClient().search_runs(
        [parent.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=1000,
    )
    return [_info(r) for r in runs]


def downstream_runs_of(train_run_id: str) -> list[RunInfo]:
    """The FINISHED downstream runs made from ``train_run_id``'s tables, newest first."""
    train = get_run(train_run_id)
    runs = MlflowClient().search_runs(
        [train.experiment_id],
        filter_string=(
            f"tags.`{TAG_STEP}` = 'downstream' and tags.`{TAG_TRAIN_RUN}` = '{train_run_id}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=100,
    )
    return [_info(r) for r in runs]


def logged_steps(run_id: str, key: str) -> list[int]:
    return [m.step for m in MlflowClient().get_metric_history(run_id, key)]


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key)]


def list_artifacts(run_id: str, path: str | None = None) -> list[str]:
    return [a.path for a in MlflowClient().list_artifacts(run_id, path)]


def download_artifacts(run_id: str, artifact_path: str, dst_dir: str | Path) -> Path:
    """Download a run's artifact (file or folder) into ``dst_dir``; the caller owns (and removes) it."""
    sync_tracking_uri()
    # no "Downloading artifacts" bars in logs (score, resume, downstream); an explicit setting wins
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
        )
    except (MlflowException, OSError) as exc:
        raise TrackingError(f"run {run_id} has no artifact {artifact_path!r}: {exc}") from None
    return Path(local)


# ---- registry --------------------------------------------------------------------------------------
@dataclass
class RegisteredModel:
    name: str
    version: str
    alias: str
    model_uri: str  # the logged model (runs:/ or models:/<id>)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def registered_versions(name: str) -> list[str]:
    """Versions of the registered model ``name`` (empty when it does not exist)."""
    sync_tracking_uri()
    try:
        return [v.version for v in MlflowClient().search_model_versions(f"name = '{name}'")]
    except MlflowException:
        return []


def log_and_register_pyfunc(
    *,
    python_model: str | Path,
    artifacts: dict[str, str],
    name: str,
    alias: str,
    signature: Any,
    input_example: Any,
    pip_requirements: list[str],
    version_tags: dict[str, Any] | None = None,
    model_name: str = "model",
) -> RegisteredModel:
    """Log a models-from-code pyfunc model in the active run, register it as a new version of ``name``,
    tag the version and point ``alias`` at it."""
    import mlflow.pyfunc

    with _quiet_integer_hint():
        info = mlflow.pyfunc.log_model(
            name=model_name,
            python_model=str(python_model),
            artifacts=artifacts,
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements,
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for k, v in (version_tags or {}).items():
        if v is not None:
            client.set_model_version_tag(name, version, k, str(v))
    client.set_registered_model_alias(name, alias, version)
    return RegisteredModel(name, version, alias, info.model_uri)


def load_pyfunc(model_uri: str) -> Any:
    """Load a pyfunc model (``models:/NAME@ALIAS``, ``runs:/...``)."""
    import mlflow.pyfunc

    sync_tracking_uri()
    return mlflow.pyfunc.load_model(model_uri)


def spark_udf(spark: Any, model_uri: str, result_type: Any) -> Any:
    """MLflow's Spark UDF over a pyfunc model, run in the executors' own Python (``env_manager="local"``).
    The model is downloaded on the driver and shipped to the executors, which need no tracking server."""
    import mlflow.pyfunc

    sync_tracking_uri()
    return mlflow.pyfunc.spark_udf(spark, model_uri, result_type=result_type, env_manager="local")


def infer_signature(model_input: Any, model_output: Any) -> Any:
    from mlflow.models import infer_signature as _infer

    with _quiet_integer_hint():
        return _infer(model_input, model_output)


@contextlib.contextmanager
def _quiet_integer_hint() -> Iterator[None]:
    # MLflow hints that integer columns cannot hold NaN; declaring them double instead would make MLflow
    # refuse every int64 request ("can not safely convert"), so the hint is known and not actionable here
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Hint: Inferred schema contains integer column")
        yield
