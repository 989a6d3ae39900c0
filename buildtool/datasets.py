"""Reading data as pyarrow tables: seeds, stage outputs, data files and folders of parquet
files, their schemas unified, with errors that name the file and the stage to rebuild.

Imports pyarrow: import this module only where data is touched.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import StateError
from .fingerprint import folder_files
from .model import PARQUET, Workflow
from .outputs import tabular_files
from .records import StageRecord
from .tables import CONVERT_ERRORS, first_line

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
    detail = first_line(exc)
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
    except CONVERT_ERRORS as exc:
        detail = _clash(parts) or f"their schemas cannot be unified: {first_line(exc)}"
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
            except CONVERT_ERRORS:
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


def seed_indices(seed_rows: int, offset: int, size: int, order: list[int] | None) -> list[int]:
    """Row indices of one batch's seed rows: in order, cycling when more are asked than exist."""
    picks = [(offset + k) % seed_rows for k in range(size)]
    return [order[i] for i in picks] if order is not None else picks
