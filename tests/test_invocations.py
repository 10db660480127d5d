"""``POST /invocations`` against MLflow's own scoring server on the same model: same bodies, same answers.

Each model is a servable (net, pipeline, baseline) and the pyfunc model the pipelines register for it
(``pipelines/pyfunc_model.py`` with a signature inferred as ``register`` infers it), served in-process by
``mlflow.pyfunc.scoring_server.init`` (what ``mlflow models serve`` runs) and by this service.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_service_support import (
    API_KEY,
    ROOT,
    build_baseline_servable,
    build_net_servable,
    build_pipeline_servable,
    frame,
)

from service.app import create_app
from service.settings import Settings

COLUMNS = ["city", "level", "flag", "amount", "score"]
JSON = {"Content-Type": "application/json"}
CSV = {"Content-Type": "text/csv"}
KINDS = ["binary", "multiclass", "regression", "pipeline", "baseline"]


def wait_ready(client: TestClient, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 60
    while client.get("/ready", headers=headers).status_code != 200:
        assert time.monotonic() < deadline, client.get("/ready", headers=headers).json()
        time.sleep(0.02)


# ---- the models, each served twice ---------------------------------------------------------------------
@dataclass
class Served:
    servable: Path
    ours: TestClient
    mlflow: TestClient


def save_pyfunc(servable: Path, path: Path) -> Path:
    """The registered model as ``pipelines/register.py`` logs it, saved to a local directory."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from embedkit.servable import load_servable
    from pipelines.pyfunc_model import predictions_frame

    s = load_servable(servable)
    example = frame(n=5, seed=1)[s.feature_columns].reset_index(drop=True)
    mlflow.pyfunc.save_model(
        str(path),
        python_model=str(ROOT / "pipelines" / "pyfunc_model.py"),
        artifacts={"servable": str(servable)},
        signature=infer_signature(example, predictions_frame(s, example)),
        pip_requirements=["mlflow"],
    )
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Served]]:
    """``served(kind)``: the kind's model behind this service and behind MLflow's scoring server (built once)."""
    import mlflow.pyfunc
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT
    from mlflow.pyfunc import scoring_server

    root = tmp_path_factory.mktemp("invocations")
    cache: dict[str, Served] = {}
    patch = pytest.MonkeyPatch()
    # init() marks the process as a serving environment; undo that after this module
    patch.setenv(_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name, "true")

    def servable_of(kind: str) -> Path:
        if kind in ("binary", "multiclass", "regression"):
            return build_net_servable(root / kind, task=kind)
        if kind == "pipeline":
            return build_pipeline_servable(root / kind, get("binary").servable)
        return build_baseline_servable(root / kind)

    def get(kind: str) -> Served:
        if kind not in cache:
            servable = servable_of(kind)
            model = mlflow.pyfunc.load_model(str(save_pyfunc(servable, root / f"{kind}-pyfunc")))
            theirs = TestClient(scoring_server.init(model), raise_server_exceptions=False)
            ours = TestClient(create_app(Settings(model_uri=str(servable), compute_threads=None)))
            ours.__enter__()
            wait_ready(ours)
            cache[kind] = Served(servable, ours, theirs)
        return cache[kind]

    yield get
    for s in cache.values():
        s.ours.__exit__(None, None, None)
    patch.undo()


# ---- request bodies --------------------------------------------------------------------------------------
def rows(text_nulls: bool = True, number_nulls: bool = True) -> list[dict[str, Any]]:
    """Plain-Python records: unseen categories, (``number_nulls``) a missing number and (``text_nulls``)
    a missing city."""
    df = frame(n=7, seed=5)[COLUMNS]
    df["city"] = df["city"].fillna("c2")
    df["amount"] = df["amount"].fillna(3.25)
    df.loc[1, "city"], df.loc[2, "level"] = "never-seen", 99
    if number_nulls:
        df.loc[3, "amount"] = np.nan
    if text_nulls:
        df.loc[4, "city"] = None
    out = []
    for rec in df.to_dict("records"):
        out.append(
            {c: None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for c, v in rec.items()}
        )
    return out


def split(rs: list[dict[str, Any]], columns: list[str] = COLUMNS) -> dict[str, Any]:
    return {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rs]}}


def by_column(rs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {c: [r[c] for r in rs] for c in COLUMNS}


def csv(rs: list[dict[str, Any]], index: bool = False) -> str:
    return pd.DataFrame(rs, columns=COLUMNS).to_csv(index=index)


def bodies(number_nulls: bool = True) -> dict[str, Any]:
    """name -> JSON body or CSV text. MLflow reads a null as the text "None" in a string column of
    ``instances`` and ``inputs`` (it goes through a numpy array), so those bodies carry no null city."""
    full, plain = rows(number_nulls=number_nulls), rows(text_nulls=False, number_nulls=number_nulls)
    return {
        "dataframe_split": split(full),
        "dataframe_split, other column order, index": {
            "dataframe_split": {**split(full, COLUMNS[::-1])["dataframe_split"], "index": list(range(10, 17))}
        },
        "dataframe_records": {"dataframe_records": full},
        "dataframe_records, params": {"dataframe_records": full, "params": {"threshold": 0.3}},
        "instances, records": {"instances": plain},
        "instances, columns": {"instances": by_column(plain)},
        "inputs, columns": {"inputs": by_column(plain)},
        "inputs, records": {"inputs": plain},
        "inputs, one row of scalars": {"inputs": plain[1]},
        "dataframe_split, no rows": {"dataframe_split": {"columns": COLUMNS, "data": []}},
        "csv": csv(full),
        "csv with the index column": csv(full, index=True),
    }


BODIES = bodies()


def post(client: TestClient, body: Any, headers: dict[str, str] | None = None) -> Any:
    if isinstance(body, str):
        return client.post("/invocations", content=body, headers=headers or CSV)
    return client.post("/invocations", content=json.dumps(body), headers=headers or JSON)


def assert_same_answer(ours: Any, theirs: Any) -> None:
    """Same keys in the same order, same labels; numbers within 1e-6 (float32 sums in another order)."""
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    assert ours.headers["content-type"] == theirs.headers["content-type"] == "application/json"
    a, b = ours.json(), theirs.json()
    assert list(a) == list(b) == ["predictions"]
    assert len(a["predictions"]) == len(b["predictions"])
    for mine, mlflows in zip(a["predictions"], b["predictions"], strict=True):
        assert list(mine) == list(mlflows)
        for key in mine:
            if key == "prediction" and not isinstance(mlflows[key], float):
                assert mine[key] == mlflows[key] and type(mine[key]) is type(mlflows[key])
            else:
                assert isinstance(mine[key], float) and mine[key] == pytest.approx(mlflows[key], abs=1e-6)
    # written as MLflow's json.dump writes it (", " and ": ")
    assert ours.text == json.dumps(a)


def test_a_column_the_estimator_cannot_take_is_named_in_the_errors_loc(
    served: Callable[[str], Served],
) -> None:
    # the test's pipeline takes no missing number: the 400 names the column in loc, not only in the text
    answer = post(served("pipeline").ours, {"dataframe_records": rows(number_nulls=True)})
    assert answer.status_code == 400
    body = answer.json()
    assert body["error_code"] == "BAD_REQUEST"
    assert [e["loc"] for e in body["detail"]] == [["body", "amount"]]
    assert "amount" in body["message"] and "fill them before scoring" in body["message"]
    # /predict names it the same way, in its own error shape
    answer = served("pipeline").ours.post("/predict", json={"records": rows(number_nulls=True)})
    assert answer.status_code == 422
    assert [e["loc"] for e in answer.json()["detail"]] == [["body", "records", "amount"]]


# ---- the same answers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_answers_match_mlflows_scoring_server(served: Callable[[str], Served], kind: str) -> None:
    s = served(kind)
    # the test's pipeline (logistic regression on embeddings + raw numbers) takes no missing number
    for name, body in bodies(number_nulls=kind != "pipeline").items():
        ours, theirs = post(s.ours, body), post(s.mlflow, body)
        if name.endswith("no rows") and kind in ("pipeline", "baseline"):
            # MLflow hands the empty frame to the estimator, which refuses it (a 400 there)
            assert ours.status_code == 200 and ours.json() == {"predictions": []}
            assert theirs.status_code == 400 and "0 sample(s)" in theirs.text  # its traceback
            continue
        try:
            assert_same_answer(ours, theirs)
        except AssertionError as exc:
            raise AssertionError(f"{kind}, {name}: {exc}") from exc
    first = post(s.ours, bodies(number_nulls=False)["dataframe_records"]).json()["predictions"][0]
    if kind == "regression":
        assert list(first) == ["prediction"] and isinstance(first["prediction"], float)
    elif kind == "multiclass":
        assert list(first) == ["prediction", "proba_high", "proba_low", "proba_mid"]
        assert first["prediction"] in ("high", "low", "mid")
    else:
        assert list(first) == ["prediction", "proba_0", "proba_1"] and type(first["prediction"]) is int


def test_the_same_content_type_parameters_are_accepted(served: Callable[[str], Served]) -> None:
    s = served("binary")
    body = BODIES["dataframe_records"]
    for headers in [
        {"Content-Type": "application/json; charset=utf-8"},
        {"Content-Type": "application/json"},
    ]:
        assert_same_answer(post(s.ours, body, headers), post(s.mlflow, body, headers))
    assert_same_answer(
        post(s.ours, csv(rows()), {"Content-Type": "text/csv; charset=utf-8"}),
        post(s.mlflow, csv(rows()), {"Content-Type": "text/csv; charset=utf-8"}),
    )


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression", "dates", "pipeline"])
def test_every_format_answers_what_predict_answers(tmp_path: Path, kind: str) -> None:
    """Here null is missing in every column and every format (MLflow reads it as "None" in some), and the
    big-body path (a worker thread) gives the same answers as the inline one."""
    task = {"dates": "binary", "pipeline": "binary"}.get(kind, kind)
    net = build_net_servable(tmp_path / "net", task=task, dates=kind == "dates")
    servable = build_pipeline_servable(tmp_path, net) if kind == "pipeline" else net
    rs = rows(number_nulls=kind != "pipeline")
    rs[5] = {c: None for c in COLUMNS} | ({"amount": 1.0, "score": 0.0} if kind == "pipeline" else {})
    if kind == "dates":
        rs = [
            {**r, "when": w}
            for r, w in zip(rs, ["2024-03-01", "2024-03-01T10:00:00Z", None] * 3, strict=False)
        ]
    columns = list(rs[0])
    bodies = [
        {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rs]}},
        {"dataframe_records": rs},
        {"instances": rs},
        {"inputs": {c: [r[c] for r in rs] for c in columns}},
        # a missing integer makes pandas write the column as floats ("1.0", refused): Int64 keeps "1"
        pd.DataFrame(rs, columns=columns).astype({"level": "Int64"}).to_csv(index=False),
    ]
    for inline_max_bytes in (1 << 20, 0):
        settings = Settings(model_uri=str(servable), compute_threads=None, inline_max_bytes=inline_max_bytes)
        with TestClient(create_app(settings)) as client:
            wait_ready(client)
            predicted = client.post("/predict", json={"records": rs}).json()
            for body in bodies:
                r = post(client, body)
                assert r.status_code == 200, (body, r.text)
                got = r.json()["predictions"]
                labels = [p["prediction"] for p in got]
                if predicted["classes"] is None:
                    np.testing.assert_allclose(labels, predicted["predictions"], atol=1e-6)
                else:
                    assert labels == predicted["predictions"]
                    probabilities = [[p[f"proba_{c}"] for c in predicted["classes"]] for p in got]
                    np.testing.assert_allclose(probabilities, predicted["probabilities"], atol=1e-6)


# ---- bad input: 400 naming the field, as MLflow (which also answers 400) ----------------------------------
R = rows(text_nulls=False)[0]
RAGGED = split([R, R])
RAGGED["dataframe_split"]["data"][1] = [R["city"], R["level"]]
WRONG_TYPE = split([R] * 5)
WRONG_TYPE["dataframe_split"]["data"][3][3] = "far-away"

#: (body, where the error is); MLflow's server refuses each of these with a 400 too.
REFUSED_BY_BOTH: dict[str, tuple[Any, tuple[str | int, ...]]] = {
    "malformed JSON": ("{bad json", ("body",)),
    "a list, not an object": ([R], ("body",)),
    "no format key": ({"records": [R]}, ("body",)),
    "two format keys": ({"dataframe_records": [R], "instances": [R]}, ("body",)),
    "records not a list": ({"dataframe_records": R}, ("body", "dataframe_records")),
    "no records": ({"dataframe_records": []}, ("body", "dataframe_records")),
    "split not an object": ({"dataframe_split": [R]}, ("body", "dataframe_split")),
    "split with an unknown key": (
        {"dataframe_split": {**split([R])["dataframe_split"], "foo": 1}},
        ("body", "dataframe_split", "foo"),
    ),
    "split without columns": (
        {"dataframe_split": {"data": [list(R.values())]}},
        ("body", "dataframe_split", "columns"),
    ),
    "split with a mistyped value": (WRONG_TYPE, ("body", "dataframe_split", "data", 3, "amount")),
    "split without a column": (split([R], COLUMNS[:-1]), ("body", "dataframe_split", "columns", "score")),
    "records with a mistyped value": (
        {"dataframe_records": [R, {**R, "amount": "far-away"}]},
        ("body", "dataframe_records", 1, "amount"),
    ),
    "instances as lists of values": ({"instances": [list(R.values())]}, ("body", "instances", 0)),
    "inputs without a column": (
        {"inputs": {k: v for k, v in by_column([R]).items() if k != "score"}},
        ("body", "inputs", "score"),
    ),
    "inputs with a mistyped value": (
        {"inputs": {**by_column([R, R]), "amount": [1.0, "far-away"]}},
        ("body", "inputs", "amount", 1),
    ),
    "inputs of unequal lengths": (
        {"inputs": {**by_column([R, R]), "level": [1]}},
        ("body", "inputs", "level"),
    ),
    "csv, not a number": (
        csv([R]).replace(f",{R['level']},", ",far-away,", 1),
        ("body", 0, "level"),
    ),
    "csv without a column": ("city,level\nc1,2\n", ("body", "columns", "flag")),
    "csv, empty": ("", ("body",)),
}

#: Refused here (the record type is strict, as on /predict), scored by MLflow after a cast or with nulls
#: filled in.
REFUSED_HERE: dict[str, tuple[Any, tuple[str | int, ...]]] = {
    "split with a short row": (RAGGED, ("body", "dataframe_split", "data", 1)),
    "records without a column": (
        {"dataframe_records": [R, {k: v for k, v in R.items() if k != "score"}]},
        ("body", "dataframe_records", 1, "score"),
    ),
    "a number as text": (
        {"dataframe_records": [{**R, "level": "2"}]},
        ("body", "dataframe_records", 0, "level"),
    ),
    "a number for a boolean": (
        {"dataframe_records": [{**R, "flag": 1}]},
        ("body", "dataframe_records", 0, "flag"),
    ),
    "a number for a string": ({"instances": [{**R, "city": 5}]}, ("body", "instances", 0, "city")),
    "a fraction for an integer": (
        {"inputs": {**by_column([R]), "level": [2.5]}},
        ("body", "inputs", "level", 0),
    ),
    "a number far outside the training range": (
        {"inputs": {**by_column([R]), "amount": 1e300}},
        ("body", "inputs", "amount"),
    ),
}


def assert_bad_request(r: Any, loc: tuple[str | int, ...]) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"error_code", "message", "detail"} and body["error_code"] == "BAD_REQUEST"
    locs = [tuple(e["loc"]) for e in body["detail"]]
    assert loc in locs, locs
    assert all(set(e) == {"loc", "msg", "type"} for e in body["detail"])
    assert ".".join(map(str, loc)) in body["message"]
    assert "far-away" not in r.text and "Traceback" not in r.text


@pytest.mark.parametrize("case", list(REFUSED_BY_BOTH))
def test_bad_input_is_400_naming_the_field_as_mlflow_refuses_it(
    served: Callable[[str], Served], case: str
) -> None:
    body, loc = REFUSED_BY_BOTH[case]
    s = served("binary")
    send = (
        (lambda c: c.post("/invocations", content=body, headers=JSON))
        if case == "malformed JSON"
        else (lambda c: post(c, body))
    )
    assert_bad_request(send(s.ours), loc)
    theirs = send(s.mlflow)
    assert theirs.status_code == 400 and theirs.json()["error_code"] in (
        "BAD_REQUEST",
        "INVALID_PARAMETER_VALUE",
    )


@pytest.mark.parametrize("case", list(REFUSED_HERE))
def test_values_are_typed_strictly_as_on_predict(served: Callable[[str], Served], case: str) -> None:
    body, loc = REFUSED_HERE[case]
    assert_bad_request(post(served("binary").ours, body), loc)


def test_errors_are_bounded_and_summarised(served: Callable[[str], Served]) -> None:
    r = post(served("binary").ours, {"dataframe_records": [{**R, "amount": "x", "score": "y"}] * 30})
    body = r.json()
    assert r.status_code == 400 and len(body["detail"]) == 20
    assert body["message"].startswith("Invalid input: body.dataframe_records.0.amount: ")
    assert body["message"].endswith("(and 57 more)")


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/json; charset=latin-1", "application/json; format=pandas-split"],
)
def test_other_content_types_are_415(served: Callable[[str], Served], content_type: str | None) -> None:
    s = served("binary")
    headers = {"Content-Type": content_type} if content_type else {}
    content = json.dumps(BODIES["dataframe_records"])
    r = s.ours.post("/invocations", content=content, headers=headers)
    assert r.status_code == 415 and r.json()["error_code"] == "BAD_REQUEST"
    assert "application/json or text/csv" in r.json()["detail"]
    if content_type is not None:  # MLflow's server fails with a 500 without a Content-Type
        assert s.mlflow.post("/invocations", content=content, headers=headers).status_code == 415


def test_limits_and_extra_columns_as_on_predict(served: Callable[[str], Served]) -> None:
    servable = served("binary").servable
    settings = Settings(model_uri=str(servable), compute_threads=None, max_rows=3, extra_columns="reject")
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        for body in [
            {"dataframe_records": [R] * 4},
            split([R] * 4),
            {"inputs": by_column([R] * 4)},
            csv([R] * 4),
        ]:
            r = post(client, body)
            assert (
                r.status_code == 413
                and r.json()["detail"] == "rows: 4 records exceed the limit of 3 per request"
            )
        assert post(client, {"dataframe_records": [R] * 3}).status_code == 200
        extra = {**R, "zzz": 1}
        assert_bad_request(
            post(client, {"dataframe_records": [extra]}), ("body", "dataframe_records", 0, "zzz")
        )
        assert_bad_request(
            post(client, split([extra], [*COLUMNS, "zzz"])), ("body", "dataframe_split", "columns", "zzz")
        )
        assert_bad_request(post(client, csv([R], index=True)), ("body", "columns", "Unnamed: 0"))
    # ignored by default, as by MLflow
    s = served("binary")
    assert_same_answer(
        post(s.ours, {"dataframe_records": [extra]}), post(s.mlflow, {"dataframe_records": [extra]})
    )


def test_api_key_metrics_and_openapi(served: Callable[[str], Served]) -> None:
    settings = Settings(model_uri=str(served("binary").servable), compute_threads=None, api_key=API_KEY)
    key = {"X-API-Key": API_KEY}
    with TestClient(create_app(settings)) as client:
        wait_ready(client, key)
        assert post(client, BODIES["dataframe_records"]).status_code == 401
        assert post(client, BODIES["dataframe_records"], {**JSON, **key}).status_code == 200
        assert post(client, {"dataframe_records": []}, {**JSON, **key}).status_code == 400
        metrics = client.get("/metrics", headers=key).text
        assert 'embedkit_http_requests_total{method="POST",route="/invocations",status="200"} 1.0' in metrics
        assert 'embedkit_http_requests_total{method="POST",route="/invocations",status="400"} 1.0' in metrics
        assert "embedkit_prediction_rows_total 7.0" in metrics
        assert 'embedkit_unknown_categories_total{column="city"} 1.0' in metrics

        schema = client.get("/openapi.json", headers=key).json()
        operation = schema["paths"]["/invocations"]["post"]
        assert operation["security"] == [{"APIKeyHeader": []}]
        content = operation["requestBody"]["content"]
        assert set(content) == {"application/json", "text/csv"}
        forms = content["application/json"]["schema"]["oneOf"]
        assert [f["title"] for f in forms] == ["dataframe_split", "dataframe_records", "instances", "inputs"]
        assert forms[1]["properties"]["dataframe_records"]["items"] == {"$ref": "#/components/schemas/Record"}
        assert set(operation["responses"]) >= {"200", "400", "413", "415", "503"}
