"""embedkit: entity embeddings for tabular data, served to RandomForest, LightGBM and k-NN."""

from ._version import __version__
from .exceptions import DataError, EmbedkitError, FormatError, NotFittedError, TrainingDivergedError
from .preprocessing import CategoryVocab, Preprocessor
from .spec import FeatureSpec

__all__ = [
    "CategoryVocab",
    "DataError",
    "EmbedkitError",
    "FeatureSpec",
    "FormatError",
    "NotFittedError",
    "Preprocessor",
    "TrainingDivergedError",
    "__version__",
]
