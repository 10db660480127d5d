"""The learning-rate finder: an exponential sweep of the rate over mini-batches, watching the loss."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import distributed
from .trainer import Trainer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .tensors import TensorData


@dataclass
class LRFinderResult:
    """The sweep: rates, raw and smoothed losses, and suggested rates.

    ``suggestion`` is the ``minimum/10`` rate (a tenth of the rate at the lowest smoothed loss), or,
    when that is no usable rate (below ``MIN_USABLE_LR``), ``valley`` or ``FALLBACK_LR`` with a warning;
    ``alternatives`` also gives ``valley`` (the middle of the longest descent of the smoothed loss) and
    ``steepest`` (where the loss falls fastest).
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    alternatives: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lrs": self.lrs,
            "losses": self.losses,
            "smoothed": self.smoothed,
            "suggestion": self.suggestion,
            "alternatives": self.alternatives,
        }

    def plot(self, ax: Any = None) -> Figure:
        """Smoothed loss against the learning rate (log scale) with the suggestions marked.

        Draws on ``ax``, or on a new pyplot figure (shown inline in a notebook). Leaves the matplotlib
        backend as it is: without a display, matplotlib picks a non-interactive one itself.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 4))
        else:
            fig = ax.figure
        ax.plot(self.lrs, self.smoothed, label="smoothed loss")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        markers = {"valley": "o", "minimum/10": "s", "steepest": "^"}
        for name, lr in self.alternatives.items():
            y = float(np.interp(np.log(lr), np.log(self.lrs), self.smoothed))
            ax.plot([lr], [y], markers.get(name, "x"), label=f"{name}: {lr:.2e}")
        ax.set_title(f"LR finder (suggestion {self.suggestion:.2e})")
        ax.legend()
        return fig


def valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The rate about half-way down the longest decreasing run of losses (fast.ai's ``valley``)."""
    n = len(losses)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end = i
            max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[min(idx, n - 1)])


#: the first sweep steps ignored when looking for the minimum: the smoothed loss starts as the first
#: batch's loss alone, and a lucky first batch once made the minimum sit at the start (a 1e-8 "rate")
SKIP_START = 10
#: a suggestion below this is no usable rate (the loss did not fall during the sweep): warn and fall back
MIN_USABLE_LR = 1e-5
#: the rate used when the sweep suggests nothing usable
FALLBACK_LR = 1e-3


def suggestions(lrs: np.ndarray, smoothed: np.ndarray) -> dict[str, float]:
    skip = min(SKIP_START, len(smoothed) // 5)
    i_min = skip + int(np.argmin(smoothed[skip:]))
    grads = np.gradient(smoothed, np.log(lrs)) if len(lrs) > 2 else np.zeros(len(lrs))
    # the steepest descent before the minimum (after it the loss is diverging)
    i_steep = int(np.argmin(grads[: max(i_min, 1)]))
    return {
        "valley": valley(lrs, smoothed),
        "minimum/10": float(lrs[i_min] / 10),
        "steepest": float(lrs[i_steep]),
    }


def lr_find(
    trainer: Trainer,
    train: TensorData,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num: int = 100,
    beta: float = 0.98,
    stop_div: float = 4.0,
) -> LRFinderResult:
    """Sweep the learning rate exponentially from ``start_lr`` to ``end_lr`` over ``num`` mini-batches.

    The loss is smoothed (exponential moving average with bias correction, factor ``beta``); the sweep stops
    once the smoothed loss passes ``stop_div`` times its best. The model's weights are restored from memory
    afterwards, so the finder leaves no trace on training.
    """
    if num < 3:
        raise ValueError("num must be at least 3")
    cfg = trainer.config
    saved = trainer.snapshot()
    data = train.to(trainer.device)
    n = len(data)
    # the batch size training will use: each process of a distributed run trains on 1/world of the rows
    trainer.plan(max(1, n // (distributed.world_size() if distributed.is_active() else 1)))
    trainer.optimizer = trainer.new_optimizer(start_lr)
    g = torch.Generator().manual_seed(cfg.seed)
    mult = (end_lr / start_lr) ** (1 / (num - 1))
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best = 0.0, math.inf
    trainer.model.train()
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)  # dropout draws from the global generator: seed it for a reproducible sweep
    perm = torch.randperm(n, generator=g).to(trainer.device)
    pos = 0
    with trainer.cpu_threads():
        try:
            for i in range(num):
                if pos + trainer.batch_size > n:
                    perm = torch.randperm(n, generator=g).to(trainer.device)
                    pos = 0
                idx = perm[pos : pos + trainer.batch_size]
                pos += trainer.batch_size
                lr = start_lr * mult**i
                loss = float(trainer.train_step(data.take(idx), lr=lr))
                if not math.isfinite(loss):
                    break
                avg = beta * avg + (1 - beta) * loss
                sm = avg / (1 - beta ** (i + 1))
                lrs.append(lr)
                losses.append(loss)
                smoothed.append(sm)
                best = min(best, sm)
                if i > 0 and sm > stop_div * best:
                    break
        finally:
            torch.random.set_rng_state(rng_state)
            trainer.restore(saved)
            trainer.optimizer = None
    if len(lrs) < 3:
        raise RuntimeError("the LR finder diverged within its first steps; lower start_lr")
    alts = suggestions(np.array(lrs), np.array(smoothed))
    # "minimum/10" (fast.ai v1's default): on the flights example "valley" sits 10-30x below the rates
    # where the net trains best (bench/train.py: AUC 0.73 at valley, 0.76 at minimum/10, 2 seeds).
    return LRFinderResult(lrs, losses, smoothed, usable_suggestion(alts, len(lrs)), alts)


def usable_suggestion(alts: dict[str, float], steps: int) -> float:
    """``minimum/10``, unless the sweep found no usable rate: then ``valley``, else ``FALLBACK_LR``,
    with a warning that says why and what to do."""
    lr = alts["minimum/10"]
    if lr >= MIN_USABLE_LR:
        return lr
    fallback = alts["valley"] if alts["valley"] >= MIN_USABLE_LR else FALLBACK_LR
    warnings.warn(
        f"the LR finder's suggestion {lr:.1e} is no usable rate (the loss hardly fell during its {steps} "
        f"steps); training at {fallback:.1e} instead. Sweep over more batches (lr_find(num=...), "
        "train.lr_find.num) or set the learning rate (TrainConfig.lr, train.lr)",
        UserWarning,
        stacklevel=3,
    )
    return fallback
