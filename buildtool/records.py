"""The stage record (`stage.json`): the source of truth. Read tolerantly, written atomically.

Every path in a record is relative: batch files to `<artifacts>/<workflow>/`, code, file
inputs and run outputs to the project folder.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

from .fingerprint import FORMAT_VERSION, FileState
from .fsutil import atomic_write_bytes

if TYPE_CHECKING:
    from .reasons import ReasonCode

RECORD_NAME = "stage.json"
# A record's `status`: done (its output stands) or resumable (the next build runs it again).
DoneStatus = Literal["completed", "completed_empty", "skipped_empty_upstream"]
ResumableStatus = Literal["running", "interrupted", "failed"]
RecordStatus = DoneStatus | ResumableStatus
DONE_STATUSES: tuple[DoneStatus, ...] = get_args(DoneStatus)
RESUMABLE_STATUSES: tuple[ResumableStatus, ...] = get_args(ResumableStatus)
RECORD_STATUSES: tuple[RecordStatus, ...] = DONE_STATUSES + RESUMABLE_STATUSES
DISCOVERED_LINE = "discovered"  # a journal line of modules found, not a batch
# The mtime a journal line gives a batch not yet known to be durable: no file has it, so every
# reader checks the file's content digest before it keeps the batch (see stagerun.py).
UNSYNCED_MTIME_NS = 0


class BatchEntry(NamedTuple):
    """One finished batch. A NamedTuple: a null build reads one per batch file, so it must be
    cheap to build."""

    # Shadows tuple.index, which nothing calls on a batch entry; mypy flags any such field.
    index: int  # type: ignore[assignment]
    file: str  # relative to <artifacts>/<workflow>/
    rows: int
    size: int
    mtime_ns: int
    digest: str

    def state(self) -> FileState:
        return FileState(self.file, self.size, self.mtime_ns, self.digest)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "file": self.file, "rows": self.rows, "bytes": self.size,
                "mtime_ns": self.mtime_ns, "digest": self.digest}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BatchEntry:
        return cls(int(d["index"]), str(d["file"]), int(d["rows"]), int(d["bytes"]),
                   int(d["mtime_ns"]), str(d["digest"]))


class Discovered(NamedTuple):
    """A module a stage's code imported while it ran (not a declared code file): its state as
    executed, and the project file whose code imported it (None when dd-build's own import of
    the stage's code did, e.g. the package of a `package.module:fn`). A project module is keyed
    by its relative path; a module outside the project by its fingerprint key (`dist:<name>`,
    `module:<name>`), with the name code imported it by in `module`, to find it again."""

    state: FileState
    by: str | None
    module: str | None = None

    def to_json(self) -> dict[str, Any]:
        extra = {} if self.module is None else {"module": self.module}
        return {**self.state.to_json(), "by": self.by, **extra}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Discovered:
        return cls(FileState.from_json(d), _optional(str, d.get("by")),
                   _optional(str, d.get("module")))


@dataclass(frozen=True)
class Output:
    """A stage's output, or one boundary step's. Kind "batches" means the record's batch files;
    every other kind lists its files, relative to the project folder (absolute only when a
    callback wrote outside the project)."""

    kind: str  # batches | processed | callback | override | files (run) | exports
    rows: int | None
    digest: str
    files: tuple[FileState, ...] = ()
    key: str | None = None  # a boundary step's identity: its spec and its input's digest

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "rows": self.rows, "digest": self.digest,
                "files": [f.to_json() for f in self.files], "key": self.key}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Output:
        files = tuple(FileState.from_json(f) for f in d.get("files", []))
        rows = d.get("rows")
        return cls(str(d["kind"]), None if rows is None else int(rows), str(d["digest"]), files,
                   d.get("key"))


@dataclass(frozen=True)
class StageRecord:
    stage: str
    status: RecordStatus
    kind: str
    spec: dict[str, Any]
    spec_fingerprint: str
    code: dict[str, FileState]
    file_inputs: dict[str, FileState]  # project-relative path -> state as consumed
    stage_inputs: dict[str, str]  # upstream stage name -> its output digest as consumed
    run_id: str
    batches: tuple[BatchEntry, ...] = ()
    batches_total: int | None = None
    num_records: int | None = None
    output: Output | None = None
    steps: dict[str, Output] = field(default_factory=dict)  # processed, callback, exports
    started_at: float | None = None
    finished_at: float | None = None
    batches_run: int = 0
    error: str | None = None
    journal: str | None = None
    format: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    # Project modules its code imported (relative path -> entry); None in a record written
    # before dd-build recorded them, so the planner knows they were never looked for.
    discovered: dict[str, Discovered] | None = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format, "stage": self.stage, "status": self.status, "kind": self.kind,
            "spec": self.spec, "spec_fingerprint": self.spec_fingerprint,
            "code": {k: v.to_json() for k, v in self.code.items()},
            "discovered": None if self.discovered is None else
            {k: v.to_json() for k, v in self.discovered.items()},
            "inputs": {
                "files": {k: v.to_json() for k, v in self.file_inputs.items()},
                "stages": dict(self.stage_inputs),
            },
            "run_id": self.run_id, "journal": self.journal,
            "num_records": self.num_records, "batches_total": self.batches_total,
            "batches": [b.to_json() for b in self.batches],
            "output": self.output.to_json() if self.output else None,
            "steps": {k: v.to_json() for k, v in self.steps.items()},
            "started_at": self.started_at, "finished_at": self.finished_at,
            "batches_run": self.batches_run, "error": self.error, "extra": self.extra,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StageRecord:
        inputs = d["inputs"]
        return cls(
            stage=str(d["stage"]), kind=str(d["kind"]),
            spec=dict(d["spec"]), spec_fingerprint=str(d["spec_fingerprint"]),
            code={k: FileState.from_json(v) for k, v in d["code"].items()},
            file_inputs={k: FileState.from_json(v) for k, v in inputs["files"].items()},
            stage_inputs={str(k): str(v) for k, v in inputs["stages"].items()},
            run_id=str(d["run_id"]), journal=None if d.get("journal") is None else str(d["journal"]),
            batches=tuple(BatchEntry.from_json(b) for b in d.get("batches", [])),
            batches_total=_optional(int, d.get("batches_total")),
            num_records=_optional(int, d.get("num_records")),
            output=Output.from_json(d["output"]) if d.get("output") else None,
            steps={str(k): Output.from_json(v) for k, v in (d.get("steps") or {}).items()},
            started_at=_optional(float, d.get("started_at")),
            finished_at=_optional(float, d.get("finished_at")),
            batches_run=int(d.get("batches_run", 0)), error=_optional(str, d.get("error")),
            format=int(d["format"]), extra=dict(d.get("extra") or {}),
            status=_status(str(d["status"])),  # last: any other problem is reported first
            discovered=None if d.get("discovered") is None else
            {str(k): Discovered.from_json(v) for k, v in d["discovered"].items()},
        )

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class _UnknownStatus(ValueError):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _status(value: str) -> RecordStatus:
    for status in RECORD_STATUSES:
        if value == status:
            return status
    raise _UnknownStatus(value)


def _optional(kind: type, value: Any) -> Any:
    """`value` as `kind`, or None; a value of another shape (e.g. a time as text) raises
    ValueError, so the record reads as unreadable instead of failing a later command."""
    if value is None:
        return None
    allowed = (str, int, float) if kind is str else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise ValueError(f"expected {kind.__name__}, got {value!r}")
    return kind(value)


@dataclass(frozen=True)
class RecordRead:
    """What reading a stage folder found: a record, nothing, or a problem (code, message)."""

    record: StageRecord | None = None
    problem: tuple[ReasonCode, str] | None = None


def record_path(stage_dir: Path) -> Path:
    return stage_dir / RECORD_NAME


def read_record(stage_dir: Path) -> RecordRead:
    """Never raises for bad content: an unreadable record means 'never built'."""
    path = record_path(stage_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return RecordRead()
    except OSError as exc:
        return RecordRead(problem=("record_unreadable", f"cannot read {RECORD_NAME}: {exc.strerror}"))
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return RecordRead(problem=("record_unreadable", f"{RECORD_NAME} is not valid JSON ({exc})"))
    if not isinstance(data, dict) or not isinstance(data.get("format"), int):
        return RecordRead(problem=("record_unreadable", f"{RECORD_NAME} has no record format"))
    if data["format"] != FORMAT_VERSION:
        return RecordRead(problem=(
            "format_changed",
            f"{RECORD_NAME} has record format {data['format']}; this dd-build reads {FORMAT_VERSION}",
        ))
    try:
        record = StageRecord.from_json(data)
    except _UnknownStatus as exc:
        return RecordRead(problem=("record_unreadable",
                                   f"{RECORD_NAME} has an unknown status {exc.status!r}"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return RecordRead(problem=("record_unreadable", f"{RECORD_NAME} is incomplete ({exc!r})"))
    if record.status == "running" and record.journal:
        record = _merge_journal(stage_dir / record.journal, record)
    return RecordRead(record=record)


def _merge_journal(path: Path, record: StageRecord) -> StageRecord:
    """The record plus its journal's lines, up to the first torn or garbled one: batches, and
    the modules its code imported that the record did not list yet (each written before the
    first batch that may have used them)."""
    by_index = {b.index: b for b in record.batches}
    discovered = dict(record.discovered or {})
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:  # missing, a folder, unreadable: the record's own batches stand
        lines = []
    for line in lines:
        try:
            data = json.loads(line)
            if isinstance(data, dict) and DISCOVERED_LINE in data:
                discovered.update({str(k): Discovered.from_json(v)
                                   for k, v in data[DISCOVERED_LINE].items()})
                continue
            entry = BatchEntry.from_json(data)
        except (ValueError, KeyError, TypeError, AttributeError):
            break
        by_index[entry.index] = entry
    return replace(record, batches=tuple(by_index[i] for i in sorted(by_index)),
                   discovered=dict(sorted(discovered.items())))


def write_record(stage_dir: Path, record: StageRecord) -> None:
    atomic_write_bytes(record_path(stage_dir), record_text(record).encode("utf-8"))


def record_text(record: StageRecord) -> str:
    """The record as indented JSON, each batch on one line: json's indenting encoder is pure
    Python, several times slower than its compact one, and a record may list 100k batches."""
    data = record.to_json()
    keys = list(data)
    at = keys.index("batches")  # neither first nor last
    head = json.dumps({k: data[k] for k in keys[:at]}, indent=1, ensure_ascii=False)
    tail = json.dumps({k: data[k] for k in keys[at + 1:]}, indent=1, ensure_ascii=False)
    batches = ",\n  ".join(batch_line(b) for b in record.batches)
    listed = f"[\n  {batches}\n ]" if batches else "[]"
    return f'{head[:-2]},\n "batches": {listed},\n{tail[2:]}\n'


class JournalWriter:
    """Appends lines to a running attempt's journal through one descriptor, kept open (a
    stage writes a line or two per batch). Each line is one write(2) on O_APPEND, so a kill
    leaves whole lines; nothing is fsynced here (stagerun.StageRun.sync makes lines durable)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def batch(self, entry: BatchEntry) -> None:
        """One line listing a batch; a later line for the same index replaces it (a batch is
        listed again, with its real mtime, once it is durable)."""
        self._write(batch_line(entry))

    def batches(self, entries: list[BatchEntry]) -> None:
        """A line for each batch, with one write(2) (a kill may cut it: the reader keeps the
        lines before the cut)."""
        if entries:
            self._write("\n".join(batch_line(e) for e in entries))

    def discovered(self, found: dict[str, Discovered]) -> None:
        """Modules the stage's code imported since the record or the journal last listed them."""
        self._write(json.dumps({DISCOVERED_LINE: {k: v.to_json() for k, v in found.items()}}))

    def _write(self, line: str) -> None:
        if self._file is None:
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (closed by close)
        data = (line + "\n").encode("utf-8")
        while data:  # a regular file takes it all at once, short of a full disk
            data = data[self._file.write(data):]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def batch_line(entry: BatchEntry) -> str:
    """`json.dumps(entry.to_json())`, built directly (a line per batch: the saving counts)."""
    return (f'{{"index": {entry.index}, "file": {json.dumps(entry.file)}, "rows": {entry.rows}, '
            f'"bytes": {entry.size}, "mtime_ns": {entry.mtime_ns}, '
            f'"digest": {json.dumps(entry.digest)}}}')


def journal_append(stage_dir: Path, journal: str, entry: BatchEntry) -> None:
    """One line listing a batch, appended on its own (JournalWriter.batch)."""
    writer = JournalWriter(stage_dir / journal)
    try:
        writer.batch(entry)
    finally:
        writer.close()


def journal_discovered(stage_dir: Path, journal: str, found: dict[str, Discovered]) -> None:
    """Modules found, appended on their own (JournalWriter.discovered)."""
    writer = JournalWriter(stage_dir / journal)
    try:
        writer.discovered(found)
    finally:
        writer.close()


def remove_leftovers(folder: str, keep_journal: str | None = None, journals: bool = True) -> None:
    """Best effort, one scandir: temp files, and journals other than `keep_journal`, that a
    killed build left directly in `folder`. A kill between a stage's final record and the
    removal of its journal leaves a journal beside a record that no longer names it; the stage
    is then up to date, so no later attempt of it would remove that journal. A plain string
    path: a build calls this once per stage, null builds included."""
    try:
        with os.scandir(folder) as it:
            stale = [e.path for e in it
                     if ((e.name[0] == "." and ".tmp." in e.name)
                         or (journals and e.name.startswith("journal-") and e.name != keep_journal))
                     and e.is_file(follow_symlinks=False)]
    except OSError:
        return
    for path in stale:
        with contextlib.suppress(OSError):
            os.unlink(path)
