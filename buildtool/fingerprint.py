"""Canonical spec hashes and stat-cached content digests of files."""

from __future__ import annotations

import functools
import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .globreach import is_glob
from .model import CallableRef, Stage, Workflow

FORMAT_VERSION = 1
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileState:
    """A file as seen: where (relative), its stats, and its content digest."""

    path: str
    size: int
    mtime_ns: int
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns, "digest": self.digest}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileState:
        return cls(str(data["path"]), int(data["size"]), int(data["mtime_ns"]), str(data["digest"]))


# hashlib is imported where a digest is made: it loads OpenSSL (~4 ms), and a null build
# makes none.


def digest_bytes(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_strings(parts: list[str]) -> str:
    """One digest for an ordered list of digests or names."""
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return "sha256:" + h.hexdigest()


def digest_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def check_file(path: Path, rel: str, known: FileState | None) -> FileState | None:
    """The file's state, None when it is missing. Cheap first: equal stats reuse `known`'s digest."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if known is not None and known.size == st.st_size and known.mtime_ns == st.st_mtime_ns:
        return known
    return FileState(rel, st.st_size, st.st_mtime_ns, digest_file(path))


def canonical_spec(stage: Stage) -> dict[str, Any]:
    """Every key of the stage that changes what it produces: the keys the key table assigns to
    a step (keys.py), so not `description` or `retries`; `code` counts by its files' content."""
    from .steps import fingerprinted_keys

    spec: dict[str, Any] = {"kind": stage.kind}
    for key in fingerprinted_keys(stage.kind):
        spec[key] = _spec_value(stage, key)
    # Round-trip through JSON so the spec compares equal to the one read back from a record.
    return json.loads(json.dumps(spec, sort_keys=True, default=str))


# The key under which a Stage keeps its (canonical spec, fingerprint) in its `__dict__`, as
# functools.cached_property keeps a value: a Stage is frozen, so they never go stale. A compiled
# workflow (compiled.py) stores the pair with each stage, so a null build computes neither.
KNOWN_SPEC = "_known_spec"


def stage_spec(stage: Stage) -> tuple[dict[str, Any], str]:
    """The stage's canonical spec and its fingerprint, computed once per Stage object. The
    spec is shared by every caller: read it, never change it."""
    known: tuple[dict[str, Any], str] | None = stage.__dict__.get(KNOWN_SPEC)
    if known is None:
        spec = canonical_spec(stage)
        known = (spec, spec_fingerprint(spec))
        stage.__dict__[KNOWN_SPEC] = known
    return known


def _spec_value(stage: Stage, key: str) -> Any:
    if key == stage.kind:
        return stage.target
    if key == "seed":
        return stage.seed.key if stage.seed else None
    if key == "inputs":
        return [ref.key for ref in stage.inputs]
    value = getattr(stage, key)
    return list(value) if isinstance(value, tuple) else value


def spec_fingerprint(spec: dict[str, Any]) -> str:
    text = json.dumps({"format": FORMAT_VERSION, "spec": spec}, sort_keys=True)
    return digest_bytes(text.encode("utf-8"))


def batch_fingerprint(spec: dict[str, Any]) -> str:
    """The fingerprint of what the main step depends on: seeds `ctx.rng`, so a change to a
    later step (processors, callback) never changes the rows a resumed batch produces. Not of
    `num_records`: a batch's rows do not depend on how many batches follow it, so a stage that
    grows keeps its batches and adds the rows a build from scratch gives (growth.py); code
    that reads `ctx.num_records` is noticed per batch."""
    from .steps import MAIN, step_of_key

    main = MAIN[spec["kind"]]
    return spec_fingerprint({k: v for k, v in spec.items()
                             if step_of_key(spec["kind"], k) == main and k != "num_records"})


def expand_glob(project_dir: Path, pattern: str) -> list[str]:
    """Project-relative posix paths of the files a path or glob names, sorted.

    A plain path may name a folder: it stands for every file under it (`folder_files`). A glob
    matches files only, as the shell's `*` skips hidden names; nor does it match into a
    `__pycache__` folder unless it names one (Python writes bytecode there when a run stage's
    command imports the project's modules: never a change of the stage's inputs)."""
    if not is_glob(pattern):
        path = project_dir / pattern
        if path.is_dir():
            return folder_files(project_dir, pattern)
        return [pattern] if path.is_file() else []
    found = glob.glob(pattern, root_dir=project_dir, recursive=True)
    pycache = "__pycache__" in pattern
    return sorted(p.replace(os.sep, "/") for p in found if (project_dir / p).is_file()
                  and (pycache or "__pycache__" not in p.split(os.sep)))


def folder_files(project_dir: Path, folder: str) -> list[str]:
    """Project-relative posix paths of every file under `folder`, recursively, sorted as
    strings; hidden entries (a name starting with `.`) and `__pycache__` are left out."""
    found: list[str] = []
    for top, dirs, files in os.walk(project_dir / folder):
        dirs[:] = [d for d in dirs if not skipped_name(d)]
        rel = Path(top).relative_to(project_dir).as_posix()
        found.extend(f"{rel}/{name}" for name in files if not skipped_name(name))
    return sorted(found)


def skipped_name(name: str) -> bool:
    """A hidden entry or a `__pycache__` folder: never part of a folder's files."""
    return name.startswith(".") or name == "__pycache__"


def module_file(project_dir: Path, module: str) -> str | None:
    """The project-relative file of a dotted module, when it lives in the project. A package
    comes before a module file of the same name (`pkg/__init__.py` before `pkg.py`), as
    Python's import finds them."""
    base = project_dir.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate.relative_to(project_dir).as_posix()
    return None


def callable_file(workflow: Workflow, text: str | None) -> str | None:
    """The project-relative file a callable reference lives in, when it is in the project."""
    ref = CallableRef.parse(text) if text else None
    if ref is None:
        return None
    rel = ref.module if ref.is_file else module_file(workflow.project_dir, ref.module)
    return None if rel is None else _as_posix(rel)


@functools.lru_cache(maxsize=4096)
def _as_posix(rel: str) -> str:
    """`Path(rel).as_posix()`: a pure function of the text, asked once per stage per build."""
    return Path(rel).as_posix()


class Resolver(Protocol):
    """callable_file and expand_glob of one workflow, as one look at the files may answer
    them once for every stage (probe.py)."""

    def callable_file(self, text: str | None) -> str | None: ...

    def expand(self, pattern: str) -> list[str]: ...


class _Direct:
    """A Resolver that asks the files every time."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow

    def callable_file(self, text: str | None) -> str | None:
        return callable_file(self.workflow, text)

    def expand(self, pattern: str) -> list[str]:
        return expand_glob(self.workflow.project_dir, pattern)


def callback_only_files(workflow: Workflow, stage: Stage, resolver: Resolver | None = None
                        ) -> frozenset[str]:
    """Code files only the on_success callback uses: changing one reruns just the callback.
    Not when the stage's own callable lives in it or its `code:` entries name it: then it is
    the stage's code (what the stage's code imports is found as it runs, see codedeps.py)."""
    if stage.on_success is None or stage.kind == "run":
        return frozenset()
    resolve = resolver or _Direct(workflow)
    callback = resolve.callable_file(stage.on_success)
    if callback is None:
        return frozenset()
    if callback == resolve.callable_file(stage.target) or \
            any(callback in resolve.expand(p) for p in stage.code):
        return frozenset()
    return frozenset({callback})


def code_files(workflow: Workflow, stage: Stage, resolver: Resolver | None = None
               ) -> list[str]:
    """Project-relative files whose content is the stage's code."""
    resolve = resolver or _Direct(workflow)
    files = [f for f in map(resolve.callable_file, stage.callables) if f]
    if stage.kind == "datadesigner":  # its config file is its code
        files.append(stage.target)
    for pattern in stage.code:
        matched = resolve.expand(pattern)
        if not matched:
            raise stage.error(f"`code` entry '{pattern}' matches no file", "code",
                              "fix the path or glob, or remove it")
        files.extend(matched)
    return sorted(set(files))
