"""The compiled workflow: a validated Workflowfile and its stage graph, kept between runs, so
that an unchanged Workflowfile costs neither YAML nor networkx (nor the validation's reads).

A full reading (workflowfile.load_workflow, then graph.compile_graph: the cycle check and the
order) is stored in `<project>/<artifacts>/.compiled/<name>.bin`, one file per Workflowfile
path and display name. It is used again only when everything the reading depended on is as
it was; else the full reading runs (and is stored again):
- the Workflowfile's bytes (read every time and compared whole: a replacement of the same
  size within the same second is seen);
- its resolved path and display name (messages name the file as given);
- the format, dd-build's version, the files of its modules that were loaded and its package
  folders (a module added to dd-build, as a package `claims/` found before `claims.py`, is
  seen), PyYAML's files, the Python version, prefix and PYTHONPATH;
- each question the validation asked (loadfacts.py): the kind of every path it looked at, the
  stat of every code file it read (and, while that stat is recent, the file's digest), and
  whether a module name is found outside the project.

The cache is never trusted over the files and never an error: a missing, torn, garbled or
other-version file is a miss (and is replaced), and a read-only or missing artifacts folder
means no cache. The artifacts folder is named in the Workflowfile, which is not parsed on a
hit: a plain top-level `artifacts:` line is read from the bytes; a file that names it any
other way has no cache. It is written only when a reading is stored, never by a dry run, and
never creates the artifacts folder (the first build makes it; the next command stores).
`dd-build clean --all` removes it.
"""

from __future__ import annotations

import gc
import marshal
import os
import sys
import time
import zlib
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from .graph import StageGraph
from .loadfacts import (
    LoadFacts,
    Signature,
    digest,
    found_elsewhere,
    is_racy,
    kind_of,
    signature,
)
from .model import DaskSettings, InputRef, Locations, RateLimit, Stage, Workflow

FOLDER = ".compiled"
# 2: each stage carries its canonical spec and fingerprint; 4: `executor:`, `cache:`;
# 5: the code key holds dd-build's package folders
FORMAT = 5
_MAGIC = b"dd-build compiled workflow\n"
_DEFAULT_ARTIFACTS = "artifacts"
_FIELDS = tuple(f.name for f in fields(Stage))
_T = TypeVar("_T")
_REF_FIELDS = tuple(f.name for f in fields(InputRef))
assert _REF_FIELDS == ("kind", "value", "written"), "_decode builds InputRefs by these names"
# The entry behind the last load of this process: (its file, its header), when that load was
# a hit or was stored; None when it had no entry. nullstamp.py keys a stamp by it.
_last: tuple[Path, tuple[Any, ...]] | None = None


def load(path: Path, display: str, *, store: bool = True) -> Workflow:
    """The validated workflow of the Workflowfile at `path`, with its graph computed: the
    compiled one when every input of it is unchanged, else a full reading (WorkflowError when
    it is invalid), which is stored unless `store` is False (a dry run writes nothing)."""
    global _last
    _last = None
    resolved = Path(path).resolve()
    try:
        data = resolved.read_bytes()
    except OSError:  # the full reading says what is wrong
        return _compile(resolved, display, None, keep=False)[0]
    artifacts = artifacts_as_written(data)
    if artifacts is None:
        return _compile(resolved, display, data, keep=False)[0]
    file = cache_file(resolved, display, artifacts)
    entry = _read(file)
    found = None if entry is None else _check(entry, resolved, display, data)
    if found is not None:
        workflow, settled = found
        if settled is not None and store and entry is not None:
            _write(file, _encode_entry(settled, entry[1]))
        _last = (file, entry[0] if settled is None else settled) if entry is not None else None
        return workflow
    workflow, header, payload = _compile(resolved, display, data, keep=store)
    # stored only where the next lookup looks (the artifacts line read right)
    if header is not None and payload is not None and \
            Path(resolved.parent, artifacts) == workflow.project_dir / workflow.artifacts:
        if _write(file, _encode_entry(header, payload)):
            _last = (file, header)
    return workflow


def last_entry() -> tuple[Path, tuple[Any, ...]] | None:
    """(file, header) of the entry the last `load` used or stored, None when it had none."""
    return _last


def header_holds(header: tuple[Any, ...], resolved: Path, display: str, data: bytes) -> bool:
    """Whether every fact of an entry's header holds now (a racy read file's content is
    compared, as a hit compares it). A racy file that has settled since is a no: a full
    reading stores the entry settled (and the caller's stamp with it)."""
    return _facts_hold(header, resolved, display, data) == header[6]


def cache_folder(project_dir: Path, artifacts: str) -> Path:
    return project_dir / artifacts / FOLDER


def cache_file(resolved: Path, display: str, artifacts: str) -> Path:
    name = f"{resolved}\0{display}".encode("utf-8", "surrogateescape")
    return cache_folder(resolved.parent, artifacts) / \
        f"{zlib.crc32(name):08x}{zlib.adler32(name):08x}.bin"


def artifacts_as_written(data: bytes) -> str | None:
    """The artifacts folder a Workflowfile names, read from a plain top-level line
    (`artifacts: out`, `artifacts: "out"  # comment`); the default when no line names it;
    None when the line names it in a way this reading does not follow (then there is no
    cache). A wrong answer costs only a miss: an entry is checked against the whole file."""
    value = _top_level_value(data.removeprefix(b"\xef\xbb\xbf"), b"artifacts")
    if value is None:
        return _DEFAULT_ARTIFACTS
    try:
        text = value.decode("utf-8").strip(" ")
    except UnicodeDecodeError:
        return None
    if " #" in text:
        text = text.split(" #", 1)[0].rstrip(" ")
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]  # quoted, with nothing inside that a quote would escape
        return None if not text or any(c in text for c in "'\"\\") else text
    if not text or text[0] in "&*!|>{[%@`?-,#'\"" or any(c in text for c in "\t\r") or \
            ": " in text or text.endswith(":"):
        return None
    return text


def _top_level_value(data: bytes, key: bytes) -> bytes | None:
    """The rest of the first line that starts with `key:` (the key at column 0)."""
    start = 0
    while True:
        if data.startswith(key, start):
            end = data.find(b"\n", start)
            name, colon, value = (data[start:] if end < 0 else data[start:end]).partition(b":")
            if colon and name.rstrip(b" ") == key:
                return value.removesuffix(b"\r")
        start = data.find(b"\n" + key, start) + 1
        if start == 0:
            return None


# ---------------------------------------------------------------- what a reading depends on


def _key() -> tuple[Any, ...]:
    from . import __version__

    package = os.path.dirname(os.path.abspath(__file__))
    return (FORMAT, __version__, sys.version, sys.implementation.name, marshal.version,
            sys.prefix, os.environ.get("PYTHONPATH"), package)


def _code_files() -> tuple[tuple[str, Signature], ...]:
    """dd-build's modules loaded by now, and PyYAML's, and dd-build's package folders
    (owncode.py), with their stats: a change to any (an edit of dd-build without a new
    version, a module added to it that is found before one the reading used, an upgraded
    PyYAML) is a miss."""
    from .owncode import package_paths, stats

    found = []
    for name, module in list(sys.modules.items()):
        top = name.split(".")[0]
        origin = getattr(module, "__file__", None)
        if top in ("buildtool", "yaml", "_yaml") and isinstance(origin, str):
            found.extend(stats((origin,)))
    found.extend(stats(package_paths()[0]))
    return tuple(sorted(found))


def _header(resolved: Path, display: str, data: bytes, facts: LoadFacts) -> tuple[Any, ...]:
    return (_key(), str(resolved), display, data, _code_files(),
            tuple(facts.kinds.items()),
            tuple((rel, sig, sha, racy) for rel, (sig, sha, racy) in facts.reads.items()),
            tuple(facts.modules.items()))


def _check(entry: tuple[tuple[Any, ...], memoryview], resolved: Path, display: str, data: bytes
           ) -> tuple[Workflow, tuple[Any, ...] | None] | None:
    """The stored workflow when every fact in the header holds now (and, when a racy file is
    now settled, the header to store instead); None when any differs."""
    header, payload = entry
    checked = _facts_hold(header, resolved, display, data)
    if checked is None:
        return None
    workflow = _decoded(payload)
    if workflow is None:
        return None
    settled = header[:6] + (checked,) + header[7:] if checked != header[6] else None
    return workflow, settled


def _facts_hold(header: tuple[Any, ...], resolved: Path, display: str, data: bytes
                ) -> tuple[Any, ...] | None:
    """The header's read files' facts (racy ones settled) when every fact holds now; None
    when any differs."""
    key, file, shown, text, code, kinds, reads, modules = header
    if key != _key() or file != str(resolved) or shown != display or text != data:
        return None
    project = resolved.parent
    try:
        if any(signature(os.stat(origin)) != sig for origin, sig in code) or \
                any(kind_of(project / rel) != kind for rel, kind in kinds):
            return None
    except OSError:  # a path that cannot be asked about: the full reading says why
        return None
    if any(found_elsewhere(name) != found for name, found in modules):
        return None
    return _check_reads(project, reads)


def _check_reads(project: Path, reads: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The read files' facts, each still true (a racy one settled when it no longer is);
    None when one changed."""
    now = time.time_ns()
    checked = []
    for rel, sig, sha, racy in reads:
        try:
            if signature(os.stat(project / rel)) != sig:
                return None
            if racy:
                if not _same_content(project / rel, sig, sha):
                    return None
                racy = is_racy(sig, now)
        except (OSError, ValueError):
            return None
        checked.append((rel, sig, sha, racy))
    return tuple(checked)


def _same_content(path: Path, sig: Signature, sha: bytes) -> bool:
    with open(path, "rb") as fh:
        if signature(os.fstat(fh.fileno())) != sig:
            return False
        same = digest(fh.read()) == sha
        return same and signature(os.fstat(fh.fileno())) == sig


# ---------------------------------------------------------------- the full reading


def _compile(resolved: Path, display: str, data: bytes | None, *, keep: bool
             ) -> tuple[Workflow, tuple[Any, ...] | None, bytes | None]:
    """The full reading (raises WorkflowError), with the entry to store for it when `keep`:
    None when what it read cannot be checked again."""
    from .workflowfile import load_workflow

    facts = LoadFacts(resolved.parent)
    workflow = load_workflow(resolved, display, data=data, facts=facts)
    graph = workflow.graph  # the cycle check, and the order
    if not keep or data is None or not facts.complete or workflow.file != resolved:
        return workflow, None, None
    try:
        payload = marshal.dumps(_encoded(workflow, graph))
    except ValueError:  # a value marshal does not keep (a new field's type): no cache
        return workflow, None, None
    copy = _decoded(payload)
    if copy is None or repr(copy) != repr(workflow) or copy.graph.order != graph.order or \
            copy.graph.upstreams != graph.upstreams or not _same_specs(copy, workflow):
        return workflow, None, None  # never store what would not read back the same
    from .owncode import edited_since_loaded

    header = _header(resolved, display, data, facts)
    if edited_since_loaded(header[4]):  # dd-build edited while it read
        return workflow, None, None
    return workflow, header, payload


def _same_specs(copy: Workflow, workflow: Workflow) -> bool:
    """Each stage of `copy` carries the spec and fingerprint of the same stage as read, and
    its spec hashes to that fingerprint (fingerprint.stage_spec finds them there)."""
    from .fingerprint import KNOWN_SPEC, spec_fingerprint, stage_spec

    for name, stage in copy.stages.items():
        spec, fingerprint = stage.__dict__[KNOWN_SPEC]
        if fingerprint != stage_spec(workflow.stages[name])[1] or \
                spec_fingerprint(spec) != fingerprint:
            return False
    return True


# ---------------------------------------------------------------- the file


def _encode_entry(header: tuple[Any, ...], payload: bytes | memoryview) -> bytes:
    head = marshal.dumps(header)
    body = len(head).to_bytes(8, "little") + head + bytes(payload)
    return _MAGIC + FORMAT.to_bytes(4, "little") + zlib.crc32(body).to_bytes(4, "little") + body


def _read(file: Path) -> tuple[tuple[Any, ...], memoryview] | None:
    """(header, payload) of the entry; None when it is missing, torn, garbled or of another
    format."""
    try:
        with open(file, "rb") as fh:
            raw = memoryview(fh.read())
    except OSError:
        return None
    start = len(_MAGIC) + 8
    if raw[:len(_MAGIC)] != _MAGIC or raw[len(_MAGIC):start - 4] != FORMAT.to_bytes(4, "little") \
            or zlib.crc32(raw[start:]) != int.from_bytes(raw[start - 4:start], "little"):
        return None
    size = int.from_bytes(raw[start:start + 8], "little")
    try:
        header = marshal.loads(raw[start + 8:start + 8 + size])
    except (EOFError, ValueError, TypeError):
        return None
    if not isinstance(header, tuple) or len(header) != 8:
        return None
    return header, raw[start + 8 + size:]


def _write(file: Path, content: bytes) -> bool:
    """Atomically (a temp file, then os.replace); nothing when the artifacts folder is not
    there or cannot be written: a cache is never an error. Whether it was written. Temp
    files a killed dd-build left in the folder are removed first (a write is rare: a miss)."""
    if not file.parent.parent.is_dir():
        return False
    sweep_temp_files(file.parent)
    tmp = file.with_name(f".{file.name}.tmp.{os.getpid()}.{os.urandom(6).hex()}")
    try:
        file.parent.mkdir(exist_ok=True)
        tmp.write_bytes(content)
        os.replace(tmp, file)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False
    return True


write_entry = _write  # nullstamp.py's stamps are written beside the entries, as they are


def sweep_temp_files(folder: Path) -> None:
    """Remove the temp files (`.NAME.tmp.PID.RANDOM`) in `folder` of processes that are gone:
    what a dd-build killed while it stored an entry left. A live process's (another command
    storing at the same moment) is kept; so is one of a reused pid, until that one ends."""
    try:
        with os.scandir(folder) as it:
            found = [(e.path, e.name) for e in it if e.name.startswith(".") and ".tmp." in e.name]
    except OSError:
        return
    for path, name in found:
        pid = name.rpartition(".tmp.")[2].partition(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.unlink(path)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: alive
        return True
    return True


def remove(workflow: Workflow) -> None:
    """Remove the compiled workflows kept in this workflow's artifacts folder (`clean --all`)."""
    import shutil

    shutil.rmtree(cache_folder(workflow.project_dir, workflow.artifacts), ignore_errors=True)


# ---------------------------------------------------------------- the workflow as plain data


def _encoded(workflow: Workflow, graph: StageGraph) -> tuple[Any, ...]:
    """The workflow as values marshal keeps: each stage as the dict of its fields (an input
    as a (kind, value, written) tuple; locations as (file, {key: (line, column)})), plus its
    (canonical spec, fingerprint) under fingerprint.KNOWN_SPEC."""
    from .fingerprint import KNOWN_SPEC, stage_spec

    position = {name: index for index, name in enumerate(workflow.stages)}
    stages = []
    for stage in workflow.stages.values():
        state = {name: getattr(stage, name) for name in _FIELDS}
        state[KNOWN_SPEC] = stage_spec(stage)
        state["seed"] = None if stage.seed is None else _ref(stage.seed)
        state["inputs"] = tuple(_ref(ref) for ref in stage.inputs)
        state["locations"] = (stage.locations.file, stage.locations.at)
        stages.append(state)
    limits = tuple((limit.name, limit.requests_per_second, limit.max_in_flight)
                   for limit in workflow.rate_limits.values())
    return (workflow.name, str(workflow.file), str(workflow.project_dir), workflow.artifacts,
            _FIELDS, tuple(stages), tuple(position[name] for name in graph.order),
            tuple(tuple(position[up] for up in graph.upstreams[name]) for name in workflow.stages),
            workflow.jobs, limits,
            None if workflow.dask is None else (workflow.dask.scheduler,), workflow.cache)


def _ref(ref: InputRef) -> tuple[str, str, str]:
    return (ref.kind, ref.value, ref.written)


def _decoded(payload: bytes | memoryview) -> Workflow | None:
    """The workflow `_encoded` gave; None when the payload is not one (another layout)."""
    collecting = gc.isenabled()
    gc.disable()  # thousands of new objects, none of them garbage: no collection passes
    try:
        return _decode(payload)
    finally:
        if collecting:
            gc.enable()


def _decode(payload: bytes | memoryview) -> Workflow | None:
    try:
        name, file, project_dir, artifacts, names, states, order, ups, jobs, limits, dask, \
            cache = marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return None
    if names != _FIELDS:
        return None
    new, assign = object.__new__, object.__setattr__  # see _made; the loop runs per stage
    stages: dict[str, Stage] = {}
    for state in states:
        refs = []
        for kind, value, written in state["inputs"]:
            ref = new(InputRef)
            assign(ref, "__dict__", {"kind": kind, "value": value, "written": written})
            refs.append(ref)
        state["inputs"] = tuple(refs)
        if state["seed"] is not None:
            state["seed"] = _made(InputRef, dict(zip(_REF_FIELDS, state["seed"], strict=True)))
        state["locations"] = Locations(*state["locations"])
        stage = new(Stage)
        assign(stage, "__dict__", state)
        stages[state["name"]] = stage
    listed = tuple(stages)
    graph = StageGraph(listed, tuple(listed[i] for i in order),
                       {n: tuple(listed[i] for i in up) for n, up in zip(listed, ups, strict=True)})
    rate_limits = {entry[0]: RateLimit(*entry) for entry in limits}
    return _made(Workflow, {"name": name, "file": Path(file), "project_dir": Path(project_dir),
                            "artifacts": artifacts, "stages": stages, "jobs": jobs,
                            "graph": graph, "rate_limits": rate_limits,
                            "dask": None if dask is None else DaskSettings(*dask), "cache": cache})


def _made(cls: type[_T], state: dict[str, Any]) -> _T:
    """An instance of a frozen dataclass whose fields are `state`, made as unpickling makes
    one: its __init__ costs more than the rest of a hit at thousands of stages. `_compile`
    checks that what this gives reads back the same as what the reading made."""
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", state)
    return obj
