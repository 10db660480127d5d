"""The one-cycle schedule as pure functions of the step (plot and test them on their own)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def _cos(start: float, end: float, pct: float) -> float:
    """Cosine interpolation from ``start`` (pct=0) to ``end`` (pct=1)."""
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


@dataclass(frozen=True)
class OneCycle:
    """Learning rate rises from ``lr_max / div`` to ``lr_max`` over the first ``pct_start`` of the steps,
    then anneals to ``lr_max / final_div``; momentum (Adam's beta1) moves the opposite way between
    ``moms[0]`` → ``moms[1]`` → ``moms[0]``. Both by cosine, as in fast.ai's ``fit_one_cycle``."""

    lr_max: float
    total_steps: int
    pct_start: float = 0.25
    div: float = 25.0
    final_div: float = 1e5
    moms: tuple[float, float] = (0.95, 0.85)

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError("total_steps must be >= 1")
        if not 0 <= self.pct_start < 1:
            raise ValueError("pct_start must be in [0, 1)")

    def _phase(self, step: int) -> tuple[int, float]:
        warm = max(1, round(self.total_steps * self.pct_start))
        step = min(max(step, 0), self.total_steps - 1)
        if step < warm and self.pct_start > 0:
            return 0, step / warm
        rest = max(1, self.total_steps - 1 - (warm if self.pct_start > 0 else 0))
        return 1, (step - (warm if self.pct_start > 0 else 0)) / rest

    def lr(self, step: int) -> float:
        phase, pct = self._phase(step)
        if phase == 0:
            return _cos(self.lr_max / self.div, self.lr_max, pct)
        return _cos(self.lr_max, self.lr_max / self.final_div, pct)

    def momentum(self, step: int) -> float:
        phase, pct = self._phase(step)
        hi, lo = self.moms
        return _cos(hi, lo, pct) if phase == 0 else _cos(lo, hi, pct)

    def to_dict(self) -> dict:
        return asdict(self)


# ---- how long to train: one rule from the number of training rows -----------------------------------
#: ``auto_batch_size``: aim for about this many optimizer steps per epoch on small tables
STEPS_PER_EPOCH = 64
MIN_BATCH, MAX_BATCH = 32, 1024
#: ``auto_epochs``: aim for at least this many optimizer steps in the whole run
MIN_TOTAL_STEPS = 600
MIN_EPOCHS, MAX_EPOCHS = 5, 20


def auto_batch_size(n_rows: int) -> int:
    """The default batch size for ``n_rows`` training rows: the largest power of two at most
    ``n_rows / 64``, within ``[32, 1024]``.

    So a table of a few thousand rows still gets about 64 optimizer steps per epoch (2,000 rows: batch
    32), while large tables keep the course's 1,024 (from 65,536 rows up), where per-step overhead
    matters more than the number of steps.
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    b = 1 << max(0, int(math.floor(math.log2(max(n_rows / STEPS_PER_EPOCH, 1.0)))))
    return int(min(MAX_BATCH, max(MIN_BATCH, b)))


def auto_epochs(n_rows: int, batch_size: int) -> int:
    """The default number of epochs: enough for ``MIN_TOTAL_STEPS`` (600) optimizer steps, within
    ``[5, 20]`` (2,000 rows at batch 32: 10 epochs; 100,000 rows at batch 1,024: 7; 300,000: 5).

    The held-out slice (``valid_fraction`` of the estimators) keeps the best epoch, so a small table that
    starts to overfit before the end loses nothing to the longer run.
    """
    steps = max(1, math.ceil(n_rows / max(1, batch_size)))
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(MIN_TOTAL_STEPS / steps))))
