"""The ``train`` step: data → preprocessor → LR finder → training → model bundle + embedding tables.

One MLflow run records the resolved config (params), per-epoch metrics (``epoch/*``, step = epoch), the final
model's validation metrics (``valid_*``), plots, the bundle and the tables. Checkpoints are written to
``<tracking.run_dir>/<run_id>/checkpoints`` every epoch and logged; ``--resume RUN_ID`` continues an
interrupted run from its last checkpoint, in the same MLflow run.

Run: ``embedkit train --config FILE`` or ``python -m pipelines.train --config FILE``.

Distributed (DistributedDataParallel, gloo on CPUs, NCCL on GPUs): ``embedkit train --nproc N --config FILE``
or ``torchrun --nproc-per-node N -m pipelines.train --config FILE``. Every process reads the data; rank 0
fits the preprocessor and runs the LR finder (see :mod:`embedkit.nn.distributed`), and rank 0 alone talks to
MLflow and writes the checkpoints, the bundle and the tables. The other ranks never call MLflow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedkit.nn import distributed
from embedkit.nn.callbacks import Callback, ProgressBar
from embedkit.nn.learner import Learner, fit_net
from embedkit.nn.model import NetConfig
from embedkit.nn.trainer import CHECKPOINT_NAME, TrainConfig

from . import plots, tracking
from .config import ConfigError, PipelineConfig
from .sources import Dataset, load_data

log = logging.getLogger("pipelines")

CONFIG_ARTIFACT = "config.json"
TAG_RUN_DIR = "embedkit.run_dir"
TAG_FINGERPRINT = "embedkit.data_fingerprint"
TAG_TASK = "embedkit.task"


@dataclass
class TrainResult:
    run_id: str
    metrics: dict[str, float]
    run_dir: Path
    epochs: int  # epochs in the history (a resumed run counts those before the interruption too)

    @property
    def bundle_path(self) -> Path:
        return self.run_dir / "bundle"

    @property
    def tables_path(self) -> Path:
        return self.run_dir / "tables"


def net_config(cfg: PipelineConfig) -> NetConfig:
    """The config's [net] overrides on embkit's defaults (task and output size are set from the data)."""
    d = cfg.net.model_dump(exclude_none=True)
    if "y_range" in d:
        d["y_range"] = tuple(d["y_range"])
    return NetConfig(**d)


def train_config(cfg: PipelineConfig, checkpoint_dir: Path | None) -> TrainConfig:
    return TrainConfig(
        **cfg.train.overrides(), checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None
    )


def default_callbacks(cfg: PipelineConfig, run_id: str) -> list[Callback]:
    """A progress bar on stderr; to MLflow: the LR finder's sweep and the rate used, per-epoch metrics, and
    (when configured) the checkpoints."""
    cbs: list[Callback] = [ProgressBar(), tracking.LRFinderLogger(), tracking.EpochLogger(run_id)]
    if cfg.tracking.log_checkpoints:
        cbs.append(tracking.CheckpointLogger())
    return cbs


def resolved_params(cfg: PipelineConfig, learn: Learner, data: Dataset) -> dict[str, Any]:
    """The whole config with embedkit's defaults filled in (what the net and trainer really used)."""
    d = cfg.to_dict()
    net = learn.model.config.to_dict()
    net["emb_dims"] = dict(zip(learn.model.cat_names, learn.model.emb_dims, strict=True))
    d["net"] = net
    train = learn.train_config.to_dict()
    train.pop("checkpoint_dir", None)
    d["train"] = {**train, "lr_find": cfg.train.lr_find.model_dump()}
    d["data"] = {**d["data"], **{k: v for k, v in data.describe().items() if k != "fingerprint"}}
    return d


def train(
    cfg: PipelineConfig,
    data: Dataset | None = None,
    *,
    resume: str | None = None,
    callbacks: list[Callback] | None = None,
) -> TrainResult:
    """Run the train step (nested under the active run, if any); ``resume`` continues that run id.

    ``callbacks`` are added to :func:`default_callbacks`. Under torchrun (``WORLD_SIZE`` > 1) every process
    calls this: it joins the process group (and leaves it at the end, unless the caller set it up); the
    callbacks run on rank 0 only, and on the other ranks the result has no metrics.
    """
    with distributed.process_group(device=cfg.train.device or "auto"):
        return _train(cfg, data, resume, callbacks)


def _train(
    cfg: PipelineConfig, data: Dataset | None, resume: str | None, callbacks: list[Callback] | None
) -> TrainResult:
    main = distributed.is_main()
    if resume is not None:
        # the run's config and data fingerprint live in MLflow, which only rank 0 reads
        cfg_dict, expected = distributed.run_on_main(lambda: _resume_info(resume))
        cfg = PipelineConfig.from_dict(cfg_dict)
        data = data if data is not None else load_data(cfg)
        _check_fingerprint(resume, data, expected)
    data = data if data is not None else load_data(cfg)
    tags = {TAG_TASK: data.task, TAG_FINGERPRINT: data.fingerprint, "embedkit.data_source": data.source}
    with contextlib.ExitStack() as stack:

        def start_run() -> tuple[str, str]:
            rid = stack.enter_context(
                tracking.step_run(
                    "train", experiment=cfg.tracking.experiment, run_name="train", run_id=resume, tags=tags
                )
            )
            return rid, str(_run_dir(cfg, rid, resume))

        # rank 0 opens the MLflow run; every rank learns its id and local directory
        run_id, run_path = distributed.run_on_main(start_run)
        run_dir = Path(run_path)
        checkpoint: Path | None = None
        if resume is not None:
            found = distributed.run_on_main(lambda: _find_checkpoint(run_id, run_dir))
            # under DDP the trainer reads the file on rank 0 and hands its state to the other ranks
            checkpoint = Path(found) if found is not None else None
        tcfg = train_config(cfg, run_dir / "checkpoints")
        # progress, MLflow logging and the caller's callbacks: rank 0's business
        cbs = (default_callbacks(cfg, run_id) + list(callbacks or [])) if main else []
        if main and checkpoint is not None:
            log.info("resuming run %s from %s", run_id, checkpoint)
        elif main and resume is not None:
            log.warning("run %s stopped before its first checkpoint; training again from the start", run_id)

        def log_start(learn: Learner) -> None:
            """A new run's resolved config, before the LR finder and training."""
            tracking.set_tags({TAG_RUN_DIR: str(run_dir)})
            tracking.log_params(resolved_params(cfg, learn, data))
            tracking.log_dict(cfg.to_dict(), CONFIG_ARTIFACT)
            tracking.log_dict(data.describe(), "data.json")

        # the LR finder runs on a fresh start (its sweep logged by tracking.LRFinderLogger, the finder
        # cheap and its plot telling whether the rate is sane), even when train.lr sets the rate
        learn = fit_net(
            data.train,
            data.spec,
            valid=data.valid,
            task=data.task,
            net_config=net_config(cfg),
            train_config=tcfg,
            min_frequency=cfg.data.min_frequency,
            callbacks=cbs,
            lr_find=cfg.train.lr_find.model_dump(exclude_none=True),
            resume_from=checkpoint,
            on_start=log_start if main and resume is None else None,
        )
        history = learn.history
        metrics: dict[str, float] = {}
        if main:
            metrics = {f"valid_{k}": v for k, v in learn.evaluate(data.valid).items()}
            extra = {"epochs_run": len(history.epochs)}
            if history.best_epoch is not None:
                extra["best_epoch"] = history.best_epoch + 1
            tracking.log_metrics({**metrics, **extra})
            _save(cfg, learn, run_id, run_dir, metrics)
            log.info("train run %s: %s", run_id, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return TrainResult(run_id, metrics, run_dir, len(history.epochs))


def _save(cfg: PipelineConfig, learn: Learner, run_id: str, run_dir: Path, metrics: dict[str, float]) -> None:
    bundle = learn.save(
        run_dir / "bundle",
        metrics=metrics,
        source=run_id,
        extra={"mlflow_run_id": run_id, "pipeline_config": cfg.to_dict()},
    )
    tables = learn.export_tables(run_dir / "tables", source=run_id)
    tracking.log_artifacts(bundle, "bundle")
    tracking.log_artifacts(tables, "tables")
    tracking.log_dict(learn.history.to_dict(), "history.json")
    tracking.log_figure(plots.curves_figure(learn.history.epochs), "plots/curves.png")
    emb = learn.embedding_tables()
    if len(emb):
        widest = plots.widest_table(emb)
        tracking.log_figure(plots.projection_figure(widest), f"plots/embeddings_{widest.name}.png")


def _run_dir(cfg: PipelineConfig, run_id: str, resume: str | None) -> Path:
    if resume is not None:
        tagged = tracking.get_run(run_id).tags.get(TAG_RUN_DIR)
        if tagged:
            return Path(tagged)
    return (Path(cfg.tracking.run_dir) / run_id).resolve()


def _find_checkpoint(run_id: str, run_dir: Path) -> Path | None:
    """The local checkpoint of the run, else its logged artifact (downloaded into the run dir)."""
    local = run_dir / "checkpoints" / CHECKPOINT_NAME
    if local.exists():
        return local
    if f"checkpoints/{CHECKPOINT_NAME}" in tracking.list_artifacts(run_id, "checkpoints"):
        # the artifact path is kept under the destination: this lands on run_dir/checkpoints/checkpoint.pt
        path = tracking.download_artifacts(run_id, f"checkpoints/{CHECKPOINT_NAME}", run_dir)
        log.info("downloaded the checkpoint of run %s to %s", run_id, path)
        return path
    return None


def _resume_info(run_id: str) -> tuple[dict[str, Any], str | None]:
    """The config of an unfinished train run and its data fingerprint (checked: a train run, not FINISHED)."""
    info = tracking.get_run(run_id)
    if info.tags.get(tracking.TAG_STEP) != "train":
        raise ConfigError(
            f"run {run_id} is not a train run (step {info.tags.get(tracking.TAG_STEP)!r}); "
            "--resume takes the id of an interrupted train run"
        )
    if info.status == "FINISHED":
        raise ConfigError(f"train run {run_id} already FINISHED; there is nothing to resume")
    with tempfile.TemporaryDirectory(prefix="embedkit-resume-") as tmp:
        config = json.loads(tracking.download_artifacts(run_id, CONFIG_ARTIFACT, tmp).read_text())
    return config, info.tags.get(TAG_FINGERPRINT)


def _check_fingerprint(run_id: str, data: Dataset, expected: str | None) -> None:
    if expected and expected != data.fingerprint:
        raise ConfigError(
            f"the data of run {run_id} changed since it started (fingerprint {data.fingerprint}, "
            f"run has {expected}); start a new run instead of resuming"
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.train [--config FILE] [--set KEY=VALUE ...] [--resume RUN_ID] [--json]``: the
    ``embedkit train`` command, and what each process that torchrun starts runs."""
    from .cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
