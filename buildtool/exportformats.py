"""A table in an export format (.parquet, .jsonl, .csv), refused with the column named when
the format cannot hold its values so that they read back the same.

Imports pyarrow: import this module only where data is touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from .errors import WorkflowError
from .fsutil import atomic_write_bytes
from .model import DATA_SUFFIXES
from .tables import CONVERT_ERRORS, first_line, parquet_bytes


class CannotExport(WorkflowError):
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
    raise WorkflowError(f"cannot export to '{path.name}'",
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
    return CannotExport(f"cannot export to {path.name}: {first_line(exc)}", hint=_OTHER_FORMAT)


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
    except CONVERT_ERRORS as exc:
        raise CannotExport(f"cannot export to {path.name}: {first_line(exc)}",
                           hint=_OTHER_FORMAT) from exc
    return sink.getvalue().to_pybytes()


def write_export(table: pa.Table, path: Path) -> None:
    atomic_write_bytes(path, export_bytes(table, path))
