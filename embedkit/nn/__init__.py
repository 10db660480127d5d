"""The part of embedkit that needs torch: the net, its training and the estimators built on it.

Everything a trained model needs to predict (preprocessing, embedding tables, the transformer with
given tables, bundle and servable reading, :mod:`embedkit.inference`) lives one floor down, in
``embedkit`` itself, and never imports torch. See ``docs/design.md``.
"""

from .estimators import TabularNetClassifier, TabularNetRegressor
from .learner import Learner
from .lr_finder import LRFinderResult, lr_find
from .model import NetConfig, TabularNet, load_net
from .trainer import TrainConfig, Trainer

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
