"""Embedding tables: the Parquet + manifest format, its checks, and the fast encoder."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedkit import tables as tables_mod
from embedkit._version import __version__
from embedkit.exceptions import DataError, FormatError, NotFittedError
from embedkit.preprocessing import MISSING, UNKNOWN, CategoryVocab, Preprocessor
from embedkit.spec import FeatureSpec
from embedkit.tables import (
    FORMAT_VERSION,
    EmbeddingTable,
    EmbeddingTables,
    load_tables,
    tables_from_preprocessor,
    write_tables,
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "city": pd.Series(["paris", "oslo", None, "paris", "rome", "oslo", "paris"], dtype="str"),
            "rooms": pd.Series([1, 2, 2, 3, 1, 1, 5], dtype="int64"),
            "flag": pd.Series([True, False, True, True, False, True, True]),
            "day": pd.to_datetime(
                [
                    "2024-01-01",
                    "2024-01-02",
                    None,
                    "2024-01-01",
                    "2024-03-04 10:30",
                    "2024-01-02",
                    "2024-01-01",
                ],
                format="ISO8601",
            ),
        }
    )


def _tables(seed: int = 0, source: str | None = "run-1") -> EmbeddingTables:
    df = _frame()
    rng = np.random.default_rng(seed)
    out = []
    for dim, col in zip((3, 2, 2, 4), df.columns, strict=True):
        vocab = CategoryVocab.fit(col, df[col])
        out.append(EmbeddingTable(vocab, rng.standard_normal((vocab.n_codes, dim))))
    return EmbeddingTables(out, source=source)


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, EmbeddingTables]:
    t = _tables()
    return write_tables(tmp_path / "tables", t), t


def _file_of(path: Path, column: str) -> Path:
    manifest = json.loads((path / "manifest.json").read_text())
    return path / next(c["file"] for c in manifest["columns"] if c["name"] == column)


# ---- round trip ---------------------------------------------------------------------------------
def test_roundtrip_keeps_vocabularies_weights_and_provenance(written):
    path, t = written
    loaded = load_tables(path)
    assert loaded == t
    assert list(loaded) == ["city", "rooms", "flag", "day"]
    assert {c: loaded[c].vocab.kind for c in loaded} == {
        "city": "string",
        "rooms": "integer",
        "flag": "boolean",
        "day": "timestamp",
    }
    for name in t:
        assert loaded[name].vocab.to_dict() == t[name].vocab.to_dict()
        assert loaded[name].weights.dtype == np.float32
    assert loaded.source == "run-1"
    assert loaded.embedkit_version == __version__
    assert loaded.path == path
    assert pd.Timestamp(loaded.created_at).tzinfo is not None


def test_manifest_lists_every_column(written):
    path, t = written
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest) == {"format_version", "created_at", "embedkit_version", "source", "columns"}
    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert [c["name"] for c in manifest["columns"]] == list(t)
    for entry in manifest["columns"]:
        assert set(entry) == {"name", "file", "dim", "rows", "sha256"}
        assert entry["dim"] == t[entry["name"]].dim
        assert entry["rows"] == t[entry["name"]].n_codes
        assert len(entry["sha256"]) == 64


def test_parquet_layout_types_reserved_rows_and_metadata(written):
    path, t = written
    expected_types = {"city": pa.string(), "rooms": pa.int64(), "flag": pa.bool_(), "day": pa.timestamp("us")}
    for name, table in t.items():
        pt = pq.read_table(_file_of(path, name))
        assert pt.column_names == ["category", "kind", "code", "count"] + [
            f"emb_{i}" for i in range(table.dim)
        ]
        assert pt.schema.field("category").type == expected_types[name]
        assert pt.schema.field("code").type == pa.int32()
        assert pt.schema.field("count").type == pa.int64()
        assert all(pt.schema.field(f"emb_{i}").type == pa.float32() for i in range(table.dim))
        assert pt.column("category").to_pylist()[:2] == [None, None]
        assert pt.column("kind").to_pylist()[:3] == ["missing", "unknown", "value"]
        assert pt.column("code").to_pylist() == list(range(table.n_codes))
        counts = pt.column("count").to_pylist()
        assert counts[:2] == [table.vocab.missing_count, table.vocab.unknown_count]
        assert counts[2:] == table.vocab.counts
        md = pt.schema.metadata
        assert md[b"embedkit.format_version"] == b"1"
        assert md[b"embedkit.column"] == name.encode()
        assert md[b"embedkit.dim"] == str(table.dim).encode()
        assert md[b"embedkit.category_kind"] == table.vocab.kind.encode()
        emb = np.column_stack([pt.column(f"emb_{i}").to_numpy() for i in range(table.dim)])
        np.testing.assert_array_equal(emb, table.weights)
    assert t["city"].vocab.missing_count == 1


def test_to_frame_matches_the_parquet_file(written):
    path, t = written
    for name, table in t.items():
        frame = table.to_frame()
        on_disk = pq.read_table(_file_of(path, name)).to_pandas()
        assert list(frame.columns) == list(on_disk.columns)
        assert frame["category"].iloc[:2].isna().all()
        np.testing.assert_array_equal(frame["code"].to_numpy(), np.arange(table.n_codes, dtype=np.int32))
        np.testing.assert_array_equal(frame.filter(like="emb_").to_numpy(), table.weights)
    np.testing.assert_array_equal(t["rooms"].to_frame()["category"].iloc[2:].to_numpy(), [1, 2, 3, 5])


def test_nanosecond_timestamps_keep_their_precision(tmp_path):
    s = pd.Series(pd.to_datetime(["2024-01-01 00:00:00.000000001", "2024-01-02"], format="ISO8601"))
    vocab = CategoryVocab.fit("ts", s)
    t = EmbeddingTables([EmbeddingTable(vocab, np.ones((vocab.n_codes, 2)))])
    loaded = load_tables(write_tables(tmp_path / "t", t))
    assert loaded == t
    assert pq.read_schema(tmp_path / "t" / "000-ts.parquet").field("category").type == pa.timestamp("ns")


def test_awkward_column_names_get_safe_distinct_files(tmp_path):
    names = ["a/b", "a b", "../../etc", "ünï cödé", ".hidden"]
    tabs = [EmbeddingTable(CategoryVocab.fit(n, pd.Series(["x", "y"])), np.ones((4, 2))) for n in names]
    path = write_tables(tmp_path / "t", EmbeddingTables(tabs))
    files = sorted(p.name for p in path.iterdir() if p.suffix == ".parquet")
    assert len(set(files)) == len(names)
    assert all("/" not in f and not f.startswith(".") for f in files)
    assert list(load_tables(path)) == names


def test_write_accepts_a_plain_mapping_and_source(tmp_path):
    t = _tables(source=None)
    path = write_tables(tmp_path / "t", dict(t), source="models/bundle-3")
    assert load_tables(path).source == "models/bundle-3"


def test_tables_from_preprocessor():
    df = _frame()
    pre = Preprocessor(FeatureSpec(categorical=["city", "rooms"], continuous=[], dates=[])).fit(df)
    w = {
        "rooms": np.zeros((pre.vocabs_["rooms"].n_codes, 2)),
        "city": np.ones((pre.vocabs_["city"].n_codes, 3)),
    }
    t = tables_from_preprocessor(pre, w, source="s")
    assert list(t) == ["city", "rooms"] and t.dims == {"city": 3, "rooms": 2} and t.source == "s"
    with pytest.raises(DataError, match=r"weights given for \['nope'\], which are not categorical columns"):
        tables_from_preprocessor(pre, {"nope": np.ones((3, 2))})
    with pytest.raises(NotFittedError, match="Preprocessor is not fitted"):
        tables_from_preprocessor(Preprocessor(), w)


def test_table_rejects_weights_of_the_wrong_shape():
    vocab = CategoryVocab.fit("c", pd.Series(["a", "b"]))
    with pytest.raises(DataError, match=r"column 'c' have 3 rows but its vocabulary has 4 codes"):
        EmbeddingTable(vocab, np.ones((3, 2)))
    with pytest.raises(DataError, match=r"must be a 2-D array"):
        EmbeddingTable(vocab, np.ones(4))
    with pytest.raises(DataError, match=r"stored under 'x' is the table of column 'c'"):
        EmbeddingTables({"x": EmbeddingTable(vocab, np.ones((4, 2)))})


def test_tables_mapping_behaviour():
    t = _tables()
    assert len(t) == 4 and "city" in t and t.dims["day"] == 4
    with pytest.raises(KeyError, match="no embedding table for column 'nope'"):
        t["nope"]
    assert "city(3)" in repr(t) and "run-1" in repr(t)
    assert pickle.loads(pickle.dumps(t)) == t


# ---- atomic writes ------------------------------------------------------------------------------
def test_failure_mid_write_keeps_the_previous_version(tmp_path, monkeypatch):
    old = _tables(seed=0)
    path = write_tables(tmp_path / "t", old)
    real = tables_mod._write_parquet
    calls = []

    def flaky(table, fpath):
        calls.append(table.name)
        if len(calls) == 2:
            raise OSError("disk full")
        real(table, fpath)

    monkeypatch.setattr(tables_mod, "_write_parquet", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_tables(path, _tables(seed=1))
    assert load_tables(path) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]  # no temporary left behind


def test_failure_on_first_write_leaves_nothing(tmp_path, monkeypatch):
    def broken(table, fpath):
        Path(fpath).write_bytes(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(tables_mod, "_write_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        write_tables(tmp_path / "t", _tables())
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_the_directory(tmp_path):
    path = write_tables(tmp_path / "t", _tables(seed=0))
    new = _tables(seed=1)
    write_tables(path, new)
    assert load_tables(path) == new


def test_non_finite_weights_are_not_written(tmp_path):
    t = _tables()
    t["rooms"].weights[3, 0] = np.nan
    with pytest.raises(DataError, match=r"embedding of column 'rooms' holds NaN or infinite values"):
        write_tables(tmp_path / "t", t)
    assert not (tmp_path / "t").exists()


# ---- damaged or foreign files -------------------------------------------------------------------
def test_flipped_bytes_fail_the_sha256_check(written):
    path, _ = written
    f = _file_of(path, "rooms")
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=rf"{f.name} is damaged or modified: its sha256 is [0-9a-f]{{64}}"):
        load_tables(path)


def test_truncated_parquet_without_verify_is_a_format_error(written):
    path, _ = written
    f = _file_of(path, "city")
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(FormatError, match=rf"{f.name} is not a readable Parquet file .*truncated or damaged"):
        load_tables(path, verify=False)


def test_other_format_version_is_refused(written):
    path, _ = written
    m = json.loads((path / "manifest.json").read_text())
    m["format_version"] = 2
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(
        FormatError,
        match=r"manifest.json: embedding tables format_version 2, .* reads format_version 1; "
        r"upgrade embedkit",
    ):
        load_tables(path)


def test_missing_manifest_or_directory(tmp_path, written):
    path, _ = written
    with pytest.raises(FileNotFoundError, match="no embedding tables at"):
        load_tables(tmp_path / "nowhere")
    (path / "manifest.json").unlink()
    with pytest.raises(FormatError, match=r"has no manifest\.json; it is not an embedding tables directory"):
        load_tables(path)


def test_invalid_manifest_json(written):
    path, _ = written
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(FormatError, match=r"manifest\.json is not valid JSON"):
        load_tables(path)


def test_manifest_cannot_point_outside_the_directory(written):
    path, _ = written
    m = json.loads((path / "manifest.json").read_text())
    m["columns"][0]["file"] = "../secret.parquet"
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(
        FormatError, match=r"column 'city' names file '../secret.parquet' outside the directory"
    ):
        load_tables(path)


def test_missing_parquet_file(written):
    path, _ = written
    f = _file_of(path, "flag")
    f.unlink()
    with pytest.raises(
        FormatError, match=rf"{f.name} is missing \(listed in .*manifest.json for column 'flag'\)"
    ):
        load_tables(path)


def test_manifest_dim_must_match_the_file(written):
    path, _ = written
    m = json.loads((path / "manifest.json").read_text())
    m["columns"][1]["dim"] = 5
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(
        FormatError, match=r"column 'rooms'\): Parquet metadata embedkit.dim is '2' but the manifest"
    ):
        load_tables(path)


def _rewrite(path: Path, column: str, edit) -> None:
    """Rewrite one Parquet file through ``edit`` and fix its manifest sha256 (a consistent but wrong file)."""
    f = _file_of(path, column)
    pq.write_table(edit(pq.read_table(f)), f)
    m = json.loads((path / "manifest.json").read_text())
    for c in m["columns"]:
        if c["name"] == column:
            c["sha256"] = tables_mod.sha256_file(f)
    (path / "manifest.json").write_text(json.dumps(m))


def test_codes_out_of_order_are_refused(written):
    path, _ = written
    _rewrite(
        path, "city", lambda t: t.set_column(2, "code", pa.array(np.arange(t.num_rows)[::-1].astype("int32")))
    )
    with pytest.raises(FormatError, match=r"'code' must be int32 0, 1, 2, ... in row order"):
        load_tables(path)


def test_reserved_rows_must_be_in_place(written):
    path, _ = written
    kinds = ["unknown", "missing", "value", "value", "value"]
    _rewrite(path, "city", lambda t: t.set_column(1, "kind", pa.array(kinds)))
    with pytest.raises(
        FormatError, match=r"'kind' must be 'missing' \(code 0\), 'unknown' \(code 1\), then 'value'"
    ):
        load_tables(path)


def test_reserved_rows_have_null_categories(written):
    path, _ = written
    _rewrite(
        path, "city", lambda t: t.set_column(0, "category", pa.array(["x", None, "oslo", "paris", "rome"]))
    )
    with pytest.raises(FormatError, match=r"'category' must be null in the two reserved rows and only there"):
        load_tables(path)


def test_foreign_tables_without_kind_metadata_load(written):
    path, t = written
    _rewrite(path, "rooms", lambda tb: tb.replace_schema_metadata(None))
    assert load_tables(path)["rooms"] == t["rooms"]


# ---- encoding -----------------------------------------------------------------------------------
def _table_for(values: pd.Series, name: str = "c") -> EmbeddingTable:
    vocab = CategoryVocab.fit(name, values)
    return EmbeddingTable(vocab, np.arange(vocab.n_codes * 2, dtype=np.float32).reshape(-1, 2))


@pytest.mark.parametrize(
    ("train", "query"),
    [
        (pd.Series(["b", "a", None, "c"], dtype="str"), pd.Series(["a", "zz", None, "c", ""], dtype="str")),
        (pd.Series(["b", "a", "c"], dtype="str"), pd.Series(["a", "zz", None, "c"], dtype=object)),
        (pd.Series(["b", "a", "c"], dtype="str"), pd.Series(["a", "zz", None, "c"], dtype="string[python]")),
        (
            pd.Series(["b", "a", "c"], dtype="str"),
            pd.Series(["a", "zz", None], dtype=pd.ArrowDtype(pa.string())),
        ),
        (pd.Series(["b", "a", "c"], dtype="str"), pd.Series(["a", "q", None, "c"], dtype="category")),
        (pd.Series(["b", "a", "c"], dtype="str"), pd.Series([1, "a", 2.5], dtype=object)),
        (pd.Series(["1", "2"], dtype="str"), pd.Series([1, 2, 3], dtype="int64")),
        (pd.Series([3, 1, 2], dtype="int64"), pd.Series([1, 7, 3, -1], dtype="int32")),
        (pd.Series([3, 1, 2], dtype="int64"), pd.Series([1.0, 7.0, np.nan, 2.5], dtype="float64")),
        (pd.Series([3, 1, 2], dtype="int64"), pd.Series(["1", "x", None], dtype="str")),
        (pd.Series([3, 1, 2], dtype="int64"), pd.Series([3, 1, 9], dtype="uint16")),
        (pd.Series([True, False]), pd.Series([False, True, True])),
        (pd.Series([True, True]), pd.Series(["true", "False", None], dtype=object)),
        (
            pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02"])),
            pd.Series(pd.to_datetime(["2024-01-02", "2023-05-05", None])),
        ),
        (
            pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02"])),
            pd.Series(pd.to_datetime(["2024-01-02", "2024-01-01"]).as_unit("s")),
        ),
        (
            pd.Series(pd.to_datetime(["2024-01-01 10:00"])),
            pd.Series(pd.to_datetime(["2024-01-01 11:00"]).tz_localize("Europe/Paris")),
        ),
        (pd.Series(pd.to_datetime(["2024-01-01"])), pd.Series(["2024-01-01", "junk"], dtype="str")),
    ],
)
def test_fast_encode_agrees_with_the_vocabulary(train, query):
    table = _table_for(train)
    np.testing.assert_array_equal(table.encode(query), table.vocab.encode(query))


@pytest.mark.parametrize(
    ("train", "query", "expected"),
    [
        (pd.Series([3, 1, 2]), pd.Series([1, None, 7], dtype="Int64"), [2, MISSING, UNKNOWN]),
        (pd.Series([True, False]), pd.Series([True, None, False], dtype="boolean"), [3, MISSING, 2]),
        (pd.Series([3, 1, 2]), pd.Series([1, None, 2], dtype=pd.ArrowDtype(pa.int32())), [2, MISSING, 3]),
        (pd.Series(["a", "b"]), pd.Series([None, None], dtype=object), [MISSING, MISSING]),
        (pd.Series(["a", "b"]), pd.Series([], dtype="str"), []),
        (pd.Series(["a", "b"]), pd.Series([None, None], dtype="category"), [MISSING, MISSING]),
    ],
)
def test_fast_encode_handles_nullable_dtypes(train, query, expected):
    table = _table_for(train)
    np.testing.assert_array_equal(table.encode(query), expected)


def test_encode_is_independent_of_the_index_and_of_chunks():
    table = _table_for(pd.Series(["a", "b", "c"], dtype="str"))
    chunked = pd.concat([pd.Series(["c", None], dtype="str"), pd.Series(["a", "x"], dtype="str")])
    assert chunked.index.tolist() == [0, 1, 0, 1]
    np.testing.assert_array_equal(table.encode(chunked), [4, MISSING, 2, UNKNOWN])
    np.testing.assert_array_equal(table.encode(["b", None]), [3, MISSING])


def test_lookup_gives_missing_unknown_and_value_rows():
    table = _table_for(pd.Series(["a", "b"], dtype="str"))
    vecs = table.lookup(pd.Series(["b", None, "zzz"], dtype="str"))
    np.testing.assert_array_equal(vecs, table.weights[[3, MISSING, UNKNOWN]])
    assert vecs.dtype == np.float32 and vecs.shape == (3, 2)


def test_pickled_table_drops_its_caches():
    table = _table_for(pd.Series(["a", "b"], dtype="str"))
    table.encode(pd.Series(["a"], dtype="str"))
    table.gather_matrix(np.float64)
    clone = pickle.loads(pickle.dumps(table))
    assert clone == table and clone._gather == {} and clone._value_sets == {}
    gm = table.gather_matrix()
    assert gm.shape == (2, 5) and np.isnan(gm[:, -1]).all()


# ---- the format outside Python ------------------------------------------------------------------
def test_duckdb_join_on_category_gives_the_same_vectors(written):
    duckdb = pytest.importorskip("duckdb")
    from embedkit.transformer import EmbeddingTransformer

    path, t = written
    df = pd.DataFrame(
        {
            "city": pd.Series(["rome", None, "atlantis", "paris"], dtype="str"),
            "day": pd.to_datetime(["2024-01-02", "2024-03-04 10:30", None, "1999-01-01"], format="ISO8601"),
        }
    )
    et = EmbeddingTransformer(path, ["city", "day"], remainder="drop").fit(df)
    expected = et.transform(df)
    con = duckdb.connect()
    con.register("df", df.assign(i=np.arange(len(df))))
    parts = []
    for col in ("city", "day"):
        f = _file_of(path, col).as_posix()
        emb = ", ".join(f"e.emb_{i}" for i in range(t[col].dim))
        # value rows join on category; a missing value takes code 0, an unmatched one code 1 (unknown)
        rows = con.execute(
            f"""
            SELECT {emb}
            FROM df d
            LEFT JOIN read_parquet('{f}') v ON v.kind = 'value' AND v.category = d.{col}
            JOIN read_parquet('{f}') e
              ON e.code = CASE WHEN d.{col} IS NULL THEN 0 WHEN v.code IS NULL THEN 1 ELSE v.code END
            ORDER BY d.i
            """
        ).fetchnumpy()
        parts.append(np.column_stack(list(rows.values())))
    np.testing.assert_array_equal(np.hstack(parts).astype(np.float32), expected)
