"""Request and response bodies. The ``/predict`` request type is built per model from its input schema."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

#: A class label or a category value as JSON gives it back.
Label = StrictBool | StrictInt | StrictFloat | StrictStr
#: Which row of an embedding table a value maps to.
RowKind = Literal["value", "missing", "unknown"]


# ---- /predict request: typed per column of the loaded model ----------------------------------------
_NUMBER = Annotated[float, Field(allow_inf_nan=False)]


_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)
_DAY: TypeAdapter[date] = TypeAdapter(date)


def _parse_date(value: Any) -> datetime | date:
    """An ISO 8601 date-time or date string; one error at the field otherwise (not one per format)."""
    if isinstance(value, str):
        for adapter in (_DATETIME, _DAY):
            try:
                return adapter.validate_strings(value)
            except ValidationError:
                pass
    raise PydanticCustomError("datetime_type", "Input should be an ISO 8601 date-time or date string")


_DATE = Annotated[datetime | date, PlainValidator(_parse_date, json_schema_input_type=datetime | date)]


def _value_type(column: dict[str, Any], bounds: tuple[float, float] | None) -> Any:
    role, kind = column.get("role"), column.get("kind")
    if role == "continuous":
        if bounds is None:
            return _NUMBER
        return Annotated[float, Field(allow_inf_nan=False, ge=bounds[0], le=bounds[1])]
    if role == "date" or kind == "timestamp":
        return _DATE
    types: dict[Any, Any] = {"string": str, "integer": int, "boolean": bool}
    return types.get(kind, str | int | _NUMBER | bool)


def record_type(
    input_schema: list[dict[str, Any]],
    extra_columns: str,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> type:
    """A ``TypedDict`` with one required, nullable key per model input (``null`` means missing).

    Strict: a string is never read as a number nor a number as a string, so the OpenAPI schema says
    exactly what is accepted. Keys that are not inputs are dropped or refused (``extra_columns``).
    ``bounds`` limits continuous inputs to ``[low, high]``.
    """
    fields: dict[str, Any] = {}
    for col in input_schema:
        desc = f"{col.get('role')} input ({col.get('kind')}); null means missing"
        if col.get("role") == "categorical":
            desc += "; a value not seen in training gets the 'unknown' embedding and is counted"
        value = _value_type(col, (bounds or {}).get(col["name"]))
        fields[col["name"]] = Annotated[value | None, Field(description=desc)]
    record = TypedDict("Record", fields)  # type: ignore[misc, operator]
    record.__pydantic_config__ = ConfigDict(  # type: ignore[attr-defined]
        strict=True, extra="forbid" if extra_columns == "reject" else "ignore"
    )
    return record


def predict_request_type(record: type, max_rows: int) -> type:
    """``{"records": [Record, ...]}`` with 1 to ``max_rows`` records."""
    records = Annotated[
        list[record],  # type: ignore[valid-type]
        Field(min_length=1, max_length=max_rows, description=f"1 to {max_rows} rows to score"),
    ]
    request = TypedDict("PredictRequest", {"records": records})  # type: ignore[misc, name-match]  # noqa: UP013
    request.__pydantic_config__ = ConfigDict(strict=True, extra="forbid")  # type: ignore[attr-defined]
    return request


# ---- responses -----------------------------------------------------------------------------------
class ModelRef(BaseModel):
    name: str
    version: str


class PredictResponse(BaseModel):
    model: ModelRef = Field(description="the model that scored this request")
    predictions: list[Label | list[float]] = Field(
        description="class labels for classifiers; values for regression (a list per row for several targets)"
    )
    classes: list[Label] | None = Field(
        None, description="classifiers: the class labels, in probability order"
    )
    probabilities: list[list[float]] | None = Field(None, description="classifiers: per row, one per class")
    unknown: dict[str, int] = Field(
        description="per categorical column, how many values were not seen in training (scored as 'unknown')"
    )


class EmbeddingResponse(BaseModel):
    column: str
    value: str = Field(description="the value as requested")
    kind: RowKind = Field(
        description="'unknown': the value was not seen in training and this is the shared unknown vector"
    )
    dim: int
    vector: list[float]


class Neighbor(BaseModel):
    category: Label
    similarity: float = Field(description="cosine similarity to the requested value's vector")


class NeighborsResponse(BaseModel):
    column: str
    value: str
    kind: RowKind
    neighbors: list[Neighbor]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready", "loading", "failed"]
    model: ModelRef | None = None
    detail: str | None = None


class ColumnInfo(BaseModel):
    name: str
    role: str
    kind: str


class EmbeddingColumn(BaseModel):
    name: str
    dim: int
    rows: int = Field(description="vocabulary size including the reserved 'missing' and 'unknown' rows")


class ModelInfo(BaseModel):
    name: str
    version: str
    source: Literal["registry", "local"]
    kind: str = Field(
        description="'net' (the embedding net itself), 'pipeline' (embeddings → estimator) or 'baseline' "
        "(ordinal / one-hot / target codes → estimator; the train run's tables serve the look-ups)"
    )
    task: str
    loaded_at: datetime


class Limits(BaseModel):
    max_rows: int
    max_body_bytes: int
    extra_columns: Literal["ignore", "reject"]


class MetadataResponse(BaseModel):
    model: ModelInfo
    classes: list[Label] | None
    input_schema: list[ColumnInfo]
    embeddings: list[EmbeddingColumn]
    limits: Limits


class ReloadResponse(BaseModel):
    changed: bool = Field(description="whether a different model version is now served")
    previous: ModelRef | None
    current: ModelRef


class ErrorBody(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where the error is, e.g. ['body', 'records', 0, 'distance']")
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    detail: list[FieldError]


class InvocationsResponse(BaseModel):
    """``POST /invocations``: what ``mlflow models serve`` answers for the registered pyfunc model."""

    predictions: list[dict[str, Label | list[float]]] = Field(
        description="one object per row: 'prediction' (class label or value), then for classifiers "
        "'proba_<class>' for each class, in the order of GET /metadata's classes"
    )


class InvocationsErrorBody(BaseModel):
    """A bad ``POST /invocations`` body: MLflow's error keys, and the service's field errors."""

    error_code: Literal["BAD_REQUEST"] = Field(description="as in the MLflow scoring server's error body")
    message: str = Field(description="the first errors, in one line")
    detail: list[FieldError]


class ExploreData(BaseModel):
    """The points of one column for the explorer, as parallel lists (one entry per row, in code order)."""

    column: str
    dim: int = Field(description="embedding width")
    categories: int = Field(
        description="categories in the table, the reserved 'missing' and 'unknown' rows left out"
    )
    shown: int = Field(description="categories listed here: the most frequent, at most 'limit'")
    explained_variance: list[float] = Field(
        description="fraction of the categories' variance along x and along y (PCA of the value rows)"
    )
    category: list[Label | None] = Field(description="the value; null for the 'missing' and 'unknown' rows")
    kind: list[RowKind]
    count: list[int] = Field(description="occurrences in the training data")
    x: list[float]
    y: list[float]
