"""Project modules load from their current source, and execute once per dd-build process.

A path hook for the project folder gives its modules loaders that compile the current source
(never a `__pycache__` entry) and keep every module they executed, by file. A file imported
again — under its name after sys.modules dropped it, under another name, or as a stage's
`file.py:fn` — is that module, not executed again: an import with a one-time effect (a
registered extension type, a logging handler, an atexit hook) happens once, as in one Python
program. Each execution records in the import graph the file's state as executed, and the
sys.path entries it added, which a later stage that loads the same file from the cache gets
back (each stage starts from the sys.path dd-build started with). The Python API forgets
them all between two builds in one process (forget_project, called by inprocess.py), so each
build runs the code as it is then.

What is the project's: files under the project folder, except a virtual environment or
site-packages kept there, and dd-build itself.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from ..codedeps import GRAPH
from ..fingerprint import FileState, digest_bytes, digest_file

STAGE_FILE_PREFIX = "ddbuild_user_"  # the module name of a stage's `file.py`


class Scope:
    """Which files are the project's. One project per process."""

    def __init__(self) -> None:
        self.root = ""
        self._inside = ""
        self._skip: tuple[str, ...] = ()
        self._rel: dict[str, str | None] = {}

    def set(self, root: str) -> None:
        if root != self.root:
            self.root, self._inside = root, root.rstrip(os.sep) + os.sep
            self._skip = not_project_folders(root)
            self._rel.clear()

    def clear(self) -> None:
        """No project: no file is the project's."""
        self.root, self._inside, self._skip = "", "", ()
        self._rel.clear()

    def rel(self, path: Any) -> str | None:
        """The project-relative posix path of a module file, or None when not the project's."""
        if not isinstance(path, str):
            return None
        try:
            return self._rel[path]
        except KeyError:
            pass
        rel = None
        if self._inside and path.startswith(self._inside) and not path.startswith(self._skip):
            rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        self._rel[path] = rel
        return rel

    def holds(self, folder: str) -> bool:
        """A folder the path hook serves: the project folder or one inside it, not installed."""
        return bool(self.root) and (folder == self.root or folder.startswith(self._inside)) \
            and not folder.startswith(self._skip)


SCOPE = Scope()


def not_project_folders(root: str) -> tuple[str, ...]:
    """Folders under the project that hold installed code, not the project's: a virtual
    environment or site-packages kept in the project folder, and dd-build itself."""
    import site

    inside = root.rstrip(os.sep) + os.sep
    named = [sys.prefix, sys.exec_prefix, *site.getsitepackages(), site.getusersitepackages(),
             str(Path(__file__).resolve().parents[1])]  # the buildtool package
    candidates = {p for c in named if c for p in (c, os.path.realpath(c))}
    return tuple(sorted(c.rstrip(os.sep) + os.sep for c in candidates
                        if (c.rstrip(os.sep) + os.sep).startswith(inside)))


@dataclass
class _Loaded:
    module: ModuleType
    spec: Any
    prepended: tuple[str, ...]  # sys.path entries its execution put first
    appended: tuple[str, ...]  # and last


_BY_PATH: dict[str, _Loaded] = {}  # normalized file path -> the module executed from it
_REUSED: set[int] = set()  # modules create_module handed back: exec_module runs nothing
RESOLVED_WITH: dict[str, list[str]] = {}  # top-level project module -> sys.path it was found by


class _Once:
    """Loader mixin: a file already executed gives back its module."""

    path: str

    def create_module(self, spec: Any) -> Any:
        if "." not in spec.name and not spec.name.startswith(STAGE_FILE_PREFIX):
            RESOLVED_WITH[spec.name] = list(sys.path)
        loaded = _BY_PATH.get(os.path.normpath(self.path))
        if loaded is None:
            return None
        _REUSED.add(id(loaded.module))
        return loaded.module

    def exec_module(self, module: ModuleType) -> None:
        if id(module) in _REUSED:
            _REUSED.discard(id(module))
            module.__spec__ = _BY_PATH[os.path.normpath(self.path)].spec  # as first executed
            return
        before = list(sys.path)
        super().exec_module(module)  # type: ignore[misc]
        _BY_PATH.setdefault(os.path.normpath(self.path), _loaded(module, before))


def _loaded(module: ModuleType, before: list[str]) -> _Loaded:
    old = set(before)
    first = next((i for i, p in enumerate(sys.path) if p in old), len(sys.path))
    new = [(i, p) for i, p in enumerate(sys.path) if p not in old]
    return _Loaded(module, getattr(module, "__spec__", None),
                   tuple(p for i, p in new if i < first), tuple(p for i, p in new if i >= first))


# The typeshed of mypy >= 2.4 declares `source_to_code` differently on SourceLoader and
# InspectLoader, which mypy reports for any class mixing something into SourceFileLoader
# (`unused-ignore`: older versions report nothing).
class _SourceLoader(_Once, importlib.machinery.SourceFileLoader):  # type: ignore[misc, unused-ignore]
    """Compiles the file's current source, never its cached bytecode: a `__pycache__` entry is
    trusted while the source's mtime (in whole seconds) and size match, so an edit within the
    same second that keeps the size would run the old code under the new code digest."""

    def get_code(self, fullname: str) -> Any:
        st = os.stat(self.path)
        data = self.get_data(self.path)  # stat first: a later edit moves the stats it recorded
        _executed(self.path, st, data)
        return self.source_to_code(data, self.path)


class _SourcelessLoader(_Once, importlib.machinery.SourcelessFileLoader):
    def get_code(self, fullname: str) -> Any:
        _executed(self.path)
        return super().get_code(fullname)


class _ExtensionLoader(importlib.machinery.ExtensionFileLoader):
    def create_module(self, spec: Any) -> Any:
        _executed(self.path)
        return super().create_module(spec)


def _executed(path: str, st: os.stat_result | None = None, data: bytes | None = None) -> None:
    """Record the state of a project file as it executes, and who imported it (a fallback for
    imports that no import statement made, e.g. importlib machinery called directly)."""
    rel = SCOPE.rel(path)
    if rel is None:
        return
    GRAPH.set_state(rel, rel, file_state(path, rel, st, data))
    importer = _importer(path)
    if importer is not None:
        GRAPH.add_edge(importer, rel)


def file_state(path: str, rel: str, st: os.stat_result | None = None,
               data: bytes | None = None) -> FileState:
    if st is None:
        st = os.stat(path)
    digest = digest_bytes(data) if data is not None else digest_file(Path(path))
    return FileState(rel, st.st_size, st.st_mtime_ns, digest)


def _importer(path: str) -> str | None:
    """The project file whose code is importing `path`: the nearest such frame up the stack
    (a module's top level, or a function that imports lazily)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        file = frame.f_code.co_filename
        if file != path and (rel := SCOPE.rel(file)) is not None:
            return rel
        frame = frame.f_back
    return None


_HOOKED: dict[str, Any] = {}  # project folder -> the path hook installed for it


def use_project(root: str) -> None:
    """Modules under the project folder load through the loaders above: a path hook for it."""
    SCOPE.set(root)
    if root in _HOOKED:
        return
    m = importlib.machinery
    finder = m.FileFinder.path_hook((_ExtensionLoader, m.EXTENSION_SUFFIXES),
                                    (_SourceLoader, m.SOURCE_SUFFIXES),
                                    (_SourcelessLoader, m.BYTECODE_SUFFIXES))

    def hook(path: str) -> Any:
        if not SCOPE.holds(path):
            raise ImportError("not in the project folder")
        return finder(path)

    _HOOKED[root] = hook
    sys.path_hooks.insert(0, hook)
    _forget_finders()


def _forget_finders() -> None:
    """Finders cached for the project's folders go: the next import asks the path hooks."""
    for path in [p for p in sys.path_importer_cache if SCOPE.holds(p)]:
        del sys.path_importer_cache[path]


def forget_project() -> None:
    """Undo use_project and forget every module executed: the path hooks go, and the next
    load of a project file executes its current source (the Python API calls this between
    builds, so a build in the same process runs code edited since the last one). The
    modules themselves stay in sys.modules: the caller decides which go."""
    roots = tuple(r.rstrip(os.sep) + os.sep for r in _HOOKED)
    for path in [p for p in sys.path_importer_cache
                 if isinstance(p, str) and (p + os.sep).startswith(roots)]:
        del sys.path_importer_cache[path]
    hooks = set(map(id, _HOOKED.values()))
    sys.path_hooks[:] = [h for h in sys.path_hooks if id(h) not in hooks]
    _HOOKED.clear()
    _BY_PATH.clear()
    _REUSED.clear()
    RESOLVED_WITH.clear()
    SCOPE.clear()


def stage_file_name(path: str) -> str:
    """The module name a stage's `file.py` (its normalized absolute path) executes under."""
    return STAGE_FILE_PREFIX + hashlib.sha1(path.encode()).hexdigest()[:12]


def load_file(path: Path) -> ModuleType:
    """A stage's `file.py`, executed the first time only (a module imported from that file
    already is that module)."""
    key = os.path.normpath(str(path))
    loaded = _BY_PATH.get(key)
    if loaded is not None:
        return loaded.module
    name = stage_file_name(key)
    loader = _SourceLoader(name, key)
    spec = importlib.util.spec_from_file_location(name, key, loader=loader)
    if spec is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)  # not half a module: a later stage tries again
        raise
    return module


def restore_additions(module: ModuleType) -> None:
    """Put back the sys.path entries `module`'s execution added (it ran in an earlier stage,
    and each stage starts from dd-build's own sys.path): its lazy imports find what they
    found then."""
    loaded = _BY_PATH.get(os.path.normpath(str(getattr(module, "__file__", "") or "")))
    if loaded is None:
        return
    sys.path[:0] = [p for p in loaded.prepended if p not in sys.path]
    sys.path.extend(p for p in loaded.appended if p not in sys.path)


def recheck(top: str) -> None:
    """Before `top` is imported again: when sys.path changed since the cached project module
    `top` was found, and would now find another file, forget it (and its submodules), so the
    import finds the file this sys.path names — executing it only if it never ran."""
    seen = RESOLVED_WITH.get(top)
    if seen is None or seen == sys.path:
        return
    RESOLVED_WITH[top] = list(sys.path)
    module = sys.modules.get(top)
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return
    try:
        spec = importlib.machinery.PathFinder.find_spec(top)
    except (ImportError, OSError, ValueError):
        return
    if spec is None or spec.origin is None or spec.origin == file or \
            os.path.normpath(spec.origin) == os.path.normpath(file):
        return  # found nowhere else (the cached module stays), or the same file
    prefix = top + "."
    for name in [n for n in sys.modules if n == top or n.startswith(prefix)]:
        del sys.modules[name]
