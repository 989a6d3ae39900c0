"""Load the user callables a stage names: `file.py:fn` from the project, or `module:fn`.

Project modules (under the project folder, but not in a virtual environment or site-packages
kept there) load from their current source, and while a stage runs every one executed is
reported to the stage's CodeTracker, with the project file that imported it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..codedeps import CodeTracker
from ..errors import StageFailed
from ..fingerprint import FileState, digest_bytes, digest_file
from ..model import CallableRef, Workflow

if TYPE_CHECKING:
    from ..plan import StageFacts


def load_callable(workflow: Workflow, text: str, stage: str) -> Callable[..., Any]:
    ref = CallableRef.parse(text)
    if ref is None:
        raise StageFailed(f"'{text}' is not a callable reference", stage=stage)
    root = str(workflow.project_dir)
    _import_project_from_source(root)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = _load_file(workflow.project_dir / ref.module) if ref.is_file else \
            importlib.import_module(ref.module)
    except (Exception, SystemExit) as exc:  # user code failed to import (or exited): the
        # stage fails; a sys.exit() must not end dd-build with the user's status
        missing = isinstance(exc, ModuleNotFoundError) and exc.name is not None and \
            f"{ref.module}.".startswith(f"{exc.name}.")
        hint = (f"no module `{ref.module}` in the project folder or installed; check the name"
                if missing else f"fix {ref.module}: it raised while being imported")
        raise StageFailed(f"cannot load {ref.module}: {type(exc).__name__}: {exc}",
                          stage=stage, hint=hint) from exc
    fn = getattr(module, ref.function, None)
    if fn is None:
        raise StageFailed(f"{ref.module} has no function '{ref.function}'", stage=stage,
                          hint="fix the name after `:` in the callable reference")
    if not callable(fn):
        raise StageFailed(f"{ref.module}:{ref.function} is not callable "
                          f"(it is a {type(fn).__name__})", stage=stage,
                          hint="name a function after `:`, e.g. `def make(ctx): ...`")
    return fn


class _SourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles the file's current source, never its cached bytecode: a `__pycache__` entry is
    trusted while the source's mtime (in whole seconds) and size match, so an edit within the
    same second that keeps the size would run the old code under the new code digest."""

    def get_code(self, fullname: str) -> Any:
        st = os.stat(self.path) if _TRACKING.tracker is not None else None
        data = self.get_data(self.path)  # stat first: a later edit moves the stats it recorded
        _executed(self.path, st, data)
        return self.source_to_code(data, self.path)


class _SourcelessLoader(importlib.machinery.SourcelessFileLoader):
    def get_code(self, fullname: str) -> Any:
        _executed(self.path)
        return super().get_code(fullname)


class _ExtensionLoader(importlib.machinery.ExtensionFileLoader):
    def create_module(self, spec: Any) -> Any:
        _executed(self.path)
        return super().create_module(spec)


class _Tracking:
    """The running stage's tracker (None between stages) and the project it belongs to."""

    tracker: CodeTracker | None = None
    root: str = ""
    skip: tuple[str, ...] = ()  # folders inside the project that hold no project modules


_TRACKING = _Tracking()
_SOURCE_ROOTS: set[str] = set()


def track_code(workflow: Workflow, facts: StageFacts, resuming: bool) -> CodeTracker:
    """Before a stage loads its code: forget the project's modules an earlier stage of this
    process imported, so this stage executes from current source (and so sees) every project
    module it imports; then report each one executed to the returned tracker."""
    root = str(workflow.project_dir)
    _import_project_from_source(root)
    _TRACKING.root, _TRACKING.skip = root, _not_project_folders(root)
    kept = facts.record.discovered if resuming and facts.record is not None else None
    kept_now = {rel: dep._replace(state=facts.discovered[rel])
                for rel, dep in (kept or {}).items() if rel in facts.discovered}
    tracker = CodeTracker(facts.code, facts.callback_code, kept_now)
    _forget_project_modules()
    _TRACKING.tracker = tracker
    return tracker


def _not_project_folders(root: str) -> tuple[str, ...]:
    """Folders under the project that hold installed code, not the project's: a virtual
    environment or site-packages kept in the project folder, and dd-build itself."""
    import site

    inside = root.rstrip(os.sep) + os.sep
    named = [sys.prefix, sys.exec_prefix, *site.getsitepackages(), site.getusersitepackages(),
             str(Path(__file__).resolve().parents[1])]
    candidates = {p for c in named if c for p in (c, os.path.realpath(c))}
    return tuple(sorted(c.rstrip(os.sep) + os.sep for c in candidates
                        if (c.rstrip(os.sep) + os.sep).startswith(inside)))


def _project_rel(path: str) -> str | None:
    """The project-relative posix path of a module file, or None when it is not the project's."""
    root = _TRACKING.root
    if not root or not path.startswith(root.rstrip(os.sep) + os.sep):
        return None
    if path.startswith(_TRACKING.skip):
        return None
    return os.path.relpath(path, root).replace(os.sep, "/")


def _executed(path: str, st: os.stat_result | None = None, data: bytes | None = None) -> None:
    tracker = _TRACKING.tracker
    if tracker is None:
        return
    rel = _project_rel(path)
    if rel is None:
        return
    if st is None:
        st = os.stat(path)
    digest = digest_bytes(data) if data is not None else digest_file(Path(path))
    tracker.executed(rel, FileState(rel, st.st_size, st.st_mtime_ns, digest), _importer(path))


def _importer(path: str) -> str | None:
    """The project file whose code is importing `path`: the nearest such frame up the stack
    (a module's top level, or a function that imports lazily)."""
    frame = sys._getframe(2)
    while frame is not None:
        file = frame.f_code.co_filename
        if file != path and (rel := _project_rel(file)) is not None:
            return rel
        frame = frame.f_back
    return None


def _forget_project_modules() -> None:
    """Drop the project's modules from sys.modules (and the finders' cached listings)."""
    for name, module in list(sys.modules.items()):
        if _is_project_module(module):
            del sys.modules[name]
    root = _TRACKING.root.rstrip(os.sep)
    for path, finder in list(sys.path_importer_cache.items()):
        if finder is not None and (path == root or _project_rel(path) is not None):
            finder.invalidate_caches()


def _is_project_module(module: Any) -> bool:
    try:
        attrs = vars(module)
    except TypeError:  # not a module: some libraries put other objects in sys.modules
        return False
    file = attrs.get("__file__")
    if isinstance(file, str):
        return _project_rel(file) is not None
    spec = attrs.get("__spec__")  # a namespace package: no file, only folders
    folders = list(getattr(spec, "submodule_search_locations", None) or [])
    return bool(folders) and all(_project_rel(os.path.join(f, "x")) is not None
                                 for f in folders)


def _import_project_from_source(root: str) -> None:
    """Modules under the project folder (`module:fn` callables, and what stage code imports
    from the project) load from their current source as well: a path hook for that folder."""
    if root in _SOURCE_ROOTS:
        return
    _SOURCE_ROOTS.add(root)
    m = importlib.machinery
    finder = m.FileFinder.path_hook((_ExtensionLoader, m.EXTENSION_SUFFIXES),
                                    (_SourceLoader, m.SOURCE_SUFFIXES),
                                    (_SourcelessLoader, m.BYTECODE_SUFFIXES))
    inside = root.rstrip(os.sep) + os.sep
    installed = _not_project_folders(root)

    def hook(path: str) -> Any:
        if path != root and not path.startswith(inside) or path.startswith(installed):
            raise ImportError("not in the project folder")
        return finder(path)

    sys.path_hooks.insert(0, hook)
    for path in [p for p in sys.path_importer_cache if p == root or p.startswith(inside)]:
        del sys.path_importer_cache[path]


def _load_file(path: Path) -> Any:
    name = "ddbuild_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path, loader=_SourceLoader(name, str(path)))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
