"""Optional dependencies: what to install when one is missing."""

from __future__ import annotations

from typing import Any

TRAIN_EXTRA = 'pip install "embedkit[train]"'


def require_torch() -> Any:
    """``torch``, or an ImportError that says how to install it (training needs it; predicting does not)."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            f"training a net needs torch, which is not installed: {TRAIN_EXTRA} (predicting with a trained "
            "model, embedkit.inference, the service and `embedkit score` do not need it)"
        ) from exc
    return torch
