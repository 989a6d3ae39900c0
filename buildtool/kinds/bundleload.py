"""Stage code on a Dask worker, run from the client's CodeBundle (codebundle.py), never from
the worker's disk nor from modules it imported for an earlier build.

A worker is a long-lived process that serves any build (and other Dask work), so a bundle's
modules are in sys.modules (as dataclasses, pickle and typing expect) only while tasks of that
bundle run (`_Table.install`): then they are put aside, executed once, with the sys.path
entries their code added, and whatever of the same names they shadowed comes back. A task of
another bundle (the code was edited, or another project) waits until the running ones are done
or abandoned by their client; then the old bundle is dropped and the new one's modules execute
afresh (`running`). A meta path finder serves the active bundle's modules, to its tasks and to
the project's own code only, under their names relative to the project folder (and to sys.path
entries inside it that the code added), with `__file__` the client's path: tracebacks name the
user's file and line, and import statements are recorded (importedges.py) as edges of this
process's import graph, which each batch hands back to the client (`imports_for`). Non-Python
files the code opens are not in the bundle.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import linecache
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..codedeps import GRAPH
from ..errors import StageFailed, UserCodeFailed, exc_text
from ..model import CallableRef
from . import importedges
from .sourceload import SCOPE, STAGE_FILE_PREFIX, stage_file_name

if TYPE_CHECKING:
    from ..batchexec import ImportDelta
    from ..codebundle import CodeBundle


class _Table:
    """One bundle's modules on this worker."""

    def __init__(self, bundle: CodeBundle) -> None:
        self.bundle = bundle
        self.folders = bundle.folders()
        self.by_rel: dict[str, ModuleType] = {}  # a file executed once, whatever its name
        self.names: set[str] = set()  # the names its modules were put in sys.modules under
        self.reused: set[int] = set()
        self.specs: dict[str, Any] = {}  # rel -> the spec it first executed under
        self.fns: dict[str, Any] = {}  # target -> its callable
        self.lock = threading.RLock()
        self.running = 0  # its tasks running (installed while any does)
        self.installed = False
        self.stash: dict[str, ModuleType] = {}  # its modules while none of its tasks runs
        self.hidden: dict[str, ModuleType] = {}  # what they shadow, while installed
        self.paths: list[str] = []  # sys.path entries its code added
        self.before: list[str] = []  # sys.path when it was installed

    def install(self) -> None:
        """Its modules into sys.modules (what of the same names was there aside) and the
        sys.path entries its code added back: as in a local build, where the project folder
        comes first on sys.path."""
        tops = self.tops()
        for name in [n for n in sys.modules if n.partition(".")[0] in tops]:
            self.hidden[name] = sys.modules.pop(name)
        sys.modules.update(self.stash)
        self.stash.clear()
        self.before = list(sys.path)
        sys.path[:0] = [p for p in self.paths if p not in sys.path]
        self.installed = True

    def uninstall(self) -> None:
        """Its modules out of sys.modules (kept: the next task of the bundle puts them back,
        executed once), what they shadowed back, and sys.path as it was: other code on the
        worker sees the worker's own modules."""
        for name in self.names:
            module = sys.modules.pop(name, None)
            if module is not None:
                self.stash[name] = module
        sys.modules.update(self.hidden)
        self.hidden.clear()
        before = set(self.before)
        added = [p for p in sys.path if p not in before]
        self.paths = added + [p for p in self.paths if p not in added]
        sys.path[:] = [p for p in sys.path if p in before]
        self.installed = False

    def tops(self) -> set[str]:
        """The top-level names the bundle's files give (modules, packages, namespaces)."""
        return {rel.split("/")[0].removesuffix(".py") for rel in self.bundle.files}

    def owns(self, file: Any) -> bool:
        return isinstance(file, str) and file.startswith(self.bundle.root + os.sep)

    def path(self, rel: str) -> str:
        return os.path.join(self.bundle.root, *rel.split("/")) if rel else self.bundle.root

    def rel_folder(self, path: Any) -> str | None:
        """The bundle folder a path entry names, or None when it is not one."""
        if not isinstance(path, str):
            return None
        rel = os.path.relpath(os.path.normpath(path), self.bundle.root).replace(os.sep, "/")
        rel = "" if rel == "." else rel
        return rel if rel in self.folders else None

    def spec(self, name: str, path: Sequence[str] | None) -> importlib.machinery.ModuleSpec | None:
        """Where `name` is in the bundle, searched as a FileFinder searches its folders: a
        package, else a module, in each folder in turn; else a namespace package."""
        if path is None:
            bases = [""] + [rel for p in sys.path if (rel := self.rel_folder(p)) not in (None, "")]
        else:
            bases = [rel for p in path if (rel := self.rel_folder(p)) is not None]
        last = name.rpartition(".")[2]
        portions = []
        for base in dict.fromkeys(bases):
            stem = f"{base}/{last}" if base else last
            for rel, package in ((f"{stem}/__init__.py", True), (f"{stem}.py", False)):
                if rel in self.bundle.files:
                    return self._spec(name, rel, package, stem)
            if stem in self.folders:
                portions.append(self.path(stem))
        if not portions:
            return None
        spec = importlib.machinery.ModuleSpec(name, _Loader(self, None), is_package=True)
        spec.submodule_search_locations = portions
        return spec

    def _spec(self, name: str, rel: str, package: bool, stem: str
              ) -> importlib.machinery.ModuleSpec:
        spec = importlib.machinery.ModuleSpec(name, _Loader(self, rel), origin=self.path(rel),
                                              is_package=package)
        spec.has_location = True
        if package:
            spec.submodule_search_locations = [self.path(stem)]
        return spec

    def execute(self, module: ModuleType, rel: str) -> None:
        data = self.bundle.files[rel]
        path = self.path(rel)
        GRAPH.set_state(rel, rel, self.bundle.states[rel])
        source = importlib.util.decode_source(data)
        linecache.cache[path] = (len(data), None, source.splitlines(True), path)
        code = compile(data, path, "exec", dont_inherit=True)
        exec(code, module.__dict__)
        self.by_rel.setdefault(rel, module)
        self.specs.setdefault(rel, module.__spec__)

    def callable(self, target: str, stage: str) -> Any:
        """The stage's function, its module executed the first time only."""
        with self.lock:
            if target not in self.fns:
                self.fns[target] = self._load(target, stage)
            return self.fns[target]

    def _load(self, target: str, stage: str) -> Any:
        ref = CallableRef.parse(target)
        if ref is None:
            raise StageFailed(f"'{target}' is not a callable reference", stage=stage)
        try:
            module = self._file(ref.module) if ref.is_file else \
                importlib.import_module(ref.module)
        except (Exception, SystemExit) as exc:  # the user's module failed to import here
            raise UserCodeFailed(
                f"cannot load {ref.module} on the Dask worker: {type(exc).__name__}: "
                f"{exc_text(exc)}", stage=stage, hint=_load_hint(exc)) from exc
        fn = getattr(module, ref.function, None)
        if not callable(fn):
            raise StageFailed(f"{ref.module}:{ref.function} is not a function on the Dask "
                              "worker", stage=stage)
        return fn

    def _file(self, written: str) -> ModuleType:
        """A stage's `file.py` under the name sourceload gives it."""
        rel = os.path.normpath(written).replace(os.sep, "/")
        if rel in self.by_rel:
            return self.by_rel[rel]
        if rel not in self.bundle.files:
            raise ModuleNotFoundError(f"{written} is not a Python file of the project folder "
                                      "the client sent")
        path = os.path.normpath(self.path(rel))
        name = stage_file_name(path)
        spec = self._spec(name, rel, False, "")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        self.names.add(name)
        try:
            self.execute(module, rel)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module


def _load_hint(exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return (f"`{exc.name}` is neither a module of the project folder nor installed on the "
                "worker: install it on every worker (the same version as here)")
    return "fix the line named above; the module runs on the worker as it does here"


class _Loader(importlib.abc.Loader):
    def __init__(self, table: _Table, rel: str | None) -> None:
        self.table = table
        self.rel = rel  # None: a namespace package

    def create_module(self, spec: Any) -> ModuleType | None:
        self.table.names.add(spec.name)
        module = self.table.by_rel.get(self.rel) if self.rel is not None else None
        if module is not None:  # the file executed already, under another name
            self.table.reused.add(id(module))
        return module

    def exec_module(self, module: ModuleType) -> None:
        if self.rel is None:
            return
        if id(module) in self.table.reused:  # its attributes as first executed
            self.table.reused.discard(id(module))
            module.__spec__ = self.table.specs[self.rel]
            return
        self.table.execute(module, self.rel)

    def get_source(self, fullname: str) -> str | None:
        if self.rel is None:
            return None
        return importlib.util.decode_source(self.table.bundle.files[self.rel])


class _Finder(importlib.abc.MetaPathFinder):
    """The active bundle's modules, to a task of it and to the project's code (in threads
    the code started too); never to other code on the worker."""

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        table = _GATE.active
        if table is None or not table.installed or not _asked_by(table):
            return None
        return table.spec(name, path)


_THREAD = threading.local()  # .table: the bundle of the task this thread runs


def _asked_by(table: _Table) -> bool:
    if getattr(_THREAD, "table", None) is table:
        return True
    frame: Any = sys._getframe(2)
    while frame is not None:
        if table.owns(frame.f_globals.get("__file__")):
            return True
        frame = frame.f_back
    return False


class _Gate:
    """Tasks of one bundle at a time on this worker. A task of another bundle waits until the
    running ones are done, or abandoned: Dask cancelled them (their client is gone) and only
    their thread runs on, its result dropped. They keep the modules they hold."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.active: _Table | None = None
        self.tasks: dict[int, tuple[str, Any]] = {}  # running: token -> bundle digest, task key

    @contextlib.contextmanager
    def running_bundle(self, bundle: CodeBundle) -> Iterator[_Table]:
        token, key = object(), _task_key()
        with self.cond:
            while not self._may_run(bundle.digest):
                if _abandoned(key):  # its own client went while it waited: it runs nothing
                    raise StageFailed("abandoned by its client while it waited",
                                      stage="(worker)")
                self.cond.wait(0.5)  # also to look again whether the running were abandoned
            if self.active is None or self.active.bundle.digest != bundle.digest:
                self._switch(bundle)
            table = self.active
            assert table is not None
            if not table.installed:
                table.install()
            table.running += 1
            self.tasks[id(token)] = (bundle.digest, key)
        _THREAD.table = table
        try:
            yield table
        finally:
            _THREAD.table = None
            with self.cond:
                del self.tasks[id(token)]
                table.running -= 1
                if table.running == 0 and table.installed:
                    table.uninstall()
                self.cond.notify_all()

    def _may_run(self, digest: str) -> bool:
        return all(d == digest or _abandoned(key) for d, key in self.tasks.values())

    def _switch(self, bundle: CodeBundle) -> None:
        """Put the old bundle aside for good (its abandoned tasks keep the modules they hold)
        and drop any module loaded from the new project folder some other way; the new
        bundle's modules execute when first imported."""
        old = self.active
        if old is not None:
            if old.installed:
                old.uninstall()
            for rel in old.bundle.files:
                linecache.cache.pop(old.path(rel), None)
        SCOPE.set(bundle.root)
        _drop(lambda name, file: SCOPE.rel(file) is not None)
        importedges.uninstall()  # forgets the imports it recorded
        importedges.install()
        GRAPH.clear()
        if not any(isinstance(f, _Finder) for f in sys.meta_path):
            sys.meta_path.insert(0, _Finder())
        self.active = _Table(bundle)


def _task_key() -> Any:
    """The key of the Dask task this thread runs (None outside one)."""
    try:
        from distributed.worker import thread_state
    except ImportError:
        return None
    return getattr(thread_state, "key", None)


def _abandoned(key: Any) -> bool:
    """Whether the worker has given up the task `key` (cancelled, released or forgotten)."""
    if key is None:
        return False
    try:
        from distributed import get_worker

        task = get_worker().state.tasks.get(key)
    except (ImportError, ValueError):  # not in a Dask task
        return False
    return task is None or task.state in ("cancelled", "released", "forgotten")


def _drop(which: Any) -> None:
    for name, module in list(sys.modules.items()):
        if name.startswith(STAGE_FILE_PREFIX) or which(name, getattr(module, "__file__", None)):
            sys.modules.pop(name, None)


_GATE = _Gate()


def running(bundle: CodeBundle) -> contextlib.AbstractContextManager[_Table]:
    """While a task runs the code of `bundle` (see the module's docstring)."""
    return _GATE.running_bundle(bundle)


_SENT: dict[str, dict[str, Any]] = {}  # build id -> what import_delta sent to that build
_SENT_LOCK = threading.Lock()


def imports_for(build: str) -> ImportDelta | None:
    """The import graph's edges and states this worker has not handed to `build` yet."""
    from ..batchexec import import_delta

    with _SENT_LOCK:
        if build not in _SENT and len(_SENT) > 64:  # builds long gone
            _SENT.clear()
        return import_delta(_SENT.setdefault(build, {}))
