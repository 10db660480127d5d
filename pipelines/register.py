"""The ``register`` step: pick the best candidate by ``register.select_by`` and register it as a pyfunc model.

Candidates are the net of a train run and every model of a downstream run: the models on the embeddings and
the baselines (ordinal, one-hot or target encoding), so that the registered model is the best one by the
metric, whether or not it uses the embeddings (``register.candidates`` narrows the choice). Without a
downstream run id the newest FINISHED downstream run of the train run is used, and with none a warning says
that the net is the only candidate.
The chosen model is packaged as a servable (``embedkit.servable``), logged with MLflow's models-from-code
(``pipelines/pyfunc_model.py``, no pickle) with a signature and an input example, registered as a new version
of ``register.name``, tagged (servable kind, source runs) and pointed to by ``register.alias``. Every check
runs before anything is registered.

Run: ``embedkit register --config FILE --train-run RUN_ID [--downstream-run RUN_ID]``.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd

from embedkit.exceptions import FormatError

from . import tracking
from .config import ALL_CANDIDATES, NET, ConfigError, PipelineConfig
from .downstream import TAG_MODEL
from .sources import Dataset, load_data

log = logging.getLogger("pipelines")

PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
INPUT_EXAMPLE_ROWS = 5
_BASE_REQUIREMENTS = ("mlflow", "numpy", "pandas", "pyarrow", "scikit-learn")
_KIND_REQUIREMENTS = {
    "net": ("torch", "safetensors"),
    "pipeline": ("lightgbm", "skops"),
    "baseline": ("lightgbm", "skops"),
}


@dataclass
class Candidate:
    name: str  # "net", "lightgbm", ...
    run_id: str
    score: float | None


@dataclass
class RegisterResult:
    run_id: str
    name: str
    version: str
    alias: str
    chosen: Candidate
    candidates: list[Candidate]

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def candidates(cfg: PipelineConfig, train_run_id: str, downstream_run_id: str | None) -> list[Candidate]:
    """The configured candidates found in the runs, with their ``select_by`` metric (None when not logged)."""
    metric = cfg.register.select_by
    wanted = set(cfg.register.candidates)
    everything = ALL_CANDIDATES in wanted
    found: list[Candidate] = []
    if everything or NET in wanted:
        train = tracking.get_run(train_run_id)
        if train.tags.get(tracking.TAG_STEP) != "train" or train.status != "FINISHED":
            raise ConfigError(
                f"run {train_run_id} is not a FINISHED train run (step "
                f"{train.tags.get(tracking.TAG_STEP)!r}, status {train.status})"
            )
        found.append(Candidate(NET, train_run_id, train.metrics.get(metric)))
    if downstream_run_id is not None:
        for child in tracking.child_runs(downstream_run_id):
            name = child.tags.get(TAG_MODEL)
            if (
                name is not None
                and child.tags.get(tracking.TAG_CANDIDATE) == "true"
                and (everything or name in wanted)
                and child.status == "FINISHED"
            ):
                found.append(Candidate(name, child.run_id, child.metrics.get(metric)))
    return found


def find_downstream_run(train_run_id: str) -> str | None:
    """The newest FINISHED downstream run of ``train_run_id`` (logged), or None with a warning: then the net
    is the only candidate, whatever a downstream run would have shown."""
    runs = tracking.downstream_runs_of(train_run_id)
    if not runs:
        log.warning(
            "no finished downstream run of train run %s: the net is the only candidate. Run "
            "'embedkit downstream --train-run %s' first to compare it with the downstream models and "
            "baselines",
            train_run_id,
            train_run_id,
        )
        return None
    if len(runs) > 1:
        log.info("train run %s has %d downstream runs; using the newest", train_run_id, len(runs))
    log.info("candidates from downstream run %s (the newest of train run %s)", runs[0].run_id, train_run_id)
    return runs[0].run_id


def choose(cands: list[Candidate], metric: str, mode: str) -> Candidate:
    scored = [c for c in cands if c.score is not None and math.isfinite(c.score)]
    if not scored:
        names = [c.name for c in cands] or "none"
        raise ConfigError(
            f"no candidate has the metric {metric!r} (candidates: {names}); check "
            "register.select_by and register.candidates"
        )
    pick = max if mode == "max" else min
    return pick(scored, key=lambda c: c.score)  # type: ignore[arg-type, return-value]


def input_example(data: Dataset, columns: list[str]) -> pd.DataFrame:
    """The first validation rows. Integer columns stay int64 in the signature: MLflow refuses to cast
    int64 requests to float64, so declaring them double (to allow NaN) would reject every normal request."""
    return data.valid[columns].head(INPUT_EXAMPLE_ROWS).reset_index(drop=True)


def pip_requirements(kind: str) -> list[str]:
    """The installed versions of what loading the model imports. embedkit itself is not listed (it is not
    on PyPI) and not copied into the model: serve with ``--env-manager local`` where embedkit is installed,
    so that the installed code reads the servable (whose format version it checks)."""
    reqs = []
    for dist in (*_BASE_REQUIREMENTS, *_KIND_REQUIREMENTS.get(kind, ())):
        try:
            reqs.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def register(
    cfg: PipelineConfig,
    data: Dataset | None = None,
    *,
    train_run_id: str,
    downstream_run_id: str | None = None,
) -> RegisterResult:
    """Choose, package, check, then log + register + alias (nested under the active run, if any)."""
    from embedkit.servable import load_servable

    from .pyfunc_model import predictions_frame

    data = data if data is not None else load_data(cfg)
    rc = cfg.register
    if downstream_run_id is None:
        downstream_run_id = find_downstream_run(train_run_id)
    cands = candidates(cfg, train_run_id, downstream_run_id)
    chosen = choose(cands, rc.select_by, rc.resolved_mode)
    log.info(
        "candidates by %s (%s): %s; chosen: %s",
        rc.select_by,
        rc.resolved_mode,
        ", ".join(f"{c.name} {c.score}" for c in cands),
        chosen.name,
    )
    with tempfile.TemporaryDirectory(prefix="embedkit-register-") as tmp:
        servable_dir = _servable(chosen, Path(tmp), rc.name)
        try:
            servable = load_servable(servable_dir)
        except FormatError as exc:
            raise ConfigError(
                f"the {chosen.name} model of run {chosen.run_id} cannot be served: {exc}"
            ) from None
        example = input_example(data, servable.feature_columns)
        signature = tracking.infer_signature(example, predictions_frame(servable, example))
        tags = {tracking.TAG_TRAIN_RUN: train_run_id, tracking.TAG_DOWNSTREAM_RUN: downstream_run_id}
        with tracking.step_run(
            "register",
            experiment=cfg.tracking.experiment,
            run_name="register",
            tags={k: v for k, v in tags.items() if v},
        ) as run_id:
            tracking.log_params(
                {
                    "name": rc.name,
                    "alias": rc.alias,
                    "select_by": rc.select_by,
                    "mode": rc.resolved_mode,
                    "chosen": chosen.name,
                    "chosen_run_id": chosen.run_id,
                }
            )
            tracking.log_dict(
                {
                    "select_by": rc.select_by,
                    "mode": rc.resolved_mode,
                    "chosen": chosen.name,
                    "candidates": [c.__dict__ for c in cands],
                },
                "candidates.json",
            )
            tracking.log_metrics({rc.select_by: chosen.score})
            reg = tracking.log_and_register_pyfunc(
                python_model=PYFUNC_FILE,
                artifacts={"servable": str(servable_dir)},
                name=rc.name,
                alias=rc.alias,
                signature=signature,
                input_example=example,
                pip_requirements=pip_requirements(servable.kind),
                version_tags={
                    "embedkit.servable_kind": servable.kind,
                    "embedkit.nn.model": chosen.name,
                    "embedkit.source_run_id": chosen.run_id,
                    tracking.TAG_TRAIN_RUN: train_run_id,
                    tracking.TAG_DOWNSTREAM_RUN: downstream_run_id,
                    tracking.TAG_REGISTER_RUN: run_id,
                    "embedkit.task": servable.task,
                    rc.select_by: chosen.score,
                },
            )
            tracking.set_tags(
                {
                    "embedkit.registered_model": rc.name,
                    "embedkit.registered_version": reg.version,
                    "embedkit.model_uri": reg.uri,
                }
            )
    log.info("registered %s version %s as %s", rc.name, reg.version, reg.uri)
    return RegisterResult(run_id, rc.name, reg.version, rc.alias, chosen, cands)


def _servable(chosen: Candidate, tmp: Path, name: str) -> Path:
    """The chosen model as a servable directory: built from the train run's bundle for the net, the
    downstream run's ``servable/`` artifact otherwise."""
    from embedkit.servable import save_net_servable

    if chosen.name == NET:
        bundle = tracking.download_artifacts(chosen.run_id, "bundle", tmp / "download")
        metrics = {k: v for k, v in tracking.get_run(chosen.run_id).metrics.items() if k.startswith("valid_")}
        path = save_net_servable(tmp / "servable", bundle, name=name, metrics=metrics)
        shutil.rmtree(tmp / "download", ignore_errors=True)
        return path
    return tracking.download_artifacts(chosen.run_id, "servable", tmp / "download")


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["register", *sys.argv[1:]]))
