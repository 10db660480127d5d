"""``POST /invocations``: the MLflow scoring server's protocol, so a client of ``mlflow models serve``
switches to this service by changing the URL (see docs/service.md)."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from embedkit.exceptions import DataError

from ..deps import LimiterDep, MetricsDep, ModelDep, SettingsDep
from ..errors import field_errors
from ..mlflow_input import FORMATS, PARAMS, BadInput, parse_csv, parse_json, predictions_json
from ..schemas import ErrorBody, InvocationsErrorBody, InvocationsResponse
from ..scoring import Scorer, Scores, TooManyRows, UnscorableRows

router = APIRouter(tags=["predict"])

#: MLflow's error code for a bad request (HTTP 400), in every error body of this route.
BAD_REQUEST = "BAD_REQUEST"
#: How many field errors the one-line ``message`` repeats (``detail`` has them all, up to 20).
MESSAGE_ERRORS = 3
#: The request body's schema is the loaded model's (see :func:`request_body`); this is its place-holder.
REQUEST_BODY_PLACEHOLDER = {
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "object"}},
        "text/csv": {"schema": {"type": "string"}},
    },
}


def _content_kind(content_type: str | None) -> str | None:
    """``"json"`` or ``"csv"``; ``None`` for anything else (a charset other than UTF-8 included)."""
    if content_type is None:
        return None
    media, *params = (p.strip() for p in content_type.split(";"))
    media = media.lower()
    for param in params:
        name, _, value = param.partition("=")
        # MLflow refuses any parameter but charset (MLflow 1's "format=pandas-split" among them)
        if name.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            return None
    if media == "text/csv":
        return "csv"
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return "json"
    return None


def _message_error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error_code": BAD_REQUEST, "message": message, "detail": message}, status_code=status
    )


def _bad_request(errors: list[dict[str, Any]]) -> JSONResponse:
    detail = field_errors(errors, prefix=("body",))
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in detail[:MESSAGE_ERRORS])
    more = len(errors) - MESSAGE_ERRORS
    message = f"Invalid input: {summary}" + (f" (and {more} more)" if more > 0 else "")
    return JSONResponse({"error_code": BAD_REQUEST, "message": message, "detail": detail}, status_code=400)


def _score(scorer: Scorer, kind: str, body: bytes, extra_columns: str) -> Scores:
    """Parse, validate and score a body: the CPU-bound part of a request, for a worker thread."""
    parse = parse_csv if kind == "csv" else parse_json
    table = parse(body, scorer.record_type, scorer.max_rows, extra_columns)
    if not table.records:  # MLflow answers an empty table (columns, no rows) with no predictions
        return Scores([], None, {})
    try:
        return scorer.score(table.records)
    except UnscorableRows as exc:
        where = dict.fromkeys(table.row_loc(i) for i in exc.rows)  # one per row, or one for columns
        raise BadInput([{"loc": loc, "msg": str(exc), "type": "value_error"} for loc in where]) from None
    except DataError as exc:  # about whole columns: one error per column it names
        locs: list[tuple[str, ...]] = [(c,) for c in exc.columns] or [()]
        raise BadInput([{"loc": loc, "msg": str(exc), "type": "value_error"} for loc in locs]) from None


@router.post(
    "/invocations",
    response_model=InvocationsResponse,
    summary="Score rows in the MLflow scoring server's formats",
    description="The request and answer of `mlflow models serve` for this model: a JSON object with "
    f"exactly one of {', '.join(FORMATS)} (and an optional, ignored `{PARAMS}`), or a CSV table with a "
    'header; the answer is `{"predictions": [{"prediction": ..., "proba_<class>": ...}, ...]}`. '
    "Values are typed as for /predict; bad input is a 400 that names the field.",
    openapi_extra={"requestBody": REQUEST_BODY_PLACEHOLDER},
    responses={
        400: {
            "model": InvocationsErrorBody,
            "description": "not one of the formats, invalid JSON or CSV, or a missing, extra or mistyped value",
        },
        413: {
            "model": ErrorBody,
            "description": "more rows than the limit, or a body over the size limit",
        },
        415: {"model": ErrorBody, "description": "the body is neither application/json nor text/csv (UTF-8)"},
        503: {"model": ErrorBody, "description": "the model is not loaded yet"},
    },
)
async def invocations(
    request: Request, model: ModelDep, settings: SettingsDep, metrics: MetricsDep, limiter: LimiterDep
) -> Response:
    kind = _content_kind(request.headers.get("content-type"))
    if kind is None:
        return _message_error(
            415, "send the rows as application/json or text/csv (UTF-8), in MLflow's scoring formats"
        )
    body = await request.body()
    work = partial(_score, model.scorer, kind, body, settings.extra_columns)
    try:
        if len(body) <= settings.inline_max_bytes:
            scores = work()  # small bodies right here: a thread hop would cost more than scoring
        else:
            scores = await anyio.to_thread.run_sync(work, limiter=limiter)
    except BadInput as exc:
        return _bad_request(exc.errors)
    except TooManyRows as exc:
        return _message_error(413, f"rows: {exc}")
    metrics.observe_prediction(scores.rows, scores.unknown)
    return Response(predictions_json(scores, model.scorer.classes), media_type="application/json")


def request_body(record_ref: str, max_rows: int, columns: dict[str, Any], closed: bool) -> dict[str, Any]:
    """The OpenAPI request body for the loaded model: the four JSON formats, and CSV.

    ``record_ref`` points at the model's record schema, ``columns`` maps each input to its value schema;
    ``closed``: extra columns are refused. A ``dataframe_split`` row's types follow ``columns``' order,
    which JSON Schema cannot say: its rows are only typed as lists.
    """
    records = {"type": "array", "items": {"$ref": record_ref}, "minItems": 1, "maxItems": max_rows}
    by_column: dict[str, Any] = {
        "type": "object",
        "description": "column -> one value per row (or a single value for every row)",
        "properties": {
            name: {"anyOf": [{"type": "array", "items": value, "maxItems": max_rows}, value]}
            for name, value in columns.items()
        },
        "required": list(columns),
    }
    if closed:
        by_column["additionalProperties"] = False
    split = {
        "type": "object",
        "description": "pandas' 'split' orientation (DataFrame.to_dict(orient='split')); index is ignored",
        "properties": {
            "columns": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "data": {"type": "array", "items": {"type": "array"}, "maxItems": max_rows},
            "index": {"type": "array"},
        },
        "required": ["columns", "data"],
        "additionalProperties": False,
    }
    forms = {
        "dataframe_split": split,
        "dataframe_records": records,
        "instances": {"anyOf": [records, by_column]},
        "inputs": {"anyOf": [records, by_column]},
    }
    params = {"description": "accepted and ignored (embedkit models take no parameters)"}
    one_of = [
        {
            "type": "object",
            "title": name,
            "properties": {name: form, PARAMS: params},
            "required": [name],
            "not": {"anyOf": [{"required": [other]} for other in forms if other != name]},
        }
        for name, form in forms.items()
    ]
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"oneOf": one_of}},
            "text/csv": {
                "schema": {
                    "type": "string",
                    "description": "a header row naming the columns, then one line per row",
                }
            },
        },
    }
