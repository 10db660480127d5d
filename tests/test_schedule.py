import numpy as np
import pytest

from embedkit.nn.schedule import OneCycle


def test_one_cycle_shape():
    s = OneCycle(lr_max=1e-2, total_steps=1000, pct_start=0.25, div=25, final_div=1e5, moms=(0.95, 0.85))
    lrs = np.array([s.lr(i) for i in range(1000)])
    moms = np.array([s.momentum(i) for i in range(1000)])
    peak = int(np.argmax(lrs))
    assert lrs[0] == pytest.approx(1e-2 / 25)
    assert lrs[peak] == pytest.approx(1e-2) and 240 <= peak <= 260
    assert lrs[-1] == pytest.approx(1e-2 / 1e5, rel=1e-3)
    assert np.all(np.diff(lrs[: peak + 1]) >= 0) and np.all(np.diff(lrs[peak:]) <= 0)
    # momentum mirrors the rate: high → low at the peak → high
    assert (
        moms[0] == pytest.approx(0.95)
        and moms[peak] == pytest.approx(0.85)
        and moms[-1] == pytest.approx(0.95)
    )
    assert int(np.argmin(moms)) == peak


def test_schedule_is_pure_and_clamps():
    s = OneCycle(1.0, 10)
    assert s.lr(3) == s.lr(3)
    assert s.lr(-5) == s.lr(0) and s.lr(99) == s.lr(9)


def test_no_warmup():
    s = OneCycle(1.0, 10, pct_start=0.0)
    assert s.lr(0) == pytest.approx(1.0)
    assert all(s.lr(i) >= s.lr(i + 1) for i in range(9))


@pytest.mark.parametrize("kw", [{"total_steps": 0}, {"total_steps": 10, "pct_start": 1.0}])
def test_bad_arguments(kw):
    with pytest.raises(ValueError, match="must be"):
        OneCycle(1.0, **kw)
