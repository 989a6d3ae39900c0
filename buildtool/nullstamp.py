"""The null-build stamp: a build (or `status`) whose every stage was up to date, remembered as
the stats its decisions depended on and what it printed, so that the next identical command
stats only those files and prints the same, without reading the workflow, records or plan.

It is written beside the compiled workflow (`<artifacts>/.compiled/<entry>.stamp`) after a
command in which every stage was up to date with its files exactly as recorded (no stats
moved, nothing rewritten), and holds:
- the compiled workflow's header (compiled.py): the Workflowfile's bytes and every fact its
  reading depended on, each checked again as a compiled hit checks it;
- the stats of dd-build's own source files and folders (an edit of dd-build in place is a
  miss, and so is a module added or removed);
- every file a decision read the stats of (each stage's record, code, inputs, imported project
  modules, batch files, outputs): size, mtime, ctime, inode and device, from the very stat
  whose size and mtime the decision compared with the record (handed over by the probe,
  probe.Kept; a record's, by the planning index that read it). Nothing is stat'ed again: a
  file changed after the probe, while the command ran, has other stats than the stamp holds,
  so the next command takes the full path;
- the identity of workflow.json and the planning index, stat'ed after the build (which writes
  them after planning; a full path that would rewrite one of them is not a null build), and
  each project file the probe found missing (it must still be missing);
- each path question the planner asked the file system (a `package.module` callable's file, a
  glob's or a folder's files) with the answer it used (the probe's), asked again;
- per command line (every option, the working folder, the output streams), what it printed,
  in order, and its exit code; for a build that uses the Dask executor, also where the import
  system finds the packages it needs (daskexec.PACKAGES: the full path refuses to build when
  one is missing, a null build too), with that file's stats.

The next command with the same command line takes the lock as a build does (a build sweeping
after a killed one is a miss), checks all of the above and, when every fact holds, prints what
was printed. Any difference, a torn or other-version stamp, or anything it cannot tell: the full
path, which writes the stamp again. A stamp is never trusted over the files: it holds less than
the full path would look at only where what it holds implies the rest (an unchanged record file
is an unchanged record). Code outside the project (an installed package a stage imports) is
asked of the import system again, as the planner asks (external.py). Never used by a dry run
(which writes nothing, so it never stores its own output). `dd-build clean --all` removes it
with the compiled workflow.
"""

from __future__ import annotations

import marshal
import os
import struct
import zlib
from array import array
from itertools import starmap
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import compiled

if TYPE_CHECKING:
    import argparse

    from .console import Console
    from .execute import Prepared
    from .model import Workflow
    from .probe import Kept
    from .report import BuildReport

FORMAT = 2  # 2: an outcome holds the Dask packages its command needs
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
# (what it printed, its exit code, the Dask packages the command needs as _packages() found
# them; () for a command that does not use Dask)
Outcome = tuple[tuple[Chunk, ...], int, tuple[Any, ...]]
# (file, content) of the stamp `replay` read last, for `_store` of the same command.
_replayed: tuple[Path, tuple[Any, ...]] | None = None


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
    global _replayed
    _replayed = (stamp_file(resolved, display, artifacts), stamp)
    header, code, name, root, extras, questions, groups, outcomes = stamp
    outcome = outcomes.get(key)
    if outcome is None or not compiled.header_holds(header, resolved, display, data) or \
            not _code_holds(code) or (outcome[2] and outcome[2] != _packages()):
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


def _plain(state: Any) -> tuple[str, int, int, str]:
    return (state.path, state.size, state.mtime_ns, state.digest)  # as probe.plain_state


def _packages() -> tuple[tuple[str, str | None, tuple[int, ...] | None], ...]:
    """Each package a build on Dask needs (daskexec.PACKAGES, the ones daskexec.cluster_for
    asks for) with where the import system finds it now and that file's stats: None when it
    does not (uninstalled, or hidden from this interpreter's path)."""
    import importlib.util

    from .daskexec import PACKAGES

    found = []
    for name in PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec is not None else None
        found.append((name, origin, None if origin is None else _stat_identity(origin)))
    return tuple(found)


def _played(outcome: Outcome, out: Console) -> int:
    from .console import _write

    chunks, code, _ = outcome
    for stream, text in chunks:
        _write(out.stdout if stream == 1 else out.stderr, text, end="")
    return code


# ---------------------------------------------------------------- the full path's side


class Recorder:
    """While a command takes the full path: its output, taped, and the state its planning saw
    (`seen`); `finish` stores them when the command qualifies."""

    def __init__(self, path: Path, display: str, key: tuple[Any, ...], out: Console,
                 executor: str | None = None, scheduler: str | None = None) -> None:
        self.path, self.display, self.key, self.out = path, display, key, out
        self.executor, self.scheduler = executor, scheduler  # a build's --executor, --scheduler
        self.chunks: list[Chunk] = []
        self.state: tuple[Any, ...] | None = None
        self.packages: tuple[Any, ...] = ()
        self._streams = (out.stdout, out.stderr)
        out.stdout = _Taped.of(out.stdout, 1, self.chunks)
        out.stderr = _Taped.of(out.stderr, 2, self.chunks)

    def seen(self, prep: Prepared, report: BuildReport | None) -> None:
        """The planning behind the command's output (and the build's report, for a build)."""
        try:
            self.state = collect(prep, report)
        except OSError:
            self.state = None
        if self.state is not None and report is not None:
            from .daskexec import uses_cluster

            if uses_cluster(self.executor, self.scheduler, prep.workflow):
                self.packages = _packages()

    def finish(self, code: int | None) -> None:
        """The command ended with exit `code` (None: by an exception): the streams untaped,
        and the stamp stored when every stage was up to date as recorded."""
        self.out.stdout, self.out.stderr = self._streams
        entry = compiled.last_entry()
        if code is None or self.state is None or entry is None or \
                self.out.live(make=False) is not None:
            return
        file, header = entry
        outcome = (tuple(_joined(self.chunks)), code, self.packages)
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
    up to date with its files as recorded: the stats its decisions read, as the probe took
    them (Prepared.kept: no file is stat'ed again), and the questions the planner asked, with
    the answers it used. None when it does not qualify.

    A file changed after the probe, while the command ran (by whatever changes files: no
    stage ran), has other stats than the ones kept: the stamp holds the stats the decisions
    used, so it does not hold for the next command. Only workflow.json and the planning
    index, which a build writes after planning, are stat'ed here."""
    index, kept = prep.index, prep.kept
    if index is None or kept is None or kept.where is None or not kept.whole or \
            not _all_up_to_date(prep, report):
        return None
    wf = prep.workflow
    root = str(wf.artifacts_root)
    summary = os.path.join(root, "workflow.json")
    summary_now = _stat_identity(summary)
    if report is not None:  # the full path of the next build would write nothing
        if index.changed or index.summary is None or summary_now != index.summary[0]:
            return None
    found, missing = kept.project_files()
    extras = ((summary, summary_now), (str(index.path), _stat_identity(str(index.path))),
              *((path, None) for path in missing))
    try:
        groups = _groups(kept, found)
    except struct.error:  # a stat beyond 64 bits: no stamp
        return None
    return wf.name, root, extras, _questions(kept), groups


def _all_up_to_date(prep: Prepared, report: BuildReport | None) -> bool:
    if report is not None and (not report.ok or report.internal or report.interrupted or
                               any(s.result != "up_to_date" for s in report.stages)):
        return False
    return [d.stage for d in prep.decisions] == prep.order and all(
        d.action == "up_to_date" and not d.reasons and d.step is None for d in prep.decisions)


def _groups(kept: Kept, project_files: list[tuple[str, tuple[int, ...]]]
            ) -> tuple[tuple[str, tuple[str, ...], bytes], ...]:
    """Every file a decision read the stats of, with those stats packed: batch files of a
    record of many by their folder (as the probe kept them), files of folders holding many
    by folder, the rest by full paths in one group, stage by stage (a stage's record, then
    its batch files: stat'ed again in that order, its folders are fresh in the kernel's
    cache). struct.error: a value beyond 64 bits."""
    from .probe import pack_fields, stat_fields

    groups: list[tuple[str, tuple[str, ...], bytes]] = []
    few_paths: list[str] = []
    few_stats: list[bytes] = []
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # names many folders hold, once
    for path, stats, batches in zip(*kept.records, kept.batches, strict=True):
        assert batches is not None  # (kept.whole)
        few_paths.append(path)
        few_stats.append(stats)
        for folder, names, packed in batches:
            if folder:
                groups.append((folder, shared.setdefault(names, names), packed))
            else:
                few_paths.extend(names)
                few_stats.append(packed)
    by_folder: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    files = project_files + [(path, stat_fields(st)) for path, st in kept.outputs]
    for path, seen in files:
        folder, _, name = path.rpartition(os.sep)
        by_folder.setdefault(folder, []).append((name, seen))
    for folder, named in by_folder.items():
        if len(named) >= _BY_NAME_FROM:
            groups.append((folder, tuple(n for n, _ in named),
                           b"".join(starmap(pack_fields, (s for _, s in named)))))
        else:
            few_paths.extend(folder + os.sep + n for n, _ in named)
            few_stats.append(b"".join(starmap(pack_fields, (s for _, s in named))))
    if few_paths:
        groups.append(("", tuple(few_paths), b"".join(few_stats)))
    return tuple(groups)


def _questions(kept: Kept) -> tuple[Any, ...]:
    """(project, callables, patterns, called, imported): each question the planner asked of
    paths and of the import system, with the answer its decisions used."""
    from .model import CallableRef

    project, asked, globs = kept.questions()
    callables = []
    for text, answer in asked.items():
        ref = CallableRef.parse(text) if text else None
        if ref is not None and not ref.is_file:  # a file reference's answer is its text
            callables.append((text, answer))
    patterns = tuple((p, tuple(found)) for p, found in globs.items())
    return project, tuple(callables), patterns, tuple(kept.called), tuple(kept.imported)


# ---------------------------------------------------------------- the file


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _stat_identity(path: str) -> tuple[int, ...] | None:
    try:
        return _identity(os.stat(path))
    except OSError:
        return None


def _code_now() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """dd-build's own source files and folders with their stats (owncode.py): the code that
    planned and printed (all of it, whatever this command loaded, so that every command line
    shares one stamp), and a module added, removed or renamed beside it."""
    from .owncode import package_paths, stats

    folders, files = package_paths()
    return tuple(sorted(stats(folders + files)))


def _store(file: Path, header: tuple[Any, ...], state: tuple[Any, ...], key: tuple[Any, ...],
           outcome: Outcome) -> None:
    """Add `outcome` under `key` to the stamp of `state` (a stamp of another state is
    replaced); written atomically, best effort."""
    from .owncode import edited_since_loaded

    code = _code_now()
    if edited_since_loaded(code):  # not the code that ran
        return
    name, root, extras, questions, groups = state
    # the stamp this command's replay read (it held for no command: this one took the full
    # path), not read again; its outcomes are kept only when its state is this one
    old = _replayed[1] if _replayed is not None and _replayed[0] == file else _read(file)
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

