"""Parquet batches, selected outputs, seed tables and export formats. The only pyarrow user.

Import this module only where data is touched: it imports pyarrow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import BuildError, StageFailed, StateError
from .fsutil import atomic_write_bytes
from .model import Workflow
from .outputs import tabular_files
from .records import StageRecord

EXPORT_FORMATS = (".parquet", ".jsonl", ".csv")


def to_table(value: Any, where: str) -> pa.Table:
    """Accept a Table, RecordBatch, list of dicts, dict of lists or pandas DataFrame."""
    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    try:
        if isinstance(value, list):
            return pa.Table.from_pylist(value)
        if isinstance(value, dict):
            return pa.Table.from_pydict(value)
        if type(value).__name__ == "DataFrame" and hasattr(value, "to_dict"):
            return pa.Table.from_pandas(value, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise StageFailed(f"{where} returned rows pyarrow cannot convert: {exc}") from exc
    raise StageFailed(
        f"{where} returned {type(value).__name__}",
        hint="return a pyarrow.Table, RecordBatch, list[dict], dict[str, list] or pandas DataFrame",
    )


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# What pyarrow raises for a damaged, truncated or mismatched file (ArrowInvalid is a
# ValueError, ArrowIOError an OSError).
_READ_ERRORS = (pa.ArrowException, OSError, ValueError)


class UnreadableData(StateError):
    """A data file pyarrow cannot read: damaged, truncated, or not what its name says."""

    def __init__(self, path: Path, detail: str, owner: str | None = None) -> None:
        of = f" (the output of stage '{owner}')" if owner else ""
        hint = (f"rebuild it: dd-build --force {owner}" if owner else
                "replace the file, or rebuild the stage that wrote it: dd-build --force STAGE")
        super().__init__(f"cannot read {_shown(path)}{of}: {detail}", hint=hint)
        self.path = path
        self.detail = detail


def _unreadable(path: Path, exc: BaseException) -> UnreadableData:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if detail.startswith("Could not open") and "': " in detail:  # it repeats the path
        detail = detail.split("': ", 1)[1]
    return UnreadableData(path, detail)


def _shown(path: Path) -> str:
    """`path` relative to the working folder when it is inside it, else as it is."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


def read_parquet_files(paths: list[Path]) -> pa.Table:
    tables = []
    for p in paths:
        try:
            tables.append(pq.read_table(p))
        except _READ_ERRORS as exc:
            raise _unreadable(p, exc) from exc
    if not tables:
        return pa.table({})
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except _READ_ERRORS as exc:  # batch files whose schemas cannot be unified
        raise _unreadable(paths[0].parent, exc) from exc


def read_data_file(path: Path) -> pa.Table:
    """A parquet, csv or jsonl file, or a folder of parquet files."""
    if path.is_dir():
        return read_parquet_files(sorted(path.rglob("*.parquet")))
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
    raise BuildError(f"{path}: cannot read {suffix or 'a file without extension'} as a table",
                     hint="use a .parquet, .csv or .jsonl file")


def read_stage_table(workflow: Workflow, record: StageRecord) -> pa.Table | None:
    """A stage's selected output as one table; None when it is not tabular (a run stage's .md).

    StateError, naming the file and the stage to rebuild, when a file of it cannot be read.
    """
    files = tabular_files(workflow, record)
    if files is None:
        return None
    try:
        if record.output is not None and record.output.kind == "files":
            return read_data_file(files[0])
        return read_parquet_files(files)
    except UnreadableData as exc:
        raise UnreadableData(exc.path, exc.detail, record.stage) from exc


def export_bytes(table: pa.Table, path: Path) -> bytes:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return parquet_bytes(table)
    if suffix == ".jsonl":
        lines = (json.dumps(row, default=str, ensure_ascii=False) for row in table.to_pylist())
        return "".join(line + "\n" for line in lines).encode("utf-8")
    if suffix == ".csv":
        import pyarrow.csv as pcsv

        sink = pa.BufferOutputStream()
        pcsv.write_csv(table, sink)
        return sink.getvalue().to_pybytes()
    raise BuildError(f"cannot export to '{path.name}'",
                     hint=f"end the path with one of {', '.join(EXPORT_FORMATS)}")


def write_export(table: pa.Table, path: Path) -> None:
    atomic_write_bytes(path, export_bytes(table, path))


def seed_indices(seed_rows: int, offset: int, size: int, order: list[int] | None) -> list[int]:
    """Row indices of one batch's seed rows: in order, cycling when more are asked than exist."""
    picks = [(offset + k) % seed_rows for k in range(size)]
    return [order[i] for i in picks] if order is not None else picks


def format_rows(table: pa.Table, limit: int) -> str:
    """A plain text table of the first `limit` rows."""
    rows = table.slice(0, limit).to_pylist()
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
