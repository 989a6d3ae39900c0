"""Gather the planner's facts: records, file stats, and digests only where stats moved."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from itertools import starmap
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import WorkflowError
from .external import ExternalCode, is_external_key
from .facts import StageFacts, made_facts
from .fingerprint import (
    FileState,
    callable_file,
    callback_only_files,
    code_files,
    digest_file,
    expand_glob,
    stage_spec,
)
from .model import Stage, Workflow
from .records import RECORD_NAME, RecordRead, StageRecord, batch_stats, read_record

if TYPE_CHECKING:
    from .planindex import PlanIndex


def probe(workflow: Workflow, names: list[str], index: PlanIndex | None = None,
          kept: Kept | None = None) -> dict[str, StageFacts]:
    """The facts of each stage in `names`. Records come through `index` when one is given
    (the same records, read faster: planindex.py), else straight from their files. `kept`:
    filled with the stats the decisions read (for the null-build stamp)."""
    where = _Where(workflow, index)
    where.kept = kept
    root_fd = _open_folder(where.artifacts)
    try:
        reads = [where.read(name, root_fd) for name in names]
        if kept is not None:
            kept.add_records(where.artifacts, names, index)
        batches = _stat_batches(where.artifacts + os.sep, [r.record for r in reads], root_fd,
                                None if kept is None else kept.batches)
    finally:
        if root_fd is not None:
            os.close(root_fd)
    facts = {name: probe_stage(workflow, workflow.stages[name], where.external, where, read,
                               seen)
             for name, read, seen in zip(names, reads, batches, strict=True)}
    if kept is not None:
        where.kept = None  # no cycle: what the probe saw is freed with `kept`, not by the gc
        kept.where = where
        kept.whole = kept.whole and None not in kept.batches
    return facts


# A file's stats as a probe keeps them for the null-build stamp: (size, mtime_ns, ctime_ns,
# inode, device), packed as native int64s (`_packed`; struct.error beyond 64 bits), as the
# stamp packs them when it checks them again.
stat_fields = attrgetter("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino", "st_dev")
pack_fields = struct.Struct("5q").pack
# (folder, names in it, their packed stats); folder "": the names are full paths.
Packed = tuple[str, tuple[str, ...], bytes]


class Kept:
    """What a probe saw that its decisions read, kept for the null-build stamp (nullstamp.py)
    so that it stats no file again: each file's stats from the very stat a decision compared
    with the record (a file changed after it has other stats: the stamp then does not hold).
    The record files' identities are the index's (planindex.py), the project files' are in
    the probe's shared look (`where`), and so are the questions it asked of paths."""

    def __init__(self) -> None:
        # Each record's batch files (by folder or full paths), in record order; None: a
        # stat that cannot be packed (the stamp is then not written).
        self.batches: list[list[Packed] | None] = []
        self.outputs: list[tuple[str, os.stat_result]] = []  # output and step files
        # The questions asked of the import system about code outside the project, with
        # the answers used: (callables, the record's entries, found) and (key, module,
        # recorded state, found); states as (path, size, mtime_ns, digest).
        self.called: dict[tuple[object, ...], None] = {}
        self.imported: dict[tuple[object, ...], None] = {}
        # Each stage's record file and its stats, packed: the identity of the file the
        # planning index read the record from (or took its entry for), in stage order.
        self.records: tuple[list[str], list[bytes]] = ([], [])
        self.where: _Where | None = None  # the probe's shared look, once it is done
        # False when a stage was not found exactly as its completed record says (a record
        # missing, unreadable, not completed; a file's stats moved, a file missing or
        # changed), or a stat could not be kept (beyond 64 bits): then there is no stamp.
        self.whole = True

    def add_records(self, artifacts: str, names: list[str], index: PlanIndex | None) -> None:
        paths, stats = self.records
        folder = artifacts + os.sep
        try:
            for name in names:
                identity = index.identity(name) if index is not None else None
                if identity is None:
                    self.whole = False
                    return
                dev, ino, size, mtime_ns, ctime_ns = identity
                paths.append(f"{folder}{name}{os.sep}{RECORD_NAME}")  # os.path.join's
                stats.append(pack_fields(size, mtime_ns, ctime_ns, ino, dev))
        except struct.error:
            self.whole = False

    def stage_found(self, read: RecordRead, stats_moved: bool, outputs: _OutputCheck
                    ) -> None:
        """A stage's probe is done: whether it was found exactly as its record says."""
        record = read.record
        if record is None or read.problem is not None or stats_moved or outputs.damaged or \
                outputs.moved or record.status not in _COMPLETED:
            self.whole = False

    def project_files(self) -> tuple[list[tuple[str, tuple[int, ...]]], list[str]]:
        """Each project file stat'ed (code, inputs, imported modules) by full path: those
        found, with their stats, and those that were not there."""
        found: list[tuple[str, tuple[int, ...]]] = []
        missing: list[str] = []
        if self.where is not None:
            project = self.where.project
            for rel, seen in self.where.seen().items():
                if seen is _GONE:
                    missing.append(os.path.join(project, rel))
                else:
                    found.append((os.path.join(project, rel), seen))
        return found, missing

    def questions(self) -> tuple[str, dict[str | None, str | None], dict[str, list[str]]]:
        """(the project folder, each callable's file, each glob's files) as the probe found
        them."""
        assert self.where is not None  # (asked once the probe is done)
        return (self.where.project, *self.where.questions())

    def called_outside(self, callables: tuple[str, ...], known: dict[str, FileState],
                       found: dict[str, FileState]) -> None:
        known_outside = {k: v for k, v in known.items() if is_external_key(k)}
        self.called[(callables, _plain_states(known_outside), _plain_states(found))] = None

    def imported_outside(self, key: str, module: str | None, known: FileState,
                         found: FileState) -> None:
        self.imported[(key, module, plain_state(known), plain_state(found))] = None


_COMPLETED = frozenset(("completed", "completed_empty"))


def plain_state(state: FileState) -> tuple[str, int, int, str]:
    return (state.path, state.size, state.mtime_ns, state.digest)


def _plain_states(states: dict[str, FileState]) -> tuple[tuple[str, tuple[object, ...]], ...]:
    return tuple(sorted((k, plain_state(v)) for k, v in states.items()))


def _packed(found: list[os.stat_result]) -> bytes:
    """The stats of `found`, packed (struct.error: a value beyond 64 bits)."""
    return b"".join(starmap(pack_fields, map(stat_fields, found)))


_GONE = (-1, -1)  # the stats of a file that is not there


class _Where:
    """What every stage's probe shares: its folders as plain strings, the index, the finder
    of code outside the project, and what it found of the project's files. A probe is one
    look at the files: a file that 1,000 stages name (their code, a shared input) is stat'ed,
    and read when its stats moved, once; a glob or a callable is resolved once."""

    def __init__(self, workflow: Workflow, index: PlanIndex | None,
                 external: ExternalCode | None = None) -> None:
        self.workflow = workflow
        self.project = str(workflow.project_dir)
        self.artifacts = str(workflow.artifacts_root)
        self.index = index
        self.external = external if external is not None else ExternalCode(workflow.project_dir)
        # rel -> (size, mtime_ns, ctime_ns, inode, device), or _GONE
        self._seen: dict[str, tuple[int, ...]] = {}
        self._read: dict[str, FileState] = {}  # rel -> its state with the digest read now
        self._callables: dict[str | None, str | None] = {}
        self._globs: dict[str, list[str]] = {}
        self._code: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
        self._inside: set[tuple[str, ...]] = set()  # callables that name no code outside
        self.kept: Kept | None = None

    def read(self, name: str, root_fd: int | None = None) -> RecordRead:
        """The stage's record; `root_fd`: the artifacts folder, open (see _open_folder)."""
        stage_dir = os.path.join(self.artifacts, name)
        if self.index is not None:
            return self.index.read(name, stage_dir, root_fd)
        return read_record(Path(stage_dir))

    def callable_file(self, text: str | None) -> str | None:
        if text not in self._callables:
            self._callables[text] = callable_file(self.workflow, text)
        return self._callables[text]

    def expand(self, pattern: str) -> list[str]:
        """expand_glob's files (a list shared by every caller: never changed)."""
        found = self._globs.get(pattern)
        if found is None:
            found = self._globs[pattern] = expand_glob(self.workflow.project_dir, pattern)
        return found

    def code_files(self, stage: Stage) -> list[str]:
        """fingerprint.code_files (a list shared by every caller: never changed)."""
        key = (stage.callables, stage.code)
        found = self._code.get(key)
        if found is None:
            found = self._code[key] = code_files(self.workflow, stage, self)
        return found

    def outside(self, callables: tuple[str, ...], known: dict[str, FileState]
                ) -> dict[str, FileState]:
        """ExternalCode.states: none for callables that named no module outside the project
        before (whatever `known` is: it only helps to find such a module)."""
        if callables in self._inside:
            return {}
        found = self.external.states(callables, known)
        if not found:
            self._inside.add(callables)
        return found

    def states(self, paths: list[str], known: dict[str, FileState]
               ) -> tuple[dict[str, FileState], bool]:
        """Current states of `paths` (missing ones left out) and whether any stats moved.
        Equal stats keep the known state (and its digest); a file is read only when they
        differ."""
        states: dict[str, FileState] = {}
        moved = False
        for rel in paths:
            seen = self._seen.get(rel)
            if seen is None:
                try:
                    seen = stat_fields(os.stat(os.path.join(self.project, rel)))
                except FileNotFoundError:
                    seen = _GONE
                self._seen[rel] = seen
            if seen is _GONE:
                continue
            was = known.get(rel)
            if was is not None and was.size == seen[0] and was.mtime_ns == seen[1]:
                states[rel] = was
                continue
            states[rel] = self._digested(rel, seen)
            moved = moved or was is not None
        return states, moved

    def questions(self) -> tuple[dict[str | None, str | None], dict[str, list[str]]]:
        """The answers it gave: each callable's file, each glob's files."""
        return self._callables, self._globs

    def seen(self) -> dict[str, tuple[int, ...]]:
        """Each project file stat'ed (by project-relative path): its stats, _GONE when it
        was not there."""
        return self._seen

    def _digested(self, rel: str, seen: tuple[int, ...]) -> FileState:
        state = self._read.get(rel)
        if state is None:
            full = Path(self.project, rel)
            state = self._read[rel] = FileState(rel, seen[0], seen[1], digest_file(full))
        return state


def probe_stage(workflow: Workflow, stage: Stage, external: ExternalCode,
                where: _Where | None = None, read: RecordRead | None = None,
                batches: _BatchStats | None = None) -> StageFacts:
    """One stage's facts; `read` and `batches` when the caller read its record and stat'ed
    its batch files already."""
    where = where or _Where(workflow, None, external)
    read = read or where.read(stage.name)
    record = read.record
    spec, fingerprint = stage_spec(stage)
    code_paths = where.code_files(stage)
    code, code_moved = where.states(code_paths, record.code if record else {})
    if len(code) != len(code_paths):
        raise _missing_code(stage, sorted(set(code_paths) - set(code))[0])
    outside = where.outside(stage.callables, record.code if record else {})
    if outside:
        if where.kept is not None:
            where.kept.called_outside(stage.callables, record.code if record else {}, outside)
        code_moved = code_moved or any(record is not None and k in record.code and
                                       v != record.code[k] for k, v in outside.items())
        code.update(outside)
    files, inputs_moved = where.states(file_inputs(workflow, stage, where.expand),
                                       record.file_inputs if record else {})
    discovered, imports_moved = _discovered(where, record, external)
    outputs = _OutputCheck(where)
    if record is not None:
        if batches is None:
            batches = _stat_batches(where.artifacts + os.sep, [record])[0]
        outputs.check_record(record, batches)
    stats_moved = code_moved or inputs_moved or imports_moved or bool(outputs.moved)
    if where.kept is not None:
        where.kept.stage_found(read, stats_moved, outputs)
    return made_facts({
        "name": stage.name, "kind": stage.kind, "spec": spec, "fingerprint": fingerprint,
        "code": code, "file_inputs": files, "discovered": discovered, "read": read,
        "damaged": outputs.damaged, "outputs_now": outputs.moved, "file_groups": outputs.groups,
        "callback_code": callback_only_files(workflow, stage, where) | _old_callback_file(
            where, record, code_paths),
        "callback_file": where.callable_file(stage.on_success),
        "stats_moved": stats_moved,
    })


# A record's batch files whose stats differ from the recorded ones, in batch order, with
# their stats now (None: missing).
_BatchStats = list[tuple[str, os.stat_result | None]]
# From this many batch files on, they are stat'ed by a few threads, each through its full
# path: a stat waits on the kernel without the GIL, so two threads overlap one's syscall
# with the other's Python. Measured on 2 cores, a probe of 100k batch files: threads through
# full paths 0.25 s idle, 0.88 s at load 10; one thread by names in open folders 0.26 s and
# 0.98 s; threads by names 0.30 s and 0.78 s (their shorter syscalls hand the GIL over more
# often). Below it, one thread stats by names (_stat_record), with a fifth less CPU.
_THREADED_FROM = 16384
_THREADS = 4


def _stat_batches(root: str, records: list[StageRecord | None], root_fd: int | None = None,
                  kept: list[list[Packed] | None] | None = None) -> list[_BatchStats]:
    """Stat every batch file of every record: each one, on every build (an in-place edit of
    any of them is always seen). Only the stats: digests are the caller's, where they moved.
    `kept`: each record's stats are added to it, in record order (_stat_kept), by one thread
    (measured on 2 cores, 100k batch files: keeping them costs the threads twice what it
    costs one thread by names in open folders, which then takes as much CPU as the threads
    without keeping)."""
    if kept is not None:
        return [_stat_kept(root, r, root_fd, kept) for r in records]
    total = sum(len(r.batches) for r in records if r is not None)
    threads = min(_THREADS, os.cpu_count() or 1)
    if total < _THREADED_FROM or threads < 2:
        return [_stat_record(root, r, root_fd) for r in records]
    import threading

    found: list[_BatchStats | None] = [None] * len(records)
    failed: list[BaseException] = []

    def work(start: int, end: int) -> None:
        try:
            for i in range(start, end):
                found[i] = _stat_record(root, records[i], by_name=False)
        except BaseException as exc:  # raised again in the caller's thread, below
            failed.append(exc)

    workers = [threading.Thread(target=work, args=span, daemon=True)
               for span in _spans(records, total, threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if failed:
        raise failed[0]
    return [f if f is not None else [] for f in found]


def _spans(records: list[StageRecord | None], total: int, parts: int
           ) -> list[tuple[int, int]]:
    """`records` cut into up to `parts` runs of about as many batch files each."""
    spans: list[tuple[int, int]] = []
    start = count = 0
    for i, record in enumerate(records):
        count += len(record.batches) if record is not None else 0
        if count * parts >= total * (len(spans) + 1) or i == len(records) - 1:
            spans.append((start, i + 1))
            start = i + 1
    return spans


def _stat_record(root: str, record: StageRecord | None, root_fd: int | None = None,
                 by_name: bool = True) -> _BatchStats:
    """The batch files of `record` whose stats differ from the recorded ones. `root_fd`: the
    folder `root` (the artifacts folder), open, or None: a file is stat'ed by its path from
    there (a shorter walk for the kernel than its full path). `by_name`: a record of many
    batch files may be stat'ed by names in their open folders (_stat_by_name)."""
    if record is None:
        return []
    if by_name and _DIR_FD and len(record.batches) >= _BY_NAME_FROM:
        return _stat_by_name(root, record)
    moved: _BatchStats = []
    stat = os.stat
    for file, size, mtime_ns in batch_stats(record.batches):
        try:
            # an absolute path (a record edited by hand) is joined as text, as it always was
            st = stat(root + file) if root_fd is None or file[:1] == "/" else \
                stat(file, dir_fd=root_fd)
        except (FileNotFoundError, NotADirectoryError):
            moved.append((file, None))
            continue
        if st.st_mtime_ns != mtime_ns or st.st_size != size:
            moved.append((file, st))
    return moved


# From this many batch files in a record, each is stat'ed by its name in its folder, held
# open (fstatat): the kernel does not walk the whole path again for each file, a fifth of a
# stat's cost here. Below it, opening the folder costs more than it saves.
_BY_NAME_FROM = 4


def _stat_by_name(root: str, record: StageRecord) -> _BatchStats:
    """_stat_record by names in open folders. The same files are stat'ed (following
    symlinks, as a stat of the full path does); a folder that cannot be opened, or a name
    that is no file name, is stat'ed through its full path."""
    moved: _BatchStats = []
    stat = os.stat
    current: str | None = None
    fd: int | None = None
    try:
        for file, size, mtime_ns in batch_stats(record.batches):
            folder, _, name = file.rpartition("/")
            if folder != current:
                if fd is not None:
                    os.close(fd)
                current, fd = folder, _open_folder(root + folder)
            try:
                st = stat(name, dir_fd=fd) if fd is not None and name else stat(root + file)
            except (FileNotFoundError, NotADirectoryError):
                moved.append((file, None))
                continue
            if st.st_mtime_ns != mtime_ns or st.st_size != size:
                moved.append((file, st))
    finally:
        if fd is not None:
            os.close(fd)
    return moved


def _stat_kept(root: str, record: StageRecord | None, root_fd: int | None,
               kept: list[list[Packed] | None]) -> _BatchStats:
    """_stat_record, each stat kept whole for the null-build stamp, added to `kept`: the
    batch files of a record of many (_BY_NAME_FROM) by folder, names in it, as _stat_by_name
    stats them; those of a record of few by their full paths, as _stat_record stats them.
    (Loops of their own: the plain ones pay nothing for keeping.)"""
    if record is None:
        kept.append([])
        return []
    moved: _BatchStats = []
    try:
        if len(record.batches) < _BY_NAME_FROM or not _DIR_FD:
            paths, found = _stat_paths_kept(root, record, root_fd, moved)
            packed = b"".join([pack_fields(*stat_fields(st)) for st in found])
            kept.append([("", tuple(paths), packed)])
            return moved
        # (folder, names in it, their stats) in order; folder None: the names are full paths
        runs: list[tuple[str | None, list[str], list[os.stat_result]]] = []
        _stat_by_name_kept(root, record, moved, runs)
        kept.append([("" if folder is None else root + folder, tuple(names), _packed(found))
                     for folder, names, found in runs if names])
    except struct.error:  # a stat beyond 64 bits
        kept.append(None)
    return moved


def _stat_paths_kept(root: str, record: StageRecord, root_fd: int | None, moved: _BatchStats
                     ) -> tuple[list[str], list[os.stat_result]]:
    """_stat_record's loop, with the full path and stats of each file found."""
    stat = os.stat
    paths: list[str] = []
    found: list[os.stat_result] = []
    for file, size, mtime_ns in batch_stats(record.batches):
        try:
            st = stat(root + file) if root_fd is None or file[:1] == "/" else \
                stat(file, dir_fd=root_fd)
        except (FileNotFoundError, NotADirectoryError):
            moved.append((file, None))
            continue
        if st.st_mtime_ns != mtime_ns or st.st_size != size:
            moved.append((file, st))
        paths.append(root + file)
        found.append(st)
    return paths, found


def _stat_by_name_kept(root: str, record: StageRecord, moved: _BatchStats,
                       runs: list[tuple[str | None, list[str], list[os.stat_result]]]
                       ) -> None:
    """_stat_by_name, each stat added to `runs` by folder (a file it stats by its full path,
    in a run of its own)."""
    stat = os.stat
    current: str | None = None
    fd: int | None = None
    names: list[str] = []
    found: list[os.stat_result] = []
    try:
        for file, size, mtime_ns in batch_stats(record.batches):
            folder, _, name = file.rpartition("/")
            if folder != current:
                if fd is not None:
                    os.close(fd)
                current, fd, names, found = folder, _open_folder(root + folder), [], []
                runs.append((folder, names, found))
            try:
                st = stat(name, dir_fd=fd) if fd is not None and name else stat(root + file)
            except (FileNotFoundError, NotADirectoryError):
                moved.append((file, None))
                continue
            if st.st_mtime_ns != mtime_ns or st.st_size != size:
                moved.append((file, st))
            if fd is None or not name:
                runs.append((None, [root + file], [st]))
                continue
            names.append(name)
            found.append(st)
    finally:
        if fd is not None:
            os.close(fd)


_DIR_FD = os.stat in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")


def _open_folder(path: str) -> int | None:
    """A descriptor of the folder at `path`; None when it cannot be opened (missing, not a
    folder, not readable) or the platform stats no name relative to a folder."""
    if not _DIR_FD:
        return None
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def _old_callback_file(where: _Where, record: StageRecord | None, code_paths: list[str]
                       ) -> frozenset[str]:
    """The file of the callback the record was built with, when no code of the stage uses it
    now: a callback removed or switched to another file changes the boundary steps only."""
    old = record.spec.get("on_success") if record is not None else None
    path = where.callable_file(old) if isinstance(old, str) else None
    return frozenset() if path is None or path in code_paths else frozenset({path})


def file_inputs(workflow: Workflow, stage: Stage,
                expand: Callable[[str], list[str]] | None = None) -> list[str]:
    """Project-relative paths of every file the stage's seed and inputs name, globs expanded
    (by `expand`, expand_glob's answers when given)."""
    paths: list[str] = []
    if (stage.seed is None or stage.seed.kind != "file") and \
            all(ref.kind != "file" for ref in stage.inputs):
        return paths  # stage inputs only (most stages): no dependencies to make
    for ref in stage.dependencies:
        if ref.kind != "file":
            continue
        matched = expand(ref.value) if expand else expand_glob(workflow.project_dir, ref.value)
        if not matched:
            key = "seed" if ref is stage.seed else "inputs"
            if (workflow.project_dir / ref.value).is_dir():
                raise stage.error(f"input '{ref.written}' is a folder with no file in it", key,
                                  "put the files in it, or name another folder or glob")
            raise stage.error(f"input '{ref.written}' matches no file", key,
                              "create the file, or fix the path or glob")
        if ref is stage.seed and (workflow.project_dir / ref.value).is_dir() and \
                not any(p.lower().endswith(".parquet") for p in matched):
            raise stage.error(f"seed folder '{ref.written}' holds no .parquet file", "seed",
                              "a seed folder is read as its .parquet files; name .csv or "
                              ".jsonl files with a glob instead (e.g. data/docs/*.csv)")
        paths.extend(matched)
    return sorted(set(paths))


def _discovered(where: _Where, record: StageRecord | None, external: ExternalCode
                ) -> tuple[dict[str, FileState], bool]:
    """The modules its code imported last time, as they are now: project files stats first;
    a module outside the project found again without importing it (its state's path is the
    key it has now: another one when it is, e.g., no longer installed)."""
    found = record.discovered or {} if record else {}
    if not found:
        return {}, False
    inside = [rel for rel in found if not is_external_key(rel)]
    states, moved = where.states(inside, {rel: found[rel].state for rel in inside})
    for key, dep in found.items():
        if is_external_key(key):
            now = external.imported(key, dep.module, dep.state)
            states[key] = now
            if where.kept is not None:
                where.kept.imported_outside(key, dep.module, dep.state, now)
            moved = moved or (now.path == key and now.digest == dep.state.digest
                              and now != dep.state)
    return states, moved


class _OutputCheck:
    """Checks every file a record lists, cheap first. Runs once per recorded file on every
    null build, so it works on plain strings: no Path objects, no per-file allocations
    unless something differs."""

    def __init__(self, where: _Where) -> None:
        self.artifacts = where.artifacts + os.sep
        self.project = where.project
        self.kept = where.kept
        self.damaged: dict[str, str] = {}  # path -> missing | modified
        self.moved: dict[str, FileState] = {}  # same content, new stats
        self.groups: dict[str, str] = {}  # non-batch path -> the output or step kind

    def check_record(self, record: StageRecord, batches: _BatchStats) -> None:
        recorded = {b.file: (b.size, b.digest) for b in record.batches} if batches else {}
        for file, st in batches:  # with the digests they were recorded with
            if st is None:
                self.damaged[file] = "missing"
            else:
                self._moved(self.artifacts + file, file, st, *recorded[file])
        outputs = [record.output] if record.output and record.output.kind != "batches" else []
        for out in outputs + list(record.steps.values()):
            for f in out.files:
                if f.path not in self.groups:
                    self.groups[f.path] = out.kind
                    full = os.path.join(self.project, f.path)
                    self._check(full, f.path, f.size, f.mtime_ns, f.digest)

    def _check(self, full: str, rel: str, size: int, mtime_ns: int, digest: str) -> None:
        try:
            st = os.stat(full)
        except (FileNotFoundError, NotADirectoryError):
            self.damaged[rel] = "missing"
            return
        if self.kept is not None:
            self.kept.outputs.append((full, st))
        if st.st_mtime_ns == mtime_ns and st.st_size == size:
            return
        self._moved(full, rel, st, size, digest)

    def _moved(self, full: str, rel: str, st: os.stat_result, size: int, digest: str) -> None:
        """Its stats differ from the recorded ones: modified, or the same content moved."""
        if st.st_size != size:
            self.damaged[rel] = "modified"
            return
        now = digest_file(Path(full))
        if now != digest:
            self.damaged[rel] = "modified"
        else:
            self.moved[rel] = FileState(rel, st.st_size, st.st_mtime_ns, now)


def _missing_code(stage: Stage, path: str) -> WorkflowError:
    return stage.error(f"code file {path} does not exist", stage.kind,
                       "fix the path before `:` in the callable reference")
