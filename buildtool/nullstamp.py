"""The null-build stamp: a build (or `status`) whose every stage was up to date, remembered as
the stats its decisions depended on and what it printed, so that the next identical command
stats only those files and prints the same, without reading the workflow, records or plan.

It is written beside the compiled workflow (`<artifacts>/.compiled/<entry>.stamp`) after a
command in which every stage was up to date with its files exactly as recorded (no stats
moved, nothing rewritten), and holds:
- the compiled workflow's header (compiled.py): the Workflowfile's bytes and every fact its
  reading depended on, each checked again as a compiled hit checks it;
- the stats of dd-build's own loaded modules (an edit of dd-build in place is a miss);
- every file a decision read the stats of (each stage's record, code, inputs, imported project
  modules, batch files, outputs): size, mtime, ctime, inode and device, taken under the lock
  after the build and checked equal to what the decisions used (else no stamp);
- the identity of workflow.json and the planning index (a full path that would rewrite one of
  them is not a null build);
- each path question the planner asked the file system (a `package.module` callable's file, a
  glob's or a folder's files) with its answer, asked again;
- per command line (every option, the working folder, the output streams), what it printed,
  in order, and its exit code.

The next command with the same command line takes the lock as a build does (a build sweeping
after a killed one is a miss), checks all of the above and, when every fact holds, prints what
was printed. Any difference, a torn or other-version stamp, or anything it cannot tell: the full
path, which writes the stamp again. A stamp is never trusted over the files: it holds less than
the full path would look at only where what it holds implies the rest (an unchanged record file
is an unchanged record). Code outside the project (an installed package a stage imports) is
asked of the import system again, as the planner asks (external.py). Never used by a dry run
(which writes nothing, so it never stores its own output). `dd-build clean --all` removes it with the compiled workflow.
"""

from __future__ import annotations

import marshal
import os
import zlib
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import compiled

if TYPE_CHECKING:
    import argparse

    from .console import Console
    from .execute import Prepared
    from .model import Workflow
    from .report import BuildReport

FORMAT = 1
SUFFIX = ".stamp"
_MAGIC = "dd-build null-build stamp"
# Per file: size, mtime, ctime, inode, device.
_FIELDS = 5
# From this many files in a folder, they are stat'ed by name in the folder, open.
_BY_NAME_FROM = 4
# From this many files, a few threads stat them (a stat waits without the GIL: on 2 cores one
# thread's syscall overlaps another's Python), as probe.py does.
_THREADED_FROM = 16384
_THREADS = 2

# Environment variables a command's outcome depends on: the time zone (`status` prints local
# times); the Dask scheduler (daskexec.ENV: an address that is not one fails the build before
# it plans, whatever is up to date).
_ENVIRONMENT = ("TZ", "DD_BUILD_SCHEDULER")

Chunk = tuple[int, str]  # (1: stdout, 2: stderr; the text written)


# ---------------------------------------------------------------- the command line


def invocation(command: str, args: argparse.Namespace, out: Console) -> tuple[Any, ...]:
    """What, besides the files, a command's output depends on: every option (a new one too),
    the working folder, the output streams and their encodings, and the environment variables
    of _ENVIRONMENT."""
    streams = tuple(None if s is None else (s.encoding, s.errors) for s in (out.stdout, out.stderr))
    return (FORMAT, command, os.getcwd(), tuple(sorted((k, repr(v)) for k, v in vars(args).items())),
            out.live_ok, streams, tuple(os.environ.get(name) for name in _ENVIRONMENT))


def stamp_file(resolved: Path, display: str, artifacts: str) -> Path:
    return compiled.cache_file(resolved, display, artifacts).with_suffix(SUFFIX)


# ---------------------------------------------------------------- the fast path


def replay(path: Path, display: str, key: tuple[Any, ...], out: Console, *, lock: bool
           ) -> int | None:
    """Print what the stamp says this command printed, and return its exit code, when every
    fact in it holds; None (nothing printed, nothing changed) otherwise. `lock`: held while
    the files are checked, as a build holds it (BuildLocked as a build raises it)."""
    resolved = Path(path).resolve()
    try:
        data = resolved.read_bytes()
    except OSError:
        return None
    artifacts = compiled.artifacts_as_written(data)
    if artifacts is None:
        return None
    stamp = _read(stamp_file(resolved, display, artifacts))
    if stamp is None:
        return None
    header, code, name, root, extras, questions, groups, outcomes = stamp
    outcome = outcomes.get(key)
    if outcome is None or not compiled.header_holds(header, resolved, display, data) or \
            not _code_holds(code):
        return None
    out.workflow = name
    if not lock:
        return _played(outcome, out) if _files_hold(extras, questions, groups) else None
    from .lock import build_lock, sweep_pending

    with build_lock(Path(root)):
        if sweep_pending(Path(root)) or not _files_hold(extras, questions, groups):
            return None
        return _played(outcome, out)


def _code_holds(code: tuple[tuple[str, tuple[int, ...]], ...]) -> bool:
    try:
        return all(_identity(os.stat(origin)) == sig for origin, sig in code)
    except OSError:
        return False


def _files_hold(extras: tuple[Any, ...], questions: tuple[Any, ...],
                groups: tuple[Any, ...]) -> bool:
    for file, identity in extras:
        try:
            if _identity(os.stat(file)) != identity:
                return False
        except OSError:
            if identity is not None:
                return False
    if not _answers_hold(*questions):
        return False
    if sum(len(names) for _, names, _ in groups) < _THREADED_FROM or (os.cpu_count() or 1) < 2:
        return _groups_hold(groups)
    import threading

    parts = [groups[i::_THREADS] for i in range(_THREADS)]
    held = [False] * _THREADS

    def work(i: int) -> None:
        held[i] = _groups_hold(parts[i])

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(_THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return all(held)


def _groups_hold(groups: tuple[Any, ...]) -> bool:
    try:
        return all(_group_stats(folder, names) == stats for folder, names, stats in groups)
    except (OSError, OverflowError, ValueError):
        return False


def _group_stats(folder: str, names: tuple[str, ...]) -> bytes:
    """The packed stats of `names` in `folder` (OSError when one is missing)."""
    now: list[int] = []
    add = now.extend
    stat = os.stat
    if folder:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name in names:
                st = stat(name, dir_fd=fd)
                add((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
        finally:
            os.close(fd)
    else:  # names are full paths (folders of few files, in one group)
        for name in names:
            st = stat(name)
            add((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
    return array("q", now).tobytes()


def _answers_hold(project: str, callables: tuple[tuple[str, str | None], ...],
                  patterns: tuple[tuple[str, tuple[str, ...]], ...],
                  called: tuple[Any, ...], imported: tuple[Any, ...]) -> bool:
    """Each question the planner asked (of paths, of the import system) has the answer it
    had."""
    if (called or imported) and not _outside_holds(project, called, imported):
        return False
    if not callables and not patterns:
        return True
    from types import SimpleNamespace
    from typing import cast

    from .errors import BuildError
    from .fingerprint import callable_file, expand_glob

    workflow = cast("Workflow", SimpleNamespace(project_dir=Path(project)))
    try:
        return all(callable_file(workflow, text) == answer for text, answer in callables) and \
            all(tuple(expand_glob(Path(project), p)) == answer for p, answer in patterns)
    except (OSError, BuildError):
        return False


def _outside_holds(project: str, called: tuple[Any, ...], imported: tuple[Any, ...]
                   ) -> bool:
    """Code outside the project is found as it was (external.py: as the planner finds it)."""
    from .external import ExternalCode
    from .fingerprint import FileState

    external = ExternalCode(Path(project))
    try:
        for callables, known, found in called:
            now = external.states(callables, {k: FileState(*v) for k, v in known})
            if tuple(sorted((k, _plain(v)) for k, v in now.items())) != found:
                return False
        return all(_plain(external.imported(key, module, FileState(*known))) == now
                   for key, module, known, now in imported)
    except (OSError, ValueError, ImportError):
        return False


def _played(outcome: tuple[tuple[Chunk, ...], int], out: Console) -> int:
    from .console import _write

    chunks, code = outcome
    for stream, text in chunks:
        _write(out.stdout if stream == 1 else out.stderr, text, end="")
    return code


# ---------------------------------------------------------------- the full path's side


class Recorder:
    """While a command takes the full path: its output, taped, and the state its planning saw
    (`seen`); `finish` stores them when the command qualifies."""

    def __init__(self, path: Path, display: str, key: tuple[Any, ...], out: Console) -> None:
        self.path, self.display, self.key, self.out = path, display, key, out
        self.chunks: list[Chunk] = []
        self.state: tuple[Any, ...] | None = None
        self._streams = (out.stdout, out.stderr)
        out.stdout = _Taped.of(out.stdout, 1, self.chunks)
        out.stderr = _Taped.of(out.stderr, 2, self.chunks)

    def seen(self, prep: Prepared, report: BuildReport | None) -> None:
        """The planning behind the command's output (and the build's report, for a build)."""
        try:
            self.state = collect(prep, report)
        except OSError:
            self.state = None

    def finish(self, code: int | None) -> None:
        """The command ended with exit `code` (None: by an exception): the streams untaped,
        and the stamp stored when every stage was up to date as recorded."""
        self.out.stdout, self.out.stderr = self._streams
        entry = compiled.last_entry()
        if code is None or self.state is None or entry is None or \
                self.out.live(make=False) is not None:
            return
        file, header = entry
        outcome = (tuple(_joined(self.chunks)), code)
        _store(file.with_suffix(SUFFIX), header, self.state, self.key, outcome)


class _Taped:
    """A text stream that keeps what is written to it."""

    def __init__(self, stream: TextIO, number: int, chunks: list[Chunk]) -> None:
        self._stream, self._number, self._chunks = stream, number, chunks

    @classmethod
    def of(cls, stream: TextIO | None, number: int, chunks: list[Chunk]) -> Any:
        return None if stream is None else cls(stream, number, chunks)

    def write(self, text: str) -> int:
        self._chunks.append((self._number, text))
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding …
        return getattr(self._stream, name)


def _joined(chunks: list[Chunk]) -> list[Chunk]:
    """Consecutive writes to one stream as one (the same bytes, in the same order)."""
    joined: list[Chunk] = []
    for stream, text in chunks:
        if joined and joined[-1][0] == stream:
            joined[-1] = (stream, joined[-1][1] + text)
        else:
            joined.append((stream, text))
    return joined


def collect(prep: Prepared, report: BuildReport | None) -> tuple[Any, ...] | None:
    """(workflow name, root, extras, questions, groups) of a planning in which every stage was
    up to date with its files as recorded, stat'ed now and found as the decisions saw them;
    None when it does not qualify or a file moved meanwhile."""
    index = prep.index
    if index is None or not _all_up_to_date(prep, report):
        return None
    wf = prep.workflow
    root = str(wf.artifacts_root)
    summary = os.path.join(root, "workflow.json")
    if report is not None:  # the full path of the next build would write nothing
        if index.changed or index.summary is None or _stat_identity(summary) != index.summary[0]:
            return None
    expected = _expected(prep)
    questions = _questions(prep)
    if expected is None or questions is None:
        return None
    questions = (*questions, *_outside(prep))
    groups = _groups(expected)
    if groups is None:
        return None
    extras = tuple((p, _stat_identity(p)) for p in (summary, str(index.path)))
    return wf.name, root, extras, questions, groups


def _all_up_to_date(prep: Prepared, report: BuildReport | None) -> bool:
    if report is not None and (not report.ok or report.internal or report.interrupted or
                               any(s.result != "up_to_date" for s in report.stages)):
        return False
    return [d.stage for d in prep.decisions] == prep.order and all(
        d.action == "up_to_date" and not d.reasons and d.step is None for d in prep.decisions)


# folder -> [(name, what the decision saw: (size, mtime), or a record file's identity)]
_Seen = dict[str, list[tuple[str, tuple[int, ...]]]]


def _expected(prep: Prepared) -> _Seen | None:
    """Every file the decisions read the stats of, by folder, with the (size, mtime) they
    saw; each record file with the identity its record was read by. None: a stage does not
    qualify."""
    from .external import is_external_key
    from .records import RECORD_NAME, batch_stats

    wf = prep.workflow
    project, artifacts = str(wf.project_dir), str(wf.artifacts_root)
    seen: _Seen = {}
    done: set[str] = set()  # a file many stages name (their code), once

    def add(path: str, expected: tuple[int, ...]) -> None:
        if path not in done:
            done.add(path)
            folder, _, name = path.rpartition(os.sep)
            seen.setdefault(folder, []).append((name, expected))

    for name in prep.order:
        facts = prep.facts[name]
        record = facts.record
        identity = prep.index.identity(name) if prep.index is not None else None
        if record is None or identity is None or facts.read.problem is not None or \
                facts.stats_moved or facts.damaged or facts.outputs_now or \
                record.status not in ("completed", "completed_empty"):
            return None
        add(os.path.join(artifacts, name, RECORD_NAME), identity)
        for states in (facts.code, facts.file_inputs, facts.discovered):
            for rel, state in states.items():
                if not is_external_key(rel):  # (code outside the project: _outside)
                    add(os.path.join(project, rel), (state.size, state.mtime_ns))
        _add_batches(seen, artifacts, batch_stats(record.batches))
        outputs = [record.output] if record.output and record.output.kind != "batches" else []
        for output in outputs + list(record.steps.values()):
            for state in output.files:
                add(os.path.join(project, state.path), (state.size, state.mtime_ns))
    return seen


def _add_batches(seen: _Seen, artifacts: str, stats: Any) -> None:
    """A record's batch files (each stage's own: none twice), by folder, as probe.py joins
    their paths (`artifacts/` + the file as recorded)."""
    folder: list[tuple[str, tuple[int, ...]]] = []
    last = None
    for file, size, mtime_ns in stats:
        where, _, name = file.rpartition("/")
        if where != last:
            last = where
            folder = seen.setdefault(artifacts + os.sep + where if where else artifacts, [])
        folder.append((name, (size, mtime_ns)))


def _outside(prep: Prepared) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The questions the planner asked the import system of code outside the project, with
    the answers the decisions used: (callables, the record's entries, the states found) of
    each stage whose callable names such a module, and (key, module, recorded state, state
    found) of each such module its code imported (external.py asks them again)."""
    from .external import is_external_key

    called: dict[tuple[Any, ...], None] = {}
    imported: dict[tuple[Any, ...], None] = {}
    for name in prep.order:
        facts = prep.facts[name]
        record = facts.record
        assert record is not None  # (_expected checked it)
        found = {k: _plain(v) for k, v in facts.code.items() if is_external_key(k)}
        if found:
            known = {k: _plain(v) for k, v in record.code.items() if is_external_key(k)}
            stage = prep.workflow.stages[name]
            called[(stage.callables, tuple(sorted(known.items())),
                    tuple(sorted(found.items())))] = None
        for key, dep in (record.discovered or {}).items():
            if is_external_key(key) and key in facts.discovered:
                imported[(key, dep.module, _plain(dep.state),
                          _plain(facts.discovered[key]))] = None
    return tuple(called), tuple(imported)


def _plain(state: Any) -> tuple[str, int, int, str]:
    return (state.path, state.size, state.mtime_ns, state.digest)


def _groups(seen: _Seen) -> tuple[tuple[str, tuple[str, ...], bytes], ...] | None:
    """Every file stat'ed now, by folder (folders of few files: by full paths, in one group),
    when each is as the decisions saw it."""
    few: tuple[list[str], list[int]] = ([], [])
    groups = []
    interned: dict[str, str] = {}  # a name many folders hold (batch-000000.parquet), once
    try:
        for folder, files in seen.items():
            by_name = len(files) >= _BY_NAME_FROM
            names = [interned.setdefault(n, n) if by_name else folder + os.sep + n
                     for n, _ in files]
            stats = _stats_seen(folder if by_name else "", names, [e for _, e in files])
            if stats is None:
                return None
            if by_name:
                groups.append((folder, tuple(names), array("q", stats).tobytes()))
            else:
                few[0].extend(names)
                few[1].extend(stats)
        if few[0]:
            groups.append(("", tuple(few[0]), array("q", few[1]).tobytes()))
    except OverflowError:  # a stat beyond 64 bits: no stamp
        return None
    return tuple(groups)


def _stats_seen(folder: str, names: list[str], expected: list[tuple[int, ...]]
                ) -> list[int] | None:
    """The stats of `names` (in `folder`, open, or full paths), when each file is as
    `expected` says: its (size, mtime), or its identity; None when one is not."""
    now: list[int] = []
    add = now.extend
    stat = os.stat
    fd = None
    try:
        if folder:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for name, want in zip(names, expected, strict=True):
            st = stat(name, dir_fd=fd)
            if len(want) == 2:
                if st.st_size != want[0] or st.st_mtime_ns != want[1]:
                    return None
            elif _identity(st) != want:
                return None
            add((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
    except OSError:
        return None
    finally:
        if fd is not None:
            os.close(fd)
    return now


def _questions(prep: Prepared) -> tuple[Any, ...] | None:
    """(project, callables, patterns): each question about paths the planner asks, answered
    now, when the answers are the ones the decisions used."""
    from .errors import BuildError
    from .fingerprint import callback_only_files, code_files
    from .model import CallableRef
    from .probe import file_inputs

    wf = prep.workflow
    asked = _Asked(wf)
    for name in prep.order:
        stage, facts = wf.stages[name], prep.facts[name]
        record = facts.record
        try:
            code = code_files(wf, stage, asked)
            inputs = file_inputs(wf, stage, asked.expand)
            callback = callback_only_files(wf, stage, asked)
        except BuildError:
            return None
        old = record.spec.get("on_success") if record is not None else None
        old_file = asked.callable_file(old) if isinstance(old, str) else None
        if old_file is not None and old_file not in code:
            callback |= {old_file}
        if set(code) != set(facts.code) or set(inputs) != set(facts.file_inputs) or \
                callback != facts.callback_code or \
                asked.callable_file(stage.on_success) != facts.callback_file:
            return None
    callables = []
    for text, answer in asked.callables.items():
        ref = CallableRef.parse(text) if text else None
        if ref is not None and not ref.is_file:  # a file reference's answer is its text
            callables.append((text, answer))
    patterns = tuple((p, tuple(found)) for p, found in asked.patterns.items())
    return str(wf.project_dir), tuple(callables), patterns


class _Asked:
    """fingerprint.Resolver that keeps each question and its answer."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.callables: dict[str | None, str | None] = {}
        self.patterns: dict[str, list[str]] = {}

    def callable_file(self, text: str | None) -> str | None:
        from .fingerprint import callable_file

        if text not in self.callables:
            self.callables[text] = callable_file(self.workflow, text)
        return self.callables[text]

    def expand(self, pattern: str) -> list[str]:
        from .fingerprint import expand_glob

        if pattern not in self.patterns:
            self.patterns[pattern] = expand_glob(self.workflow.project_dir, pattern)
        return self.patterns[pattern]


# ---------------------------------------------------------------- the file


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _stat_identity(path: str) -> tuple[int, ...] | None:
    try:
        return _identity(os.stat(path))
    except OSError:
        return None


def _code_now() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """dd-build's own source files with their stats: the code that planned and printed (all
    of them, whatever this command loaded, so that every command line shares one stamp)."""
    package = os.path.dirname(os.path.abspath(__file__))
    found = []
    for folder, dirs, files in os.walk(package):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                identity = _stat_identity(path)
                if identity is not None:
                    found.append((path, identity))
    return tuple(sorted(found))


def _store(file: Path, header: tuple[Any, ...], state: tuple[Any, ...], key: tuple[Any, ...],
           outcome: tuple[tuple[Chunk, ...], int]) -> None:
    """Add `outcome` under `key` to the stamp of `state` (a stamp of another state is
    replaced); written atomically, best effort."""
    code = _code_now()
    name, root, extras, questions, groups = state
    old = _read(file)
    outcomes: dict[tuple[Any, ...], Any] = {}
    if old is not None and old[:7] == (header, code, name, root, extras, questions, groups):
        outcomes = dict(old[7])
        if outcomes.get(key) == outcome:
            return
    outcomes[key] = outcome
    try:
        payload = marshal.dumps((header, code, name, root, extras, questions, groups, outcomes))
    except ValueError:
        return
    data = marshal.dumps((_MAGIC, FORMAT, zlib.crc32(payload), payload))
    compiled.write_entry(file, data)


def _read(file: Path) -> tuple[Any, ...] | None:
    """The stamp's content; None when it is missing, torn, garbled or of another format."""
    try:
        with open(file, "rb") as fh:
            data = fh.read()
        magic, fmt, crc, payload = marshal.loads(data)
        if magic != _MAGIC or fmt != FORMAT or not isinstance(payload, bytes) or \
                zlib.crc32(payload) != crc:
            return None
        content = marshal.loads(payload)
    except (OSError, ValueError, TypeError, EOFError):
        return None
    if not isinstance(content, tuple) or len(content) != 8 or not isinstance(content[7], dict):
        return None
    return content

