"""What a stage's code returns, made a pyarrow table that parquet can store, and its bytes.

`to_table` accepts the return values a stage may give and says, naming the code and the
column, what parquet could not store; `parquet_bytes` writes a table as a parquet file.
Imports pyarrow: import this module only where data is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import StageFailed
from .wording import counted

# What pyarrow raises when Python values cannot become Arrow values or a table cannot be stored.
CONVERT_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)
_RETURNS = "return a pyarrow.Table, RecordBatch, list[dict], dict[str, list] or pandas DataFrame"


def to_table(value: Any, where: str) -> pa.Table:
    """Accept a Table, RecordBatch, list of dicts, dict of lists or pandas DataFrame, and make
    sure parquet can store it. `where` names the code ("stages/x.py:make (batch 3)"); a
    StageFailed names it and the cause."""
    table = _as_table(value, where)
    if table.num_columns == 0 and table.num_rows:
        raise StageFailed(f"{where} returned {counted(table.num_rows, 'row')} with no columns",
                          hint="give each row at least one column")
    names = table.column_names
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise StageFailed(f"{where} returned two columns named '{twice}'",
                          hint="give every column its own name")
    unstorable = _unstorable(table.schema)
    if unstorable is not None:
        raise StageFailed(f"{where} returned {unstorable}",
                          hint="cast the column to a type parquet stores (a string, a number, "
                               "a struct, a list, a timestamp) before returning it")
    return table


def _as_table(value: Any, where: str) -> pa.Table:
    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    if isinstance(value, list):
        _check_rows(value, where)
        try:  # a struct array: every row's keys become columns (from_pylist keeps the first's)
            table = pa.Table.from_struct_array(pa.array(value)) if value else pa.table({})
        except CONVERT_ERRORS as exc:
            raise _unconvertible(where, exc, _diagnose_rows(value)) from exc
        _check_no_sets(table, lambda name: (row.get(name) for row in value), where)
        return table
    if isinstance(value, dict):
        _check_columns(value, where)
        try:
            table = pa.Table.from_pydict(value)
        except CONVERT_ERRORS as exc:
            raise _unconvertible(where, exc, _diagnose_columns(value)) from exc
        _check_no_sets(table, lambda name: iter(value[name]), where)
        return table
    if type(value).__name__ == "DataFrame" and hasattr(value, "to_dict"):
        try:
            return pa.Table.from_pandas(value, preserve_index=False)
        except CONVERT_ERRORS as exc:
            raise _unconvertible(where, exc, None) from exc
    raise StageFailed(f"{where} returned {kind_of(value)}", hint=_RETURNS)


def _check_no_sets(table: pa.Table, cells: Callable[[str], Iterator[Any]], where: str) -> None:
    """pyarrow stores a set as a list in its iteration order, which for strings changes from
    one process to the next: a rerun would give other bytes. Refused in a list column's cells."""
    for field in table.schema:
        if not pa.types.is_list(field.type):
            continue
        row = next((i for i, c in enumerate(cells(field.name))
                    if isinstance(c, (set, frozenset))), None)
        if row is not None:
            raise StageFailed(f"{where} returned a set in column '{field.name}' (row {row}), "
                              "whose order is not fixed", hint="return a sorted list instead")


def _check_rows(rows: list[Any], where: str) -> None:
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        raise StageFailed(f"{where} returned a list whose item {bad} is {kind_of(rows[bad])}, "
                          "not a dict (a list holds one dict per row)", hint=_RETURNS)


def _check_columns(columns: dict[Any, Any], where: str) -> None:
    lengths: dict[str, int] = {}
    for name, values in columns.items():
        if not isinstance(name, str):
            raise StageFailed(f"{where} returned a column named {name!r}, not a string",
                              hint="name every column with a string")
        try:
            if isinstance(values, (str, bytes, dict, set, frozenset)):
                raise TypeError
            lengths[name] = len(values)
        except TypeError:
            raise StageFailed(f"{where} returned column '{name}' as {kind_of(values)}, not a "
                              "list of values", hint=_RETURNS) from None
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"'{n}' has {k}" for n, k in lengths.items())
        raise StageFailed(f"{where} returned columns of different lengths: {shown}",
                          hint="give every column one value per row")


def _diagnose_rows(rows: list[dict[Any, Any]]) -> str | None:
    """Which key or column of `rows` pyarrow refused, found once a conversion has failed."""
    for i, row in enumerate(rows):
        for key in row:
            if not isinstance(key, str):
                return f"row {i} has the key {key!r}, not a string (a column name)"
    keys = dict.fromkeys(k for row in rows for k in row)
    return _diagnose_columns({k: [row.get(k) for row in rows] for k in keys}, in_rows=True)


def _diagnose_columns(columns: dict[str, Any], in_rows: bool = False) -> str | None:
    """The column pyarrow refused, and the first value it refuses on its own when there is
    one. Values of rows are converted as fields of a struct, as `_as_table` does (pyarrow
    converts some types, e.g. uuid.UUID, on their own but not inside a struct)."""
    for name, values in columns.items():
        def convert(vs: list[Any], name: str = name) -> Any:
            return pa.array([{name: v} for v in vs]) if in_rows else pa.array(vs)

        try:
            convert(values)
        except CONVERT_ERRORS as exc:
            return f"column '{name}': {_refused_value(values, convert) or first_line(exc)}"
    return None


def _refused_value(values: list[Any], convert: Callable[[list[Any]], Any]) -> str | None:
    """`row 3 holds a value of type uuid.UUID, which pyarrow cannot convert (extension)`: the
    first value pyarrow refuses on its own, or None (values refused only together: mixed
    types)."""
    for i, value in enumerate(values):
        try:
            convert([value])
        except CONVERT_ERRORS as exc:
            where, part = _innermost(value, "")
            kind = type(part)
            name = kind.__qualname__ if kind.__module__ == "builtins" else \
                f"{kind.__module__}.{kind.__qualname__}"
            at = f" at {where.lstrip('.')}" if where else ""
            return (f"row {i} holds a value of type {name}{at}, which pyarrow cannot convert "
                    f"({first_line(exc)})")
    return None


def _innermost(value: Any, path: str) -> tuple[str, Any]:
    """The part of a refused dict or list value that pyarrow refuses: (its path, itself)."""
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, part in items:
        try:
            pa.array([{"x": part}])  # as a field of a struct, as rows are converted
        except CONVERT_ERRORS:
            return _innermost(part, f"{path}.{key}" if isinstance(value, dict) else
                              f"{path}[{key}]")
    return path, value


def _unconvertible(where: str, exc: BaseException, detail: str | None) -> StageFailed:
    hint = ("integers must fit in 64 bits: store bigger ones as strings"
            if isinstance(exc, OverflowError) else
            "give each column values of one type: numbers, strings, bools, None, bytes, dates, "
            "lists or dicts of them")
    return StageFailed(f"{where} returned values pyarrow cannot convert to a table: "
                       f"{detail or first_line(exc)}", hint=hint)


def kind_of(value: Any) -> str:
    """`a list`, `an int`: a value's type in words, for error messages."""
    name = type(value).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_STORABLE: set[pa.Schema] = set()  # schemas already checked: batches mostly share one


def _unstorable(schema: pa.Schema) -> str | None:
    """What parquet cannot store of `schema` (a column and its type), or None. Writing an
    empty table asks the parquet writer itself, so it is right for every Arrow type."""
    if schema in _STORABLE:
        return None
    try:
        _write_parquet(schema.empty_table())
        if len(_STORABLE) < 256:
            _STORABLE.add(schema)
        return None
    except CONVERT_ERRORS as exc:
        first = exc
    for field in schema:
        try:
            _write_parquet(pa.schema([field]).empty_table())
        except CONVERT_ERRORS:
            return f"column '{field.name}' of type {field.type}, which parquet cannot store"
    return f"a table parquet cannot store: {first_line(first)}"


def _write_parquet(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue()


def parquet_buffer(table: pa.Table) -> pa.Buffer:
    """The table as a parquet file, in a buffer (no copy into `bytes`). StageFailed (the
    caller's stage fills in) when it cannot be stored; `to_table` has checked what the stage's
    code returns, so this is a last guard."""
    try:
        return _write_parquet(table)
    except CONVERT_ERRORS as exc:
        detail = _unstorable(table.schema) or first_line(exc)
        raise StageFailed(f"cannot store the table as parquet: {detail}") from exc


def parquet_bytes(table: pa.Table) -> bytes:
    """As `parquet_buffer`, as bytes."""
    return parquet_buffer(table).to_pybytes()
