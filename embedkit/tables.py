"""Embedding tables: one learned vector per category, exported as Parquet lookup tables.

The on-disk format (see ``docs/formats.md``, "Embedding tables") is a directory holding ``manifest.json``
and one Parquet file per categorical column. Each Parquet file has one row per code of the column's
vocabulary, in code order:

==========  ===========================================================================================
column      content
==========  ===========================================================================================
category    the original value (string, int64, bool or timestamp); null in the two reserved rows
kind        ``"missing"`` (code 0), ``"unknown"`` (code 1), ``"value"`` (codes 2..)
code        int32, the row of the net's embedding matrix
count       int64, how often the value occurred in training (reserved rows: missing / unknown counts)
emb_0 ...   float32, one column per embedding dimension
==========  ===========================================================================================

The Parquet key-value metadata repeats ``embedkit.format_version``, ``embedkit.column``,
``embedkit.dim`` and adds ``embedkit.category_kind``. Timestamps are stored with microsecond unit
(what Spark and DuckDB read natively) unless a value needs nanoseconds.

The tables alone map raw values to vectors: :func:`load_tables` rebuilds each column's
:class:`~embedkit.preprocessing.CategoryVocab` from the Parquet file, so no Preprocessor (and no
torch) is needed at transform time.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pandas.api import types as ptypes

from ._io import atomic_dir, sha256_file, write_json_atomic
from ._version import __version__
from .exceptions import DataError, FormatError, NotFittedError
from .preprocessing import (
    KIND_BOOLEAN,
    KIND_INTEGER,
    KIND_STRING,
    KIND_TIMESTAMP,
    MISSING,
    N_RESERVED,
    UNKNOWN,
    CategoryVocab,
)

logger = logging.getLogger(__name__)

#: Version of the directory layout written by :func:`write_tables`; readers accept only this one.
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

ROW_MISSING = "missing"
ROW_UNKNOWN = "unknown"
ROW_VALUE = "value"
#: At most this many unknown values are named in the error of handle_unknown="error".
MAX_UNKNOWN_SHOWN = 5

_META_FORMAT = b"embedkit.format_version"
_META_COLUMN = b"embedkit.column"
_META_DIM = b"embedkit.dim"
_META_KIND = b"embedkit.category_kind"

_CATEGORY_TYPES = {
    KIND_STRING: pa.string(),
    KIND_INTEGER: pa.int64(),
    KIND_BOOLEAN: pa.bool_(),
}
_KINDS = (KIND_STRING, KIND_INTEGER, KIND_BOOLEAN, KIND_TIMESTAMP)


def _emb_name(i: int) -> str:
    return f"emb_{i}"


# ------------------------------------------------------------------------------------------------
# one column
# ------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class EmbeddingTable:
    """The vocabulary of one categorical column and its embedding matrix.

    Parameters
    ----------
    vocab : CategoryVocab
        Code layout: 0 = missing, 1 = unknown, 2.. = ``vocab.values`` in order.
    weights : array of shape (vocab.n_codes, dim)
        Row ``i`` is the vector of code ``i``; stored as float32.
    """

    vocab: CategoryVocab
    weights: np.ndarray
    # Caches for the fast paths (value sets per Arrow type, transposed weights per dtype); never
    # compared, printed or pickled.
    _value_sets: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)
    _gather: dict[Any, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        w = np.asarray(self.weights)
        if w.ndim != 2 or w.shape[1] < 1:
            raise DataError(
                f"embedding weights of column {self.vocab.name!r} must be a 2-D array (n_codes, dim) "
                f"with dim >= 1; got shape {w.shape}"
            )
        if w.shape[0] != self.vocab.n_codes:
            raise DataError(
                f"embedding weights of column {self.vocab.name!r} have {w.shape[0]} rows but its vocabulary "
                f"has {self.vocab.n_codes} codes ({len(self.vocab.values)} values + missing + unknown)"
            )
        self.weights = np.ascontiguousarray(w, dtype=np.float32)

    # -- properties ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.vocab.name

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])

    @property
    def n_codes(self) -> int:
        return int(self.weights.shape[0])

    # -- equality and pickling -------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EmbeddingTable):
            return NotImplemented
        return self.vocab == other.vocab and np.array_equal(self.weights, other.weights)

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_value_sets"] = {}
        state["_gather"] = {}
        state["vocab"] = CategoryVocab.from_dict(self.vocab.to_dict())  # drops the vocab's index cache
        return state

    def __repr__(self) -> str:
        return (
            f"EmbeddingTable(name={self.name!r}, kind={self.vocab.kind!r}, n_codes={self.n_codes}, "
            f"dim={self.dim})"
        )

    # -- look-ups --------------------------------------------------------------------------------
    def encode(self, values: pd.Series | Iterable[Any]) -> np.ndarray:
        """Codes (``np.intp``) of ``values``: the same result as ``vocab.encode``, but vectorised through
        Arrow hash look-ups for string, integer and timestamp columns (about 8x faster), and correct for
        nullable pandas dtypes holding ``pd.NA``."""
        s = values if isinstance(values, pd.Series) else pd.Series(values)
        return _encode(self, s)

    def lookup(self, values: pd.Series | Iterable[Any]) -> np.ndarray:
        """Vectors (float32, shape ``(len(values), dim)``) of raw values: missing values get the missing
        row, values not in the vocabulary the unknown row."""
        return np.take(self.weights, self.encode(values), axis=0)

    def apply_unknown(
        self, codes: np.ndarray, values: Any, column: str, mode: str, remedy: str
    ) -> np.ndarray:
        """The ``handle_unknown`` rule on ``codes`` (those of ``values`` in column ``column``): ``"value"``
        keeps them (unknown values get the unknown row); ``"return_nan"`` points unknown values at code
        ``n_codes`` (the NaN column of :meth:`gather_matrix`); ``"error"`` raises a :class:`DataError`
        naming the column and its first unknown values, followed by ``remedy`` (what the reader can do).
        Returns ``codes`` itself where nothing changes, else a changed copy."""
        if mode == "value":
            return codes
        unknown = codes == UNKNOWN
        if not unknown.any():
            return codes
        if mode == "error":
            if isinstance(values, pd.Series):
                arr = values.to_numpy()
            elif isinstance(values, np.ndarray):
                arr = values
            else:
                arr = np.asarray(values, dtype=object)
            shown = pd.unique(arr[unknown])[:MAX_UNKNOWN_SHOWN].tolist()
            raise DataError(
                f"column {column!r} has {int(unknown.sum())} value(s) not in its embedding table (never "
                f"seen in training, or rarer than min_frequency), e.g. {shown}; {remedy}",
                columns=[column],
            )
        codes = codes.copy()
        codes[unknown] = self.n_codes
        return codes

    def to_frame(self) -> pd.DataFrame:
        """The table in its Parquet layout (``category``, ``kind``, ``code``, ``count``, ``emb_*``)."""
        return _to_arrow(self).to_pandas(types_mapper=_pandas_types)

    # -- caches ----------------------------------------------------------------------------------
    def _value_set(self, typ: pa.DataType) -> pa.Array:
        vs = self._value_sets.get(typ)
        if vs is None:
            vs = _category_array(self.vocab, with_reserved=False).cast(typ)
            self._value_sets[typ] = vs
        return vs

    def gather_matrix(self, dtype: Any = np.float32) -> np.ndarray:
        """The weights transposed, shape ``(dim, n_codes + 1)``, C-contiguous, with an extra last
        column of NaN (code ``n_codes`` gives NaN vectors). Cached; used by fast column-wise gathers."""
        dt = np.dtype(dtype)
        m = self._gather.get(dt)
        if m is None:
            m = np.empty((self.dim, self.n_codes + 1), dtype=dt)
            m[:, :-1] = self.weights.T
            m[:, -1] = np.nan
            self._gather[dt] = m
        return m


# ------------------------------------------------------------------------------------------------
# fast encoding
# ------------------------------------------------------------------------------------------------
def _is_nullable_ext(s: pd.Series) -> bool:
    return isinstance(s.dtype, pd.api.extensions.ExtensionDtype) and not isinstance(
        s.dtype, pd.CategoricalDtype | pd.DatetimeTZDtype
    )


def _as_arrow(s: pd.Series, kind: str) -> pa.Array | pa.ChunkedArray | None:
    """The values as an Arrow array of the vocabulary's kind when that costs no conversion of meaning
    (the rules of ``preprocessing._coerce``); None when the generic path must be taken."""
    dtype = s.dtype
    try:
        if kind == KIND_STRING:
            if isinstance(dtype, pd.StringDtype) or (
                isinstance(dtype, pd.ArrowDtype)
                and (pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype))
            ):
                return pa.array(s.array)
            if ptypes.is_object_dtype(dtype):
                arr = pa.array(s.to_numpy(), from_pandas=True)
                if (
                    pa.types.is_string(arr.type)
                    or pa.types.is_large_string(arr.type)
                    or pa.types.is_null(arr.type)
                ):
                    return arr
            return None
        if kind == KIND_INTEGER:
            if isinstance(dtype, np.dtype) and dtype.kind == "i":
                return pa.array(s.to_numpy().astype(np.int64, copy=False))
            if isinstance(dtype, np.dtype) and dtype.kind == "u" and dtype.itemsize < 8:
                return pa.array(s.to_numpy().astype(np.int64))
            if isinstance(dtype, pd.api.extensions.ExtensionDtype) and ptypes.is_integer_dtype(dtype):
                arr = pa.array(s.array)
                if pa.types.is_integer(arr.type) and arr.type != pa.uint64():
                    return arr.cast(pa.int64())
            return None
        if kind == KIND_TIMESTAMP:
            if isinstance(dtype, np.dtype) and dtype.kind == "M":
                return pa.array(s.to_numpy().astype("datetime64[ns]", copy=False))
            if isinstance(dtype, pd.DatetimeTZDtype):
                return pa.array(s.dt.tz_convert(None).to_numpy().astype("datetime64[ns]", copy=False))
            return None
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    return None


def _encode_arrow(table: EmbeddingTable, arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_null(arr.type):
        return np.full(len(arr), MISSING, dtype=np.intp)
    pos = pc.index_in(arr, value_set=table._value_set(arr.type))
    # not found -> null -> -1 -> code 1 (UNKNOWN); found at i -> code i + 2
    codes = np.asarray(pc.fill_null(pos, -1).to_numpy(zero_copy_only=False), dtype=np.intp) + N_RESERVED
    if arr.null_count:
        codes[np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = MISSING
    return codes


def _encode(table: EmbeddingTable, s: pd.Series) -> np.ndarray:
    vocab = table.vocab
    if isinstance(s.dtype, pd.CategoricalDtype):
        cat_codes = _encode(table, pd.Series(s.cat.categories))
        raw = s.cat.codes.to_numpy()
        return np.where(
            raw < 0, MISSING, cat_codes[np.maximum(raw, 0)] if len(cat_codes) else MISSING
        ).astype(np.intp)
    if vocab.kind == KIND_BOOLEAN and ptypes.is_bool_dtype(s.dtype) and isinstance(s.dtype, np.dtype):
        lut = np.asarray(vocab.encode(pd.Series([False, True])), dtype=np.intp)
        return lut[s.to_numpy().view(np.uint8)]
    arr = _as_arrow(s, vocab.kind)
    if arr is not None:
        return _encode_arrow(table, arr)
    # Generic path: vocab.encode. Nullable extension dtypes are encoded without their NA entries
    # (``_coerce`` cannot cast pd.NA).
    if _is_nullable_ext(s) and s.hasnans:
        missing = s.isna().to_numpy()
        out = np.full(len(s), MISSING, dtype=np.intp)
        if (~missing).any():
            out[~missing] = vocab.encode(s[~missing])
        return out
    return np.asarray(vocab.encode(s), dtype=np.intp)


# ------------------------------------------------------------------------------------------------
# Arrow conversion
# ------------------------------------------------------------------------------------------------
def _timestamp_type(vocab: CategoryVocab) -> pa.DataType:
    ns = pd.DatetimeIndex(pd.to_datetime(vocab.values, format="ISO8601")).as_unit("ns").asi8
    return pa.timestamp("us") if np.all(ns % 1000 == 0) else pa.timestamp("ns")


def _category_array(vocab: CategoryVocab, with_reserved: bool = True) -> pa.Array:
    pad: list[Any] = [None] * N_RESERVED if with_reserved else []
    if vocab.kind == KIND_TIMESTAMP:
        ts = pd.DatetimeIndex(pd.to_datetime(vocab.values, format="ISO8601")).as_unit("ns")
        typ = _timestamp_type(vocab)
        values = pa.array(ts.to_numpy(), type=pa.timestamp("ns")).cast(typ)
        if not with_reserved:
            return values
        return pa.concat_arrays([pa.nulls(N_RESERVED, typ), values])
    if vocab.kind not in _CATEGORY_TYPES:
        raise DataError(f"column {vocab.name!r} has an unknown category kind {vocab.kind!r}")
    return pa.array(pad + list(vocab.values), type=_CATEGORY_TYPES[vocab.kind])


def _to_arrow(table: EmbeddingTable) -> pa.Table:
    vocab = table.vocab
    n = table.n_codes
    kinds = [ROW_MISSING, ROW_UNKNOWN] + [ROW_VALUE] * (n - N_RESERVED)
    counts = [vocab.missing_count, vocab.unknown_count, *vocab.counts]
    wt = np.ascontiguousarray(table.weights.T)
    arrays = [
        _category_array(vocab),
        pa.array(kinds, type=pa.string()),
        pa.array(np.arange(n, dtype=np.int32)),
        pa.array(np.asarray(counts, dtype=np.int64)),
        *(pa.array(wt[i]) for i in range(table.dim)),
    ]
    names = ["category", "kind", "code", "count", *(_emb_name(i) for i in range(table.dim))]
    metadata = {
        _META_FORMAT: str(FORMAT_VERSION).encode(),
        _META_COLUMN: vocab.name.encode("utf-8"),
        _META_DIM: str(table.dim).encode(),
        _META_KIND: vocab.kind.encode(),
    }
    return pa.Table.from_arrays(arrays, names=names, metadata=metadata)


def _pandas_types(typ: pa.DataType) -> Any:
    if typ == pa.int64():
        return pd.Int64Dtype()
    if typ == pa.bool_():
        return pd.BooleanDtype()
    return None


# ------------------------------------------------------------------------------------------------
# all columns
# ------------------------------------------------------------------------------------------------
class EmbeddingTables(Mapping[str, EmbeddingTable]):
    """The embedding tables of a model: a read-only mapping ``column name -> EmbeddingTable`` in column
    order, with the provenance written to ``manifest.json``.

    Parameters
    ----------
    tables : mapping of name to EmbeddingTable, or iterable of EmbeddingTable
    source : str or None
        Where the tables come from (MLflow run id or model bundle path).
    created_at, embedkit_version : str or None
        Set by :func:`load_tables` from the manifest; ``embedkit_version`` defaults to this version.
    path : Path or None
        The directory the tables were loaded from.
    """

    def __init__(
        self,
        tables: Mapping[str, EmbeddingTable] | Iterable[EmbeddingTable],
        *,
        source: str | None = None,
        created_at: str | None = None,
        embedkit_version: str | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        items = list(tables.items()) if isinstance(tables, Mapping) else [(t.name, t) for t in tables]
        self._tables: dict[str, EmbeddingTable] = {}
        for name, table in items:
            if not isinstance(table, EmbeddingTable):
                raise DataError(f"tables[{name!r}] is a {type(table).__name__}, not an EmbeddingTable")
            if name != table.name:
                raise DataError(
                    f"the table stored under {name!r} is the table of column {table.name!r}; "
                    "key each table by its vocabulary's name"
                )
            if name in self._tables:
                raise DataError(f"column {name!r} has two embedding tables; keep one")
            self._tables[name] = table
        self.source = source
        self.created_at = created_at
        self.embedkit_version = embedkit_version or __version__
        self.path = Path(path) if path is not None else None

    def __deepcopy__(self, memo: dict[int, Any]) -> EmbeddingTables:
        # Tables are values: never modified once built. Sharing them keeps sklearn's clone() (which
        # deep-copies parameters, e.g. once per GridSearchCV candidate) from copying every weight.
        return self

    def __getitem__(self, name: str) -> EmbeddingTable:
        try:
            return self._tables[name]
        except KeyError:
            raise KeyError(
                f"no embedding table for column {name!r}; tables hold {list(self._tables)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    @property
    def dims(self) -> dict[str, int]:
        """Embedding width per column."""
        return {name: t.dim for name, t in self._tables.items()}

    def __repr__(self) -> str:
        cols = ", ".join(f"{n}({t.dim})" for n, t in list(self._tables.items())[:6])
        more = f", ... {len(self) - 6} more" if len(self) > 6 else ""
        src = f", source={self.source!r}" if self.source else ""
        return f"EmbeddingTables([{cols}{more}]{src})"


def tables_from_preprocessor(
    preprocessor: Any, weights: Mapping[str, np.ndarray], source: str | None = None
) -> EmbeddingTables:
    """Pair a fitted Preprocessor's vocabularies with embedding matrices.

    ``weights`` maps categorical column names (``preprocessor.cat_names_``) to arrays of shape
    ``(n_codes, dim)``. Columns without weights are left out; the order is the preprocessor's.
    """
    vocabs = getattr(preprocessor, "vocabs_", None)
    if vocabs is None:
        raise NotFittedError("the Preprocessor is not fitted yet; call fit(train_df) before exporting tables")
    unknown = [name for name in weights if name not in vocabs]
    if unknown:
        raise DataError(
            f"weights given for {unknown}, which are not categorical columns of the preprocessor "
            f"(those are {list(vocabs)})"
        )
    if not weights:
        raise DataError("no weights given; pass {column: array of shape (n_codes, dim)}")
    tables = [EmbeddingTable(vocabs[name], np.asarray(weights[name])) for name in vocabs if name in weights]
    return EmbeddingTables(tables, source=source)


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def _file_name(i: int, name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:60] or "column"
    return f"{i:03d}-{slug}.parquet"


def _write_parquet(table: EmbeddingTable, path: Path) -> None:
    pq.write_table(_to_arrow(table), path, compression="zstd")


def write_tables(
    path: str | os.PathLike[str],
    tables: Mapping[str, EmbeddingTable] | EmbeddingTables,
    source: str | None = None,
) -> Path:
    """Write the tables as a directory (``manifest.json`` + one Parquet file per column), atomically:
    everything is written to a temporary sibling which then replaces ``path``; a failure leaves the
    previous version (if any) untouched.

    ``source`` defaults to ``tables.source`` when ``tables`` is an :class:`EmbeddingTables`.
    Returns the directory.
    """
    if not isinstance(tables, EmbeddingTables):
        tables = EmbeddingTables(tables)
    if source is None:
        source = tables.source
    if len(tables) == 0:
        raise DataError("no embedding tables to write")
    for name, t in tables.items():
        if not np.isfinite(t.weights).all():
            raise DataError(
                f"the embedding of column {name!r} holds NaN or infinite values; refusing to write it "
                "(retrain, or restore the last good checkpoint)"
            )
    path = Path(path)
    with atomic_dir(path) as tmp:
        columns = []
        for i, (name, t) in enumerate(tables.items()):
            fname = _file_name(i, name)
            _write_parquet(t, tmp / fname)
            columns.append(
                {
                    "name": name,
                    "file": fname,
                    "dim": t.dim,
                    "rows": t.n_codes,
                    "sha256": sha256_file(tmp / fname),
                }
            )
        manifest = {
            "format_version": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "embedkit_version": __version__,
            "source": source,
            "columns": columns,
        }
        write_json_atomic(tmp / MANIFEST_NAME, manifest)
    logger.info("wrote %d embedding tables to %s", len(tables), path)
    return path


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def _read_manifest(path: Path) -> dict[str, Any]:
    mpath = path / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"no embedding tables at {path}")
    if not mpath.is_file():
        raise FormatError(f"{path} has no {MANIFEST_NAME}; it is not an embedding tables directory")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{mpath} is not valid JSON ({e}); the file is damaged") from e
    if not isinstance(manifest, dict):
        raise FormatError(f"{mpath} must hold a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        hint = (
            "upgrade embedkit" if isinstance(version, int) and version > FORMAT_VERSION else "re-export them"
        )
        raise FormatError(
            f"{mpath}: embedding tables format_version {version!r}, but this embedkit ({__version__}) reads "
            f"format_version {FORMAT_VERSION}; {hint}"
        )
    columns = manifest.get("columns")
    if not isinstance(columns, list) or not columns:
        raise FormatError(f"{mpath}: 'columns' must be a non-empty list of {{name, file, dim, rows, sha256}}")
    for entry in columns:
        if not isinstance(entry, dict) or not {"name", "file", "dim", "rows", "sha256"} <= set(entry):
            raise FormatError(f"{mpath}: column entry {entry!r} needs name, file, dim, rows and sha256")
        f = entry["file"]
        if not isinstance(f, str) or Path(f).name != f or f in ("", ".", ".."):
            raise FormatError(f"{mpath}: column {entry['name']!r} names file {f!r} outside the directory")
    return manifest


def _read_parquet(fpath: Path) -> pa.Table:
    try:
        return pq.read_table(fpath)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise FormatError(f"{fpath} is not a readable Parquet file ({e}); it is truncated or damaged") from e


def _meta(table: pa.Table, key: bytes) -> str | None:
    md = table.schema.metadata or {}
    v = md.get(key)
    return v.decode("utf-8") if v is not None else None


def _kind_of_type(typ: pa.DataType) -> str | None:
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return KIND_STRING
    if pa.types.is_integer(typ):
        return KIND_INTEGER
    if pa.types.is_boolean(typ):
        return KIND_BOOLEAN
    if pa.types.is_timestamp(typ):
        return KIND_TIMESTAMP
    return None


def _table_from_arrow(t: pa.Table, entry: dict[str, Any], fpath: Path) -> EmbeddingTable:
    name, dim, rows = entry["name"], entry["dim"], entry["rows"]

    def bad(msg: str) -> FormatError:
        return FormatError(f"{fpath} (column {name!r}): {msg}")

    for key, want in ((_META_FORMAT, str(FORMAT_VERSION)), (_META_COLUMN, name), (_META_DIM, str(dim))):
        got = _meta(t, key)
        if got is not None and got != want:
            raise bad(f"Parquet metadata {key.decode()} is {got!r} but the manifest says {want!r}")
    emb_names = [_emb_name(i) for i in range(dim)]
    expected = ["category", "kind", "code", "count", *emb_names]
    if t.column_names != expected:
        extra = [c for c in t.column_names if c not in expected]
        lacking = [c for c in expected if c not in t.column_names]
        raise bad(
            f"columns do not match the manifest's dim={dim} (missing {lacking[:5]}, unexpected {extra[:5]})"
        )
    if t.num_rows != rows or rows < N_RESERVED:
        raise bad(f"{t.num_rows} rows but the manifest says {rows} (at least {N_RESERVED} are reserved)")
    code = t.column("code")
    if code.type != pa.int32() or not np.array_equal(code.to_numpy(), np.arange(rows)):
        raise bad("'code' must be int32 0, 1, 2, ... in row order")
    kinds = t.column("kind").to_pylist()
    if kinds[:N_RESERVED] != [ROW_MISSING, ROW_UNKNOWN] or any(k != ROW_VALUE for k in kinds[N_RESERVED:]):
        raise bad("'kind' must be 'missing' (code 0), 'unknown' (code 1), then 'value'")
    cat = t.column("category")
    kind = _meta(t, _META_KIND) or _kind_of_type(cat.type)
    if kind not in _KINDS or _kind_of_type(cat.type) != kind:
        raise bad(f"category type {cat.type} does not hold category kind {kind!r}")
    if cat.slice(0, N_RESERVED).null_count != N_RESERVED or cat.slice(N_RESERVED).null_count:
        raise bad("'category' must be null in the two reserved rows and only there")
    counts = t.column("count")
    if not pa.types.is_integer(counts.type) or counts.null_count:
        raise bad("'count' must be a non-null integer column")
    counts_np = counts.to_numpy().astype(np.int64)
    weights = np.empty((rows, dim), dtype=np.float32)
    for i, c in enumerate(emb_names):
        col = t.column(c)
        if col.type != pa.float32() or col.null_count:
            raise bad(f"'{c}' must be non-null float32, got {col.type}")
        weights[:, i] = col.to_numpy()
    if not np.isfinite(weights).all():
        raise bad("embedding values hold NaN or infinity")
    values_arr = cat.slice(N_RESERVED)
    if kind == KIND_TIMESTAMP:
        idx = pd.DatetimeIndex(values_arr.to_pandas()).as_unit("ns")
        values: list[Any] = [ts.isoformat() for ts in idx]
    elif kind == KIND_INTEGER:
        values = [int(v) for v in values_arr.to_pylist()]
    elif kind == KIND_BOOLEAN:
        values = [bool(v) for v in values_arr.to_pylist()]
    else:
        values = [str(v) for v in values_arr.to_pylist()]
    if len(set(values)) != len(values):
        raise bad("'category' holds a value twice")
    vocab = CategoryVocab(
        name, kind, values, counts_np[N_RESERVED:].tolist(), int(counts_np[MISSING]), int(counts_np[UNKNOWN])
    )
    return EmbeddingTable(vocab, weights)


def load_tables(path: str | os.PathLike[str], verify: bool = True) -> EmbeddingTables:
    """Read a tables directory written by :func:`write_tables`.

    Checks the manifest's ``format_version``, each file's sha256 (when ``verify``), that every file is
    readable Parquet, that its reserved rows and codes are in place and that its width matches the
    manifest; any problem raises :class:`~embedkit.exceptions.FormatError` naming the file.
    Does not import torch.
    """
    path = Path(path)
    manifest = _read_manifest(path)
    tables = []
    seen: set[str] = set()
    for entry in manifest["columns"]:
        name = entry["name"]
        if name in seen:
            raise FormatError(f"{path / MANIFEST_NAME}: column {name!r} is listed twice")
        seen.add(name)
        fpath = path / entry["file"]
        if not fpath.is_file():
            raise FormatError(f"{fpath} is missing (listed in {path / MANIFEST_NAME} for column {name!r})")
        if verify:
            digest = sha256_file(fpath)
            if digest != entry["sha256"]:
                raise FormatError(
                    f"{fpath} is damaged or modified: its sha256 is {digest}, the manifest says "
                    f"{entry['sha256']}"
                )
        tables.append(_table_from_arrow(_read_parquet(fpath), entry, fpath))
    return EmbeddingTables(
        tables,
        source=manifest.get("source"),
        created_at=manifest.get("created_at"),
        embedkit_version=manifest.get("embedkit_version"),
        path=path,
    )
