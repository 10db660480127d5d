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
