"""MLflow scoring-server request bodies → validated records, and the answer in MLflow's shape.

``mlflow models serve`` takes a JSON object with exactly one of ``dataframe_split``, ``dataframe_records``,
``instances`` or ``inputs`` (and an optional ``params``), or a CSV table; see
``mlflow/pyfunc/scoring_server/__init__.py``. Each form becomes the same records ``/predict`` takes and
is validated with the same strict per-model record type, so types, nulls, bounds and extra columns
behave as on ``/predict``. Every error names where it is in the body, as ``/predict``'s do.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .scoring import Scores, TooManyRows

Loc = tuple[str | int, ...]
Record = dict[str, Any]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
#: MLflow takes ``params`` beside the data and passes them to the model; embedkit models have none.
PARAMS = "params"
_SPLIT_KEYS = frozenset({"columns", "data", "index"})
_INTEGER = re.compile(r"[+-]?\d+")


class BadInput(ValueError):
    """The body cannot be read as a table of records; ``errors`` are ``{loc, msg, type}`` under ``body``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["msg"] if errors else "invalid input")
        self.errors = errors


def _error(loc: Loc, msg: str, type_: str = "value_error") -> BadInput:
    return BadInput([{"loc": loc, "msg": msg, "type": type_}])


@dataclass(frozen=True)
class Table:
    """The validated records of a body, and where row ``i`` is in it (for errors found while scoring)."""

    records: list[Record]
    row_loc: Callable[[int], Loc]


# ---- the per-model record type -----------------------------------------------------------------------
@lru_cache(maxsize=8)
def _records_adapter(record_type: type) -> TypeAdapter[list[Record]]:
    return TypeAdapter(list[record_type])  # type: ignore[valid-type]


@lru_cache(maxsize=8)
def _column_types(record_type: type) -> dict[str, frozenset[str]]:
    """Each input's JSON types (``string``, ``integer``, ``number``, ``boolean``; ``date`` for dates)."""
    schema = TypeAdapter(record_type).json_schema()
    out = {}
    for name, prop in schema["properties"].items():
        types = set()
        for option in prop.get("anyOf", [prop]):
            if option.get("format") in ("date-time", "date"):
                types.add("date")
            elif option.get("type") not in (None, "null"):
                types.add(option["type"])
        out[name] = frozenset(types)
    return out


def input_names(record_type: type) -> list[str]:
    """The model's inputs, in the model's order."""
    return list(record_type.__annotations__)


def _validate(record_type: type, rows: Any, loc_of: Callable[[Loc], Loc], prefix: Loc = ()) -> list[Record]:
    try:
        return _records_adapter(record_type).validate_python(rows)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise BadInput(
            [{**e, "loc": loc_of(tuple(e["loc"])) if e["loc"] else prefix} for e in errors]
        ) from None


def _check_columns(columns: Sequence[str], record_type: type, extra_columns: str, loc: Loc) -> None:
    """Every input is a column (and, with ``extra_columns="reject"``, nothing else is)."""
    names = input_names(record_type)
    given = set(columns)
    errors = [
        {"loc": (*loc, name), "msg": "Field required: no column for this model input", "type": "missing"}
        for name in names
        if name not in given
    ]
    if extra_columns == "reject":
        known = set(names)
        errors += [
            {"loc": (*loc, c), "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
            for c in columns
            if c not in known
        ]
    if errors:
        raise BadInput(errors)


def _check_rows(n: int, max_rows: int, loc: Loc, allow_empty: bool) -> None:
    if n > max_rows:
        raise TooManyRows(n, max_rows)
    if n == 0 and not allow_empty:
        raise _error(loc, "List should have at least 1 item after validation, not 0", "too_short")


# ---- JSON ------------------------------------------------------------------------------------------------
def parse_json(body: bytes, record_type: type, max_rows: int, extra_columns: str) -> Table:
    """The records of an MLflow JSON request body; raises :class:`BadInput` or :class:`TooManyRows`."""
    try:
        payload = json.loads(body)
    except RecursionError:
        raise _error((), "Invalid JSON: nested too deeply", "json_invalid") from None
    except UnicodeDecodeError:
        raise _error((), "Invalid JSON: not UTF-8", "json_invalid") from None
    except json.JSONDecodeError as exc:
        raise _error(
            (), f"Invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", "json_invalid"
        ) from None
    except ValueError:  # an integer of more than 4300 digits
        raise _error((), "Invalid JSON: a number too long to read", "json_invalid") from None
    if not isinstance(payload, dict):
        raise _error((), f"Input should be a JSON object with exactly one of the keys {', '.join(FORMATS)}")
    present = [k for k in FORMATS if k in payload]
    if len(present) != 1:
        found = ", ".join(present) if present else "none"
        raise _error((), f"Input should have exactly one of the keys {', '.join(FORMATS)} (found: {found})")
    key = present[0]
    # Other keys (``params`` among them) are ignored, as MLflow's server ignores them for a model
    # without a params schema.
    value = payload[key]
    if key == "dataframe_split":
        return _split(value, record_type, max_rows, extra_columns)
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise _error((key,), "Input should be a list of records (objects of column: value)", "list_type")
        return _records(value, key, record_type, max_rows)
    # "instances" and "inputs": records, or one object of column -> values (or -> one value)
    if isinstance(value, dict):
        return _columns(value, key, record_type, max_rows, extra_columns)
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, list):
                raise _error(
                    (key, i),
                    "Input should be an object of column: value; rows of bare values cannot be matched "
                    "to the model's named inputs (send objects, or dataframe_split with columns)",
                    "dict_type",
                )
        return _records(value, key, record_type, max_rows)
    raise _error((key,), "Input should be a list of records or an object of column: values", "list_type")


def _records(rows: list[Any], key: str, record_type: type, max_rows: int) -> Table:
    _check_rows(len(rows), max_rows, (key,), allow_empty=False)
    records = _validate(record_type, rows, lambda loc: (key, *loc), (key,))
    return Table(records, lambda i: (key, i))


def _split(value: Any, record_type: type, max_rows: int, extra_columns: str) -> Table:
    key = "dataframe_split"
    if not isinstance(value, dict):
        raise _error((key,), "Input should be an object with 'columns' and 'data' (and optionally 'index')")
    errors = [
        {"loc": (key, k), "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
        for k in value
        if k not in _SPLIT_KEYS
    ]
    errors += [
        {"loc": (key, k), "msg": "Field required", "type": "missing"}
        for k in ("columns", "data")
        if k not in value
    ]
    if errors:
        raise BadInput(errors)
    columns, data = value["columns"], value["data"]
    if not isinstance(columns, list):
        raise _error((key, "columns"), "Input should be a list of column names", "list_type")
    seen: set[str] = set()
    for j, c in enumerate(columns):
        if not isinstance(c, str):
            raise _error((key, "columns", j), "Input should be a valid string", "string_type")
        if c in seen:
            raise _error((key, "columns", j), "Duplicate column name")
        seen.add(c)
    if not isinstance(data, list):
        raise _error((key, "data"), "Input should be a list of rows (lists of values)", "list_type")
    _check_rows(len(data), max_rows, (key, "data"), allow_empty=True)
    index = value.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise _error((key, "index"), f"Input should be a list of {len(data)} labels, one per row of data")
    _check_columns(columns, record_type, extra_columns, (key, "columns"))
    width = len(columns)
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != width:
            raise _error((key, "data", i), f"Input should be a list of {width} values, one per column")
    records = _validate(
        record_type,
        [dict(zip(columns, row, strict=True)) for row in data],
        lambda loc: (key, "data", *loc),
    )
    return Table(records, lambda i: (key, "data", i))


def _columns(value: dict[str, Any], key: str, record_type: type, max_rows: int, extra_columns: str) -> Table:
    """``{column: [values]}`` (all the same length); a single value stands for every row, as in pandas."""
    _check_columns(list(value), record_type, extra_columns, (key,))
    lengths = {len(v) for v in value.values() if isinstance(v, list)}
    if len(lengths) > 1:
        first = next(len(v) for v in value.values() if isinstance(v, list))
        bad = next(c for c, v in value.items() if isinstance(v, list) and len(v) != first)
        raise _error((key, bad), f"Input should have {first} values, as many as the other columns")
    n = lengths.pop() if lengths else 1
    _check_rows(n, max_rows, (key,), allow_empty=True)
    listed = {c for c, v in value.items() if isinstance(v, list)}
    rows = [{c: (v[i] if c in listed else v) for c, v in value.items()} for i in range(n)]

    def loc_of(loc: Loc) -> Loc:
        # the validator says (row, column, ...); in this body a value is at [column, row] ([column] if single)
        if len(loc) < 2:
            return (key,)
        row, column, *rest = loc
        return (key, column, row, *rest) if column in listed else (key, column, *rest)

    records = _validate(record_type, rows, loc_of, (key,))
    return Table(records, lambda i: (key,))


# ---- CSV -------------------------------------------------------------------------------------------------
def parse_csv(body: bytes, record_type: type, max_rows: int, extra_columns: str) -> Table:
    """The records of a CSV body with a header row (what ``DataFrame.to_csv`` writes).

    Cells are read as pandas reads them (an empty cell, ``NA``, ``null``, ``NaN``… is missing), then as the
    column's type: integers, numbers, ``true``/``false`` (any case) for booleans; anything else stays text
    and is refused where a number or a boolean is expected. Errors name ``[row, column]``, rows counted
    from 0 after the header.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(body), dtype=object, encoding="utf-8")
    except UnicodeDecodeError:
        raise _error((), "Invalid CSV: not UTF-8") from None
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _error((), f"Invalid CSV: {first_line}"[:300]) from None
    columns = [str(c) for c in frame.columns]
    _check_rows(len(frame), max_rows, (), allow_empty=True)
    _check_columns(columns, record_type, extra_columns, ("columns",))
    types = _column_types(record_type)
    converters = [_cell_reader(types.get(c, frozenset())) for c in columns]
    rows = [
        {c: read(v) for c, read, v in zip(columns, converters, values, strict=True)}
        for values in frame.itertuples(index=False, name=None)
    ]
    records = _validate(record_type, rows, lambda loc: loc)
    return Table(records, lambda i: (i,))


def _cell_reader(types: frozenset[str]) -> Callable[[Any], Any]:
    """Text -> the column's JSON type; text that is not one stays text (the validator then refuses it)."""

    def read(cell: Any) -> Any:
        if not isinstance(cell, str):  # pandas gives NaN (a float) for a missing cell
            return None
        if "string" in types or "date" in types or not types:
            return cell
        text = cell.strip()
        if "integer" in types and _INTEGER.fullmatch(text):
            return int(text)
        if "number" in types:
            try:
                return float(text)
            except ValueError:
                return cell
        if "boolean" in types:
            low = text.lower()
            if low in ("true", "false"):
                return low == "true"
        return cell

    return read


# ---- the answer ------------------------------------------------------------------------------------------
def predictions_json(scores: Scores, classes: Sequence[Any] | None) -> bytes:
    """``{"predictions": [...]}`` as ``mlflow models serve`` writes the pyfunc model's DataFrame: one object
    per row, ``prediction`` then ``proba_<class>`` per class, and ``json.dump``'s default separators."""
    if scores.probabilities is None:
        rows: list[dict[str, Any]] = [{"prediction": p} for p in scores.predictions]
    else:
        keys = ["prediction", *(f"proba_{c}" for c in classes or ())]
        rows = [
            dict(zip(keys, [label, *proba], strict=True))
            for label, proba in zip(scores.predictions, scores.probabilities, strict=True)
        ]
    return json.dumps({"predictions": rows}, allow_nan=False).encode()
