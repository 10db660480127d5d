"""MLflow pipelines around embedkit: ``train``, ``downstream``, ``register`` and ``run`` (all three, linked).

Each step is one MLflow run; configs are TOML files validated by :mod:`pipelines.config`; every MLflow call
goes through :mod:`pipelines.tracking`. Run a step with ``embedkit <step> --config FILE`` or
``python -m pipelines.<step> --config FILE``.
"""

from .config import ConfigError, PipelineConfig, load_config

__all__ = ["ConfigError", "PipelineConfig", "load_config"]
