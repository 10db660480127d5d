"""``POST /predict``: score records with the loaded model."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from embedkit.exceptions import DataError

from ..deps import LimiterDep, MetricsDep, ModelDep, SettingsDep
from ..errors import field_errors
from ..schemas import ErrorBody, PredictResponse, ValidationErrorBody
from ..scoring import Scores, TooManyRows, UnscorableRows

router = APIRouter(tags=["predict"])

#: The request body's schema is the loaded model's (see service/openapi.py); this is its place-holder.
REQUEST_BODY_PLACEHOLDER = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}


def _is_json(content_type: str | None) -> bool:
    if content_type is None:  # a body must say what it is: no Content-Type is a 415 too
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Score records",
    description="One prediction per record, class probabilities for classifiers, and per categorical "
    "column the number of values never seen in training (scored with the 'unknown' vector).",
    openapi_extra={"requestBody": REQUEST_BODY_PLACEHOLDER},
    responses={
        413: {
            "model": ErrorBody,
            "description": "more records than the limit, or a body over the size limit",
        },
        415: {"model": ErrorBody, "description": "the body is not sent as application/json"},
        422: {
            "model": ValidationErrorBody,
            "description": "invalid JSON, or a missing, extra or mistyped value",
        },
        503: {"model": ErrorBody, "description": "the model is not loaded yet"},
    },
)
async def predict(
    request: Request, model: ModelDep, settings: SettingsDep, metrics: MetricsDep, limiter: LimiterDep
) -> PredictResponse:
    if not _is_json(request.headers.get("content-type")):
        raise HTTPException(415, detail="send the records as JSON (Content-Type: application/json)")
    body = await request.body()
    try:
        if len(body) <= settings.inline_max_bytes:
            # Small bodies (the 1-row path) are scored right here: a thread hop would cost more.
            scores: Scores = model.scorer.score_body(body)
        else:
            scores = await anyio.to_thread.run_sync(model.scorer.score_body, body, limiter=limiter)
    except ValidationError as exc:
        raise RequestValidationError(
            field_errors(exc.errors(include_url=False, include_input=False), prefix=("body",))
        ) from None
    except TooManyRows as exc:
        raise HTTPException(413, detail=f"records: {exc}") from None
    except UnscorableRows as exc:
        errors = [{"loc": ("body", "records", i), "msg": str(exc), "type": "value_error"} for i in exc.rows]
        raise RequestValidationError(field_errors(errors)) from None
    except DataError as exc:  # about whole columns: one error per column it names
        locs: list[tuple[str, ...]] = [("body", "records", c) for c in exc.columns] or [("body", "records")]
        raise RequestValidationError(
            [{"loc": loc, "msg": str(exc), "type": "value_error"} for loc in locs]
        ) from None
    metrics.observe_prediction(scores.rows, scores.unknown)
    return PredictResponse.model_construct(
        model=model.ref,
        predictions=scores.predictions,
        classes=model.scorer.classes,
        probabilities=scores.probabilities,
        unknown=scores.unknown,
    )
