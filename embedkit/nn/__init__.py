"""The part of embedkit that needs torch: the net, its training and the estimators built on it.

Everything a trained model needs to predict (preprocessing, embedding tables, the transformer with
given tables, bundle and servable reading, :mod:`embedkit.inference`) lives one floor down, in
``embedkit`` itself, and never imports torch. See ``docs/design.md``.
"""

from .._compat import require_torch

require_torch()

from .estimators import TabularNetClassifier, TabularNetRegressor  # noqa: E402
from .learner import Learner  # noqa: E402
from .lr_finder import LRFinderResult, lr_find  # noqa: E402
from .model import NetConfig, TabularNet, load_net  # noqa: E402
from .trainer import TrainConfig, Trainer  # noqa: E402

__all__ = [
    "LRFinderResult",
    "Learner",
    "NetConfig",
    "TabularNet",
    "TabularNetClassifier",
    "TabularNetRegressor",
    "TrainConfig",
    "Trainer",
    "load_net",
    "lr_find",
]
