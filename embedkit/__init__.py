"""embedkit: entity embeddings for tabular data, served to RandomForest, LightGBM and k-NN."""

from ._version import __version__
from .exceptions import DataError, EmbedkitError, FormatError, NotFittedError, TrainingDivergedError
from .preprocessing import CategoryVocab, Preprocessor
from .spec import FeatureSpec
from .tables import EmbeddingTable, EmbeddingTables, load_tables, tables_from_preprocessor, write_tables
from .transformer import EmbeddingTransformer

__all__ = [
    "CategoryVocab",
    "EmbeddingTable",
    "EmbeddingTables",
    "EmbeddingTransformer",
    "DataError",
    "EmbedkitError",
    "FeatureSpec",
    "FormatError",
    "NotFittedError",
    "Preprocessor",
    "TrainingDivergedError",
    "__version__",
    "load_tables",
    "tables_from_preprocessor",
    "write_tables",
]
