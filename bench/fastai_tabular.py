"""fastai's ``tabular_learner`` on a prepared train/valid split: the other side of
``bench/train.py --versus-fastai``.

Runs in fastai's own environment (fastai is not a dependency of embedkit; ``make fastai-env`` builds
one), so it imports nothing from embedkit. ``bench/train.py`` writes the split it trains on as two
Parquet files and a JSON description, runs this script with that environment's Python, and reads the
JSON this script prints on its last line.

What it runs is the course's recipe as a fastai user writes it: ``TabularDataLoaders.from_df`` with
``Categorify``, ``FillMissing`` and ``Normalize``, ``tabular_learner`` with the given layers (fastai's
own defaults otherwise: its embedding widths ``min(600, round(1.6 * n ** 0.56))``, no dropout, batch
norm), ``lr_find`` (valley), then ``fit_one_cycle(epochs)``. Rows/s counts the training phase of each
epoch only (``before_train`` to ``after_train``, the same span as embedkit's trainer measures);
validation AUC is computed from fastai's predictions of the validation rows after every epoch.

With ``--lockstep`` the run takes turns with another process epoch by epoch: before each epoch of the
fit it prints ``READY`` and waits for a line on its standard input, and after the epoch (validation
included) it prints ``DONE``; after the fit it prints ``FINISHED`` and waits once more, so that its
exit does not overlap the other side's last epoch. ``bench/train.py`` uses this to alternate fastai's epochs with the
trainer's, so that each pair of epochs runs seconds apart on a host whose speed drifts over minutes.

Usage (normally through bench/train.py)::

    .venv-fastai/bin/python bench/fastai_tabular.py --spec split/spec.json [--lockstep]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.tabular.all import (
    Categorify,
    CategoryBlock,
    FillMissing,
    Normalize,
    TabularDataLoaders,
    tabular_learner,
)
from sklearn.metrics import roc_auc_score


class EpochClock(Callback):
    """Seconds and rows of each epoch's training phase, and the validation AUC after it (from the
    outputs fastai's own validation pass computes)."""

    order = 100  # after fastai's own callbacks (the Recorder is 50)

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def before_train(self) -> None:
        self._n = 0
        self._t0 = time.perf_counter()

    def after_batch(self) -> None:
        if self.training:
            self._n += len(self.yb[0])
        else:
            self._preds.append(torch.softmax(self.pred.float(), dim=1)[:, 1].detach())
            self._targs.append(self.yb[0].detach().view(-1))

    def after_train(self) -> None:
        self._seconds = time.perf_counter() - self._t0

    def before_validate(self) -> None:
        self._preds: list[torch.Tensor] = []
        self._targs: list[torch.Tensor] = []

    def after_validate(self) -> None:
        # fastai calls after_validate even when validation was cancelled before before_validate ran
        # (its LR finder does that): read this callback's own state, not fastai's attribute fallback
        preds, targs = self.__dict__.pop("_preds", None), self.__dict__.pop("_targs", None)
        seconds = self.__dict__.pop("_seconds", None)
        if not preds or seconds is None:  # the LR finder's run: no epoch to record
            return
        auc = roc_auc_score(torch.cat(targs).numpy(), torch.cat(preds).numpy())
        self.rows.append(
            {
                "epoch": len(self.rows) + 1,
                "seconds": seconds,
                "rows": self._n,
                "rows_per_s": self._n / seconds,
                "valid_auc": float(auc),
            }
        )


class LockStep(Callback):
    """Take turns with the process on the other end of stdin/stdout, one epoch at a time."""

    def before_epoch(self) -> None:
        print("READY", flush=True)
        if not sys.stdin.readline():
            raise SystemExit("lock-step partner went away")

    def after_epoch(self) -> None:
        print("DONE", flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux from ``/proc/self/status`` (VmHWM): ``ru_maxrss``
    carries over fork and exec, so a child of a large process would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    # ru_maxrss: KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
        1024 if platform.system() == "Linux" else 2**20
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", type=Path, required=True, help="JSON written by bench/train.py")
    ap.add_argument("--lockstep", action="store_true", help="alternate epochs with the caller (see above)")
    args = ap.parse_args(argv)
    spec = json.loads(args.spec.read_text())
    train = pd.read_parquet(spec["train"])
    valid = pd.read_parquet(spec["valid"])
    cat, cont, target = spec["categorical"], spec["continuous"], spec["target"]
    torch.manual_seed(spec["seed"])
    np.random.seed(spec["seed"])
    torch.set_num_threads(spec["threads"])

    frame = pd.concat([train, valid], ignore_index=True)
    # fastai's Categorify wants object or categorical columns; embedkit's frame holds ints and strings
    for c in cat:
        frame[c] = frame[c].astype("object")
    valid_idx = list(range(len(train), len(frame)))
    t0 = time.perf_counter()
    dls = TabularDataLoaders.from_df(
        frame,
        procs=[Categorify, FillMissing, Normalize],
        cat_names=cat,
        cont_names=cont,
        y_names=target,
        y_block=CategoryBlock(),
        valid_idx=valid_idx,
        bs=spec["batch_size"],
        num_workers=0,
    )
    prep_s = time.perf_counter() - t0
    kwargs = {}
    if spec.get("emb_szs"):
        kwargs["emb_szs"] = spec["emb_szs"]
    clock = EpochClock()
    learn = tabular_learner(dls, layers=spec["layers"], cbs=[clock], **kwargs)
    widths = {name: int(emb.embedding_dim) for name, emb in zip(cat, learn.model.embeds, strict=True)}
    with learn.no_bar(), learn.no_logging():
        t0 = time.perf_counter()
        lr = float(learn.lr_find(show_plot=False).valley)
        lr_find_s = time.perf_counter() - t0
        clock.rows.clear()
        t0 = time.perf_counter()
        learn.fit_one_cycle(spec["epochs"], lr, cbs=[LockStep()] if args.lockstep else None)
        fit_s = time.perf_counter() - t0
    if args.lockstep:
        print("FINISHED", flush=True)
        sys.stdin.readline()
    out = {
        "fastai": __import__("fastai").__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "lr_valley": lr,
        "prep_s": prep_s,
        "lr_find_s": lr_find_s,
        "fit_s": fit_s,
        "emb_widths": widths,
        "epochs": clock.rows,
        "peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
