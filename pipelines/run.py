"""The ``run`` step: train → downstream → register, as three child runs of one parent run, linked by tags.

The data is read and checked once, before the parent run exists, so a bad config leaves no run behind.

Run: ``embedkit run --config FILE`` or ``python -m pipelines.run --config FILE``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from . import tracking
from .config import PipelineConfig
from .downstream import DownstreamResult, downstream
from .register import RegisterResult, register
from .sources import Dataset, load_data
from .train import TrainResult, train


@dataclass
class RunResult:
    run_id: str
    train: TrainResult
    downstream: DownstreamResult
    register: RegisterResult


def run(cfg: PipelineConfig, data: Dataset | None = None) -> RunResult:
    data = data if data is not None else load_data(cfg)
    with tracking.step_run(
        "run",
        experiment=cfg.tracking.experiment,
        run_name="pipeline",
        tags={"embedkit.data_source": data.source},
    ) as run_id:
        tracking.log_dict(cfg.to_dict(), "config.json")
        t = train(cfg, data)
        tracking.set_tags({tracking.TAG_TRAIN_RUN: t.run_id})
        d = downstream(cfg, data, train_run_id=t.run_id)
        tracking.set_tags({tracking.TAG_DOWNSTREAM_RUN: d.run_id})
        r = register(cfg, data, train_run_id=t.run_id, downstream_run_id=d.run_id)
        tracking.set_tags(
            {
                tracking.TAG_REGISTER_RUN: r.run_id,
                "embedkit.model_uri": r.model_uri,
                "embedkit.registered_version": r.version,
                "embedkit.chosen": r.chosen.name,
            }
        )
        # the train run learns where its tables went and which model won
        tracking.set_tags(
            {tracking.TAG_DOWNSTREAM_RUN: d.run_id, tracking.TAG_REGISTER_RUN: r.run_id}, run_id=t.run_id
        )
    return RunResult(run_id, t, d, r)


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
