"""Parquet batches, selected outputs, seed tables and export formats. The only pyarrow user.

Import this module only where data is touched: it imports pyarrow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import BuildError, StageFailed, StateError
from .fingerprint import folder_files
from .fsutil import atomic_write_bytes
from .model import DATA_SUFFIXES, PARQUET, Workflow
from .outputs import tabular_files
from .records import StageRecord

# What pyarrow raises when Python values cannot become Arrow values or a table cannot be stored.
_CONVERT_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)
_RETURNS = "return a pyarrow.Table, RecordBatch, list[dict], dict[str, list] or pandas DataFrame"


def to_table(value: Any, where: str) -> pa.Table:
    """Accept a Table, RecordBatch, list of dicts, dict of lists or pandas DataFrame, and make
    sure parquet can store it. `where` names the code ("stages/x.py:make (batch 3)"); a
    StageFailed names it and the cause."""
    table = _as_table(value, where)
    if table.num_columns == 0 and table.num_rows:
        raise StageFailed(f"{where} returned {table.num_rows} rows with no columns",
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
        except _CONVERT_ERRORS as exc:
            raise _unconvertible(where, exc, _diagnose_rows(value)) from exc
        _check_no_sets(table, lambda name: (row.get(name) for row in value), where)
        return table
    if isinstance(value, dict):
        _check_columns(value, where)
        try:
            table = pa.Table.from_pydict(value)
        except _CONVERT_ERRORS as exc:
            raise _unconvertible(where, exc, _diagnose_columns(value)) from exc
        _check_no_sets(table, lambda name: iter(value[name]), where)
        return table
    if type(value).__name__ == "DataFrame" and hasattr(value, "to_dict"):
        try:
            return pa.Table.from_pandas(value, preserve_index=False)
        except _CONVERT_ERRORS as exc:
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
        except _CONVERT_ERRORS as exc:
            return f"column '{name}': {_refused_value(values, convert) or _first_line(exc)}"
    return None


def _refused_value(values: list[Any], convert: Callable[[list[Any]], Any]) -> str | None:
    """`row 3 holds a value of type uuid.UUID, which pyarrow cannot convert (extension)`: the
    first value pyarrow refuses on its own, or None (values refused only together: mixed
    types)."""
    for i, value in enumerate(values):
        try:
            convert([value])
        except _CONVERT_ERRORS as exc:
            where, part = _innermost(value, "")
            kind = type(part)
            name = kind.__qualname__ if kind.__module__ == "builtins" else \
                f"{kind.__module__}.{kind.__qualname__}"
            at = f" at {where.lstrip('.')}" if where else ""
            return (f"row {i} holds a value of type {name}{at}, which pyarrow cannot convert "
                    f"({_first_line(exc)})")
    return None


def _innermost(value: Any, path: str) -> tuple[str, Any]:
    """The part of a refused dict or list value that pyarrow refuses: (its path, itself)."""
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, part in items:
        try:
            pa.array([{"x": part}])  # as a field of a struct, as rows are converted
        except _CONVERT_ERRORS:
            return _innermost(part, f"{path}.{key}" if isinstance(value, dict) else
                              f"{path}[{key}]")
    return path, value


def _unconvertible(where: str, exc: BaseException, detail: str | None) -> StageFailed:
    hint = ("integers must fit in 64 bits: store bigger ones as strings"
            if isinstance(exc, OverflowError) else
            "give each column values of one type: numbers, strings, bools, None, bytes, dates, "
            "lists or dicts of them")
    return StageFailed(f"{where} returned values pyarrow cannot convert to a table: "
                       f"{detail or _first_line(exc)}", hint=hint)


def kind_of(value: Any) -> str:
    """`a list`, `an int`: a value's type in words, for error messages."""
    name = type(value).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _first_line(exc: BaseException) -> str:
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
    except _CONVERT_ERRORS as exc:
        first = exc
    for field in schema:
        try:
            _write_parquet(pa.schema([field]).empty_table())
        except _CONVERT_ERRORS:
            return f"column '{field.name}' of type {field.type}, which parquet cannot store"
    return f"a table parquet cannot store: {_first_line(first)}"


def _write_parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def parquet_bytes(table: pa.Table) -> bytes:
    """The table as a parquet file. StageFailed (the caller's stage fills in) when it cannot be
    stored; `to_table` has checked what the stage's code returns, so this is a last guard."""
    try:
        return _write_parquet(table)
    except _CONVERT_ERRORS as exc:
        detail = _unstorable(table.schema) or _first_line(exc)
        raise StageFailed(f"cannot store the table as parquet: {detail}") from exc


# What pyarrow raises for a damaged, truncated or mismatched file (ArrowInvalid is a
# ValueError, ArrowIOError an OSError).
_READ_ERRORS = (pa.ArrowException, OSError, ValueError)


class UnreadableData(StateError):
    """A data file pyarrow cannot read: damaged, truncated, or not what its name says."""

    def __init__(self, path: Path, detail: str, owner: str | None = None,
                 fix: str | None = None) -> None:
        of = f" (the output of stage '{owner}')" if owner else ""
        hint = fix or (f"rebuild it: dd-build --force {owner}" if owner else
                       "replace the file, or rebuild the stage that wrote it: "
                       "dd-build --force STAGE")
        super().__init__(f"cannot read {_shown(path)}{of}: {detail}", hint=hint)
        self.path = path
        self.detail = detail
        self.fix = fix


_CLASH_FIX = "make the files agree on each column's type (or keep apart what does not belong together)"


def _unreadable(path: Path, exc: BaseException) -> UnreadableData:
    detail = _first_line(exc)
    if detail.startswith("Could not open") and "': " in detail:  # it repeats the path
        detail = detail.split("': ", 1)[1]
    return UnreadableData(path, detail)


def _shown(path: Path) -> str:
    """`path` relative to the working folder when it is inside it, else as it is."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


def concat_files(parts: list[tuple[Path, pa.Table]], where: Path) -> pa.Table:
    """The tables of several files as one (schemas unified permissively: int64 with double is
    double, a missing column is null). UnreadableData naming the column and the two files
    when their schemas cannot be unified."""
    if not parts:
        return pa.table({})
    if len(parts) == 1:
        return parts[0][1]
    try:
        return pa.concat_tables([t for _, t in parts], promote_options="permissive")
    except _CONVERT_ERRORS as exc:
        detail = _clash(parts) or f"their schemas cannot be unified: {_first_line(exc)}"
        raise UnreadableData(where, detail, fix=_CLASH_FIX) from exc


def _clash(parts: list[tuple[Path, pa.Table]]) -> str | None:
    """The first column whose type in one file cannot be unified with the types before it."""
    seen = UnifiedSchema()
    for path, table in parts:
        clash = seen.add(table.schema, _shown(path))
        if clash is not None:
            name, before, first, now = clash
            return f"column '{name}' is {before} in {first} but {now} in {_shown(path)}"
    return None


class UnifiedSchema:
    """The schema the readers unify parts to (`concat_files`: permissive promotion), grown
    one part at a time, with the part each column was first seen in."""

    def __init__(self) -> None:
        self.fields: dict[str, tuple[pa.Field, str]] = {}

    def add(self, schema: pa.Schema, where: str
            ) -> tuple[str, pa.DataType, str, pa.DataType] | None:
        """Merge `schema` in; or, when a column's type cannot be unified with its type so far,
        change nothing and return (column, type so far, part it was first seen in, new type)."""
        merged = {}
        for field in schema:
            if field.name not in self.fields:
                merged[field.name] = (field, where)
                continue
            before, first = self.fields[field.name]
            try:
                unified = pa.unify_schemas([pa.schema([before]), pa.schema([field])],
                                           promote_options="permissive")
            except _CONVERT_ERRORS:
                return field.name, before.type, first, field.type
            merged[field.name] = (unified.field(0), first)
        self.fields.update(merged)
        return None


def read_parquet_files(paths: list[Path], where: Path | None = None) -> pa.Table:
    """Parquet files as one table, in the order given; `where` names them in errors (default:
    the folder of the first)."""
    parts = []
    for p in paths:
        try:
            parts.append((p, pq.read_table(p)))
        except _READ_ERRORS as exc:
            raise _unreadable(p, exc) from exc
    return concat_files(parts, where or (paths[0].parent if paths else Path(".")))


def parquet_in(folder: Path) -> list[Path]:
    """The .parquet files under `folder`, recursively, in sorted path order (hidden files and
    `__pycache__` left out, as for a folder input's digests)."""
    return [folder.parent / rel for rel in folder_files(folder.parent, folder.name)
            if rel.lower().endswith(PARQUET)]


def read_data_file(path: Path) -> pa.Table:
    """A parquet, csv or jsonl file, or a folder of parquet files (read as one table)."""
    if path.is_dir():
        files = parquet_in(path)
        if not files:
            raise StateError(f"{_shown(path)} is a folder with no .parquet file in it",
                             hint="put its data there as .parquet files, or name .csv/.jsonl "
                                  "files with a glob")
        return read_parquet_files(files, path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            return pcsv.read_csv(path)
        if suffix == ".jsonl":
            import pyarrow.json as pjson

            return pjson.read_json(path)
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from exc
    raise StateError(f"{_shown(path)}: cannot read {suffix or 'a file without extension'} as "
                     "a table", hint="use a .parquet, .csv or .jsonl file")


def read_seed_files(project_dir: Path, pattern: str) -> pa.Table:
    """What a file seed names as one table: a file, the files a glob matches (in sorted path
    order), or a folder's .parquet files. Errors name the files by the seed as written."""
    from .fingerprint import expand_glob

    path = project_dir / pattern
    if path.is_dir():
        return read_data_file(path)
    parts = [(project_dir / p, read_data_file(project_dir / p))
             for p in expand_glob(project_dir, pattern)]
    return concat_files(parts, path)


def read_stage_table(workflow: Workflow, record: StageRecord) -> pa.Table | None:
    """A stage's selected output as one table; None when it is not tabular (a run stage's .md).

    A run stage's first output is read: a .parquet/.csv/.jsonl file, or every .parquet file of
    a folder (in sorted path order, schemas unified). StateError, naming the file and the stage
    to rebuild, when a file of it cannot be read.
    """
    files = tabular_files(workflow, record)
    if files is None:
        return None
    try:
        if len(files) == 1 and files[0].suffix.lower() != PARQUET:
            return read_data_file(files[0])
        where = None
        if record.output is not None and record.output.kind == "files":
            where = workflow.project_dir / record.spec["outputs"][0]
        return read_parquet_files(files, where)
    except UnreadableData as exc:
        raise UnreadableData(exc.path, exc.detail, record.stage, exc.fix) from exc


class CannotExport(BuildError):
    """A table that the export format cannot hold faithfully (exit 2 from `dd-build export`;
    an export copy turns it into a stage failure)."""


def export_bytes(table: pa.Table, path: Path) -> bytes:
    """The table in the format of `path`'s extension. CannotExport, naming the column, when
    the format cannot hold a column's values so that they read back the same."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return parquet_bytes(table)
    if suffix == ".jsonl":
        return _jsonl_bytes(table, path)
    if suffix == ".csv":
        return _csv_bytes(table, path)
    raise BuildError(f"cannot export to '{path.name}'",
                     hint=f"end the path with one of {', '.join(DATA_SUFFIXES)}")


_OTHER_FORMAT = "export to .parquet, which keeps every type, or convert the column in the stage"


def _refuse(path: Path, field: pa.Field, why: str, hint: str = _OTHER_FORMAT) -> CannotExport:
    return CannotExport(f"cannot export to {path.name}: column '{field.name}' ({field.type}) "
                        f"{why}", hint=hint)


def _json_refusal(t: pa.DataType) -> str | None:
    """Why JSON cannot hold values of type `t` so that pyarrow.json reads them back the same
    (given the original schema), or None. Numbers, strings, bools, nulls, and lists and structs
    of them are written as their JSON values; NaN and infinity are refused per value."""
    if pa.types.is_dictionary(t):
        return _json_refusal(t.value_type)
    if pa.types.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        if len(set(names)) < len(names):
            return "is a struct with two fields of one name, which a JSON object cannot hold"
        return next(filter(None, (_json_refusal(t.field(i).type) for i in range(t.num_fields))),
                    None)
    if _is_list(t):
        return _json_refusal(t.value_type)
    if (pa.types.is_null(t) or pa.types.is_boolean(t) or pa.types.is_integer(t)
            or pa.types.is_floating(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_string_view(t)):
        return None
    if _is_binary(t):
        return "holds bytes, which JSON has no type for"
    if pa.types.is_temporal(t):
        return "holds dates or times, which JSON has no type for (they would read back as " \
               "strings or numbers)"
    if pa.types.is_decimal(t):
        return "holds decimals, which JSON readers read back as floats, losing digits"
    if pa.types.is_map(t):
        return "is a map, which would read back as a list of pairs"
    return "has no JSON form that reads back as the same type"


def _is_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t))


def _is_binary(t: pa.DataType) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t))


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _jsonl_bytes(table: pa.Table, path: Path) -> bytes:
    names = table.column_names
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise CannotExport(f"cannot export to {path.name}: two columns are named '{twice}', "
                           "which a JSON object cannot hold", hint=_OTHER_FORMAT)
    for field in table.schema:
        why = _json_refusal(field.type)
        if why is not None:
            raise _refuse(path, field, why)
    try:
        lines = [json.dumps(row, ensure_ascii=False, allow_nan=False, default=_not_json)
                 for row in table.to_pylist()]
    except (ValueError, TypeError) as exc:  # NaN or infinity: not JSON
        raise _json_value_error(table, path, exc) from exc
    return "".join(line + "\n" for line in lines).encode("utf-8")


def _json_value_error(table: pa.Table, path: Path, exc: BaseException) -> CannotExport:
    for field in table.schema:
        try:
            json.dumps(table.column(field.name).to_pylist(), allow_nan=False, default=_not_json)
        except (ValueError, TypeError):
            return _refuse(path, field, "holds NaN or infinity, which JSON has no number for",
                           "export to .parquet, or replace them with null in the stage")
    return CannotExport(f"cannot export to {path.name}: {_first_line(exc)}", hint=_OTHER_FORMAT)


def _csv_bytes(table: pa.Table, path: Path) -> bytes:
    import pyarrow.csv as pcsv

    for field in table.schema:
        t = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if pa.types.is_nested(t):
            raise _refuse(path, field, "holds lists or records, and CSV holds only flat values",
                          "export to .parquet or .jsonl, or flatten the column with a "
                          "processor or in the stage")
        if _is_binary(t) or isinstance(t, pa.ExtensionType):
            raise _refuse(path, field, "holds bytes, which CSV cannot hold as text")
    sink = pa.BufferOutputStream()
    try:
        pcsv.write_csv(table, sink)
    except _CONVERT_ERRORS as exc:
        raise CannotExport(f"cannot export to {path.name}: {_first_line(exc)}",
                           hint=_OTHER_FORMAT) from exc
    return sink.getvalue().to_pybytes()


def write_export(table: pa.Table, path: Path) -> None:
    atomic_write_bytes(path, export_bytes(table, path))


def seed_indices(seed_rows: int, offset: int, size: int, order: list[int] | None) -> list[int]:
    """Row indices of one batch's seed rows: in order, cycling when more are asked than exist."""
    picks = [(offset + k) % seed_rows for k in range(size)]
    return [order[i] for i in picks] if order is not None else picks


def preview_rows(table: pa.Table, limit: int) -> list[dict[str, Any]]:
    """The first `limit` rows as Python values, for `show`. A column Python cannot hold (a
    timestamp past the year 9999) is shown as Arrow's text of it."""
    part = table.slice(0, limit)
    columns = [_python_values(column) for column in part.columns]
    return [{name: values[r] for name, values in zip(part.column_names, columns, strict=True)}
            for r in range(part.num_rows)]


def _python_values(column: pa.ChunkedArray) -> list[Any]:
    try:
        return column.to_pylist()
    except _CONVERT_ERRORS:
        try:
            return column.cast(pa.string()).to_pylist()
        except _CONVERT_ERRORS:
            return [f"<{column.type}>"] * len(column)


def format_rows(table: pa.Table, limit: int) -> str:
    """A plain text table of the first `limit` rows."""
    rows = preview_rows(table, limit)
    names = table.column_names
    cells = [[_cell(row.get(n)) for n in names] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any, width: int = 40) -> str:
    text = str(value).replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"
