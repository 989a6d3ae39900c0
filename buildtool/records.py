"""The stage record (`stage.json`): the source of truth. Read tolerantly, written atomically.

Every path in a record is relative: batch files to `<artifacts>/<workflow>/`, code, file
inputs and run outputs to the project folder.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar, get_args, overload

from .fingerprint import FORMAT_VERSION, FileState, digest_strings
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
    # What the batch's call could see that differs from batch to batch (growth.py): its
    # index, offset, size, seed rows, and num_records when its code read it. "" in a record
    # written before dd-build kept it: such a batch is never kept by a growth.
    key: str = ""
    # What its code read that the key holds: "num_records" (ctx.num_records), "seed" (the
    # whole seed, through ctx.inputs).
    reads: tuple[str, ...] = ()

    def state(self) -> FileState:
        return FileState(self.file, self.size, self.mtime_ns, self.digest)

    def to_json(self) -> dict[str, Any]:
        d = {"index": self.index, "file": self.file, "rows": self.rows, "bytes": self.size,
             "mtime_ns": self.mtime_ns, "digest": self.digest}
        if self.key:
            d["key"] = self.key
        if self.reads:
            d["reads"] = list(self.reads)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BatchEntry:
        return cls(int(d["index"]), str(d["file"]), int(d["rows"]), int(d["bytes"]),
                   int(d["mtime_ns"]), str(d["digest"]), str(d.get("key") or ""),
                   tuple(str(r) for r in d.get("reads") or ()))


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
    """One stage's record (`stage.json`): what its last attempt was built from and made."""

    stage: str
    status: RecordStatus
    kind: str
    spec: dict[str, Any]
    spec_fingerprint: str
    code: dict[str, FileState]
    file_inputs: dict[str, FileState]  # project-relative path -> state as consumed
    stage_inputs: dict[str, str]  # upstream stage name -> its output digest as consumed
    run_id: str
    batches: Sequence[BatchEntry] = ()  # a tuple, or PlainBatches from the planning index
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
    # The record's spec_fingerprint was found to be the fingerprint of its spec (when the
    # planning index made its entry): the planner need not hash the spec again.
    spec_checked: bool = False


def read_of(record: StageRecord, spec_checked: bool) -> RecordRead:
    """RecordRead(record=record, spec_checked=spec_checked), made without its frozen
    __init__ (see _made): the planning index gives one per stage on every null build."""
    return _made(RecordRead, {"record": record, "problem": None, "spec_checked": spec_checked})


def record_path(stage_dir: Path) -> Path:
    return stage_dir / RECORD_NAME


# What a record file was when it was read: (st_dev, st_ino, st_size, st_mtime_ns,
# st_ctime_ns). A record is replaced by a rename (a new inode), and an edit in place moves its
# ctime, which no one can set back: an equal identity is the same bytes (planindex.py).
FileIdentity = tuple[int, int, int, int, int]


def file_identity(st: os.stat_result) -> FileIdentity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_record(stage_dir: Path) -> RecordRead:
    """Never raises for bad content: an unreadable record means 'never built'."""
    return read_record_identified(stage_dir)[0]


def read_record_identified(stage_dir: Path) -> tuple[RecordRead, FileIdentity | None]:
    """The record, and the identity of the file it was read from (None when there is none).
    The identity is taken from the open file before reading it: a record replaced or edited
    after that has another identity, so a cache keyed by it never pairs old bytes with a new
    identity."""
    path = record_path(stage_dir)
    try:
        with open(path, "rb") as fh:
            identity = file_identity(os.fstat(fh.fileno()))
            raw = fh.read()
    except FileNotFoundError:
        return RecordRead(), None
    except OSError as exc:
        return RecordRead(problem=("record_unreadable",
                                   f"cannot read {RECORD_NAME}: {exc.strerror}")), None
    return _parse_record(stage_dir, raw), identity


def _parse_record(stage_dir: Path, raw: bytes) -> RecordRead:
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
    key = f', "key": {json.dumps(entry.key)}' if entry.key else ""
    read = f', "reads": {json.dumps(list(entry.reads))}' if entry.reads else ""
    return (f'{{"index": {entry.index}, "file": {json.dumps(entry.file)}, "rows": {entry.rows}, '
            f'"bytes": {entry.size}, "mtime_ns": {entry.mtime_ns}, '
            f'"digest": {json.dumps(entry.digest)}{key}{read}}}')


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


# ---------------------------------------------------------------- the plain form (planindex.py)
# A record as nested tuples, dicts, lists, scalars and bytes only (what `marshal` stores),
# made back into a record equal to the one it came from. Its batches stay plain (PlainBatches)
# until something other than the stat check looks at them.

class PlainBatches(Sequence[BatchEntry]):
    """A record's batches as the planning index holds them: the columns every null build
    stats (files; sizes and mtimes as int64 arrays, which load without making an int each)
    and the rest (indices, rows, digests) still marshalled, with the digest of all their
    digests. A BatchEntry is made only when one is looked at."""

    __slots__ = ("_entries", "digest", "files", "mtimes", "rest", "sizes")

    def __init__(self, files: tuple[str, ...], sizes: bytes, mtimes: bytes, rest: bytes,
                 digest: str) -> None:
        self.files, self.rest, self.digest = files, rest, digest
        self.sizes, self.mtimes = array("q", sizes), array("q", mtimes)
        if not len(files) == len(self.sizes) == len(self.mtimes):
            raise ValueError("batch columns of different lengths")
        self._entries: tuple[BatchEntry, ...] | None = None

    @classmethod
    def of(cls, batches: Sequence[BatchEntry]) -> PlainBatches:
        """OverflowError for a size or mtime beyond 64 bits (such a record is not indexed)."""
        if isinstance(batches, PlainBatches):
            return batches
        return cls(tuple(b.file for b in batches),
                   array("q", [b.size for b in batches]).tobytes(),
                   array("q", [b.mtime_ns for b in batches]).tobytes(),
                   marshal.dumps((tuple(b.index for b in batches),
                                  tuple(b.rows for b in batches),
                                  tuple(b.digest for b in batches),
                                  tuple(b.key for b in batches),
                                  tuple(b.reads for b in batches))),
                   digest_strings([b.digest for b in batches]))

    def plain(self) -> tuple[Any, ...]:
        return (self.files, self.sizes.tobytes(), self.mtimes.tobytes(), self.rest, self.digest)

    def entries(self) -> tuple[BatchEntry, ...]:
        if self._entries is None:
            indices, rows, digests, keys, reads = marshal.loads(self.rest)
            if not len(indices) == len(rows) == len(digests) == len(keys) == len(reads) \
                    == len(self.files):
                raise ValueError("batch columns of different lengths")
            self._entries = tuple(map(BatchEntry, indices, self.files, rows, self.sizes,
                                      self.mtimes, digests, keys, reads))
        return self._entries

    def __len__(self) -> int:
        return len(self.files)

    @overload
    def __getitem__(self, i: int) -> BatchEntry: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[BatchEntry, ...]: ...

    def __getitem__(self, i: int | slice) -> BatchEntry | tuple[BatchEntry, ...]:
        return self.entries()[i]

    def __iter__(self) -> Iterator[BatchEntry]:
        return iter(self.entries())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PlainBatches):
            return self.plain() == other.plain()
        if isinstance(other, Sequence):
            return self.entries() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PlainBatches({self.entries()!r})"


def batch_stats(batches: Sequence[BatchEntry]) -> Iterable[tuple[str, int, int]]:
    """(file, size, mtime_ns) of each batch, without making a BatchEntry of a plain one."""
    if isinstance(batches, PlainBatches):
        return zip(batches.files, batches.sizes, batches.mtimes, strict=True)
    return [(b.file, b.size, b.mtime_ns) for b in batches]


def batches_digest(batches: Sequence[BatchEntry]) -> str:
    """The digest of the batches' digests, in order (what a batches output's digest is)."""
    if isinstance(batches, PlainBatches):
        return batches.digest
    return digest_strings([b.digest for b in batches])


def record_plain(r: StageRecord) -> tuple[Any, ...]:
    return (r.stage, r.status, r.kind, r.spec, r.spec_fingerprint, _states_plain(r.code),
            _states_plain(r.file_inputs), r.stage_inputs, r.run_id,
            PlainBatches.of(r.batches).plain(), r.batches_total, r.num_records,
            None if r.output is None else _output_plain(r.output),
            {k: _output_plain(v) for k, v in r.steps.items()}, r.started_at, r.finished_at,
            r.batches_run, r.error, r.journal, r.format, r.extra,
            None if r.discovered is None else
            {k: (_state_plain(d.state), d.by, d.module) for k, d in r.discovered.items()})


def record_from_plain(t: tuple[Any, ...]) -> StageRecord:
    """The record `record_plain` was made from. A form of another shape raises TypeError,
    ValueError, IndexError or KeyError (the caller reads the record file instead)."""
    (stage, status, kind, spec, fingerprint, code, files, stages, run_id, batches, total,
     num_records, output, steps, started, finished, run, error, journal, fmt, extra,
     discovered) = t
    return _made(StageRecord, {
        "stage": stage, "status": _status(status), "kind": kind, "spec": spec,
        "spec_fingerprint": fingerprint, "code": _states_from(code),
        "file_inputs": _states_from(files), "stage_inputs": stages, "run_id": run_id,
        "batches": PlainBatches(*batches), "batches_total": total, "num_records": num_records,
        "output": None if output is None else _output_from(output),
        "steps": {k: _output_from(v) for k, v in steps.items()}, "started_at": started,
        "finished_at": finished, "batches_run": run, "error": error, "journal": journal,
        "format": fmt, "extra": extra, "discovered": None if discovered is None else
        {k: Discovered(_state(s), by, module) for k, (s, by, module) in discovered.items()}})


_T = TypeVar("_T")


def _made(cls: type[_T], values: dict[str, Any]) -> _T:
    """An instance of the frozen dataclass `cls` with `values` as its fields, made as pickle
    and copy make one (no __init__: a frozen one sets each field through object.__setattr__,
    the most of what restoring a record from the index costs). `values` names every field:
    the round-trip tests compare every field of the records they make."""
    made = object.__new__(cls)
    made.__dict__.update(values)
    return made


def _state(t: tuple[str, int, int, str]) -> FileState:
    path, size, mtime_ns, digest = t
    return _made(FileState, {"path": path, "size": size, "mtime_ns": mtime_ns,
                             "digest": digest})


def _state_plain(f: FileState) -> tuple[str, int, int, str]:
    return (f.path, f.size, f.mtime_ns, f.digest)


def _states_plain(states: dict[str, FileState]) -> dict[str, tuple[str, int, int, str]]:
    return {k: _state_plain(v) for k, v in states.items()}


def _states_from(plain: dict[str, tuple[str, int, int, str]]) -> dict[str, FileState]:
    return {k: _state(v) for k, v in plain.items()}


def _output_plain(o: Output) -> tuple[Any, ...]:
    return (o.kind, o.rows, o.digest, tuple(_state_plain(f) for f in o.files), o.key)


def _output_from(t: tuple[Any, ...]) -> Output:
    kind, rows, digest, files, key = t
    return _made(Output, {"kind": kind, "rows": rows, "digest": digest,
                          "files": tuple(map(_state, files)), "key": key})
