"""Load the user callables a stage names: `file.py:fn` from the project, or `module:fn`.

Project modules load from their current source and execute once per process
(sourceload.py); every import statement project code runs is an edge of the import graph
(importedges.py). A stage's tracker names the files its callables load as its roots, and its
discovered modules are what the graph reaches from them (codedeps.py).
"""

from __future__ import annotations

import contextvars
import importlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..codedeps import GRAPH, CodeTracker
from ..errors import StageFailed, UserCodeFailed, exc_text
from ..fingerprint import module_file
from ..model import CallableRef, Workflow
from . import importedges
from .sourceload import (
    SCOPE,
    forget_project,
    load_file,
    recheck,
    restore_additions,
    use_project,
)

if TYPE_CHECKING:
    from ..facts import StageFacts


def load_callable(workflow: Workflow, text: str, stage: str) -> Callable[..., Any]:
    ref = CallableRef.parse(text)
    if ref is None:
        raise StageFailed(f"'{text}' is not a callable reference", stage=stage)
    root = str(workflow.project_dir)
    try:
        with _LOCK:  # stages running at once (-j) load one at a time: a module executes once
            _use(root)
            if root not in sys.path:
                sys.path.insert(0, root)
            module = _load(workflow, ref)
    except (Exception, SystemExit) as exc:  # user code failed to import (or exited): the
        # stage fails; a sys.exit() must not end dd-build with the user's status
        raise UserCodeFailed(f"cannot load {ref.module}: {type(exc).__name__}: {exc_text(exc)}",
                             stage=stage, hint=_load_hint(workflow, ref, exc)) from exc
    fn = getattr(module, ref.function, None)
    if fn is None:
        raise StageFailed(f"{ref.module} has no function '{ref.function}'", stage=stage,
                          hint="fix the name after `:` in the callable reference")
    if not callable(fn):
        raise StageFailed(f"{ref.module}:{ref.function} is not callable "
                          f"(it is a {type(fn).__name__})", stage=stage,
                          hint="name a function after `:`, e.g. `def make(ctx): ...`")
    return fn


def _load(workflow: Workflow, ref: CallableRef) -> Any:
    """The callable's module (executed the first time only), its files the stage's roots."""
    if ref.is_file:
        path = os.path.normpath(workflow.project_dir / ref.module)
        _roots([path])  # before: what it imports while it fails still counts
        module = load_file(Path(path))
        restore_additions(module)
        return module
    parts = ref.module.split(".")
    names = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    recheck(parts[0])
    try:
        return importlib.import_module(ref.module)
    finally:
        loaded = [m for m in map(sys.modules.get, names) if m is not None]
        _roots([getattr(m, "__file__", None) for m in loaded])
        for m in loaded:
            restore_additions(m)


def _roots(files: list[Any]) -> None:
    tracker = _TRACKER.get()
    if tracker is not None:
        tracker.add_roots(rel for rel in map(SCOPE.rel, files) if rel is not None)


def _load_hint(workflow: Workflow, ref: CallableRef, exc: BaseException) -> str:
    name = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if not name:
        return (f"{ref.module} raised while being imported: fix the line named above (in it, or in "
                "a module it imports)")
    if not ref.is_file and f"{ref.module}.".startswith(f"{name}."):
        return f"no module `{ref.module}` in the project folder or installed; check the name"
    root = workflow.project_dir
    hint = (f"module `{name}` was not found: imports are relative to the project folder "
            f"{root} (it is on sys.path), not to the folder of the importing file")
    rel = ref.module if ref.is_file else module_file(root, ref.module)
    folder = Path(rel or ".").parent
    if folder == Path(".") or ".." in folder.parts:
        return hint + "; install it, or put it in the project folder"
    dotted = ".".join(folder.parts) + "." + name
    beside = root / folder / name.replace(".", os.sep)
    there = beside.with_suffix(".py").is_file() or beside.is_dir()
    where = f"{(folder / name.replace('.', '/')).as_posix()}{'' if beside.is_dir() else '.py'}"
    return hint + (f"; for {where} write `from {dotted} import …`" if there else
                   f", e.g. `from {dotted} import …` for {where}; or install it")


class _Tracking:
    """The sys.path each stage starts from (dd-build's own, the project folder first), and
    how many stages' trackers are open: stages running at once (-j) share one sys.path, which
    goes back to the baseline only when none runs (never under a running stage's feet)."""

    baseline: list[str] | None = None
    open = 0


_TRACKING = _Tracking()
# The tracker of the stage whose code runs in this thread (batch threads inherit it).
_TRACKER: contextvars.ContextVar[CodeTracker | None] = contextvars.ContextVar(
    "dd_build_code_tracker", default=None)
_LOCK = threading.RLock()  # loading code and sys.path changes, with stages at once


def track_code(workflow: Workflow, facts: StageFacts, resuming: bool) -> CodeTracker:
    """Before a stage loads its code: start from dd-build's own sys.path (what an earlier
    stage's code put on it is gone, and comes back when code that added it is loaded again),
    and return the tracker the loader gives the stage's roots to. It restores sys.path when
    it closes."""
    root = str(workflow.project_dir)
    with _LOCK:
        _use(root)
        if _TRACKING.baseline is None:
            _TRACKING.baseline = [root] + [p for p in sys.path if p != root]
        if _TRACKING.open == 0:
            _restore_path()
        _TRACKING.open += 1
    kept = facts.record.discovered if resuming and facts.record is not None else None
    kept_now = {key: dep._replace(state=facts.discovered[key])
                for key, dep in (kept or {}).items() if key in facts.discovered}
    tracker = CodeTracker(facts.code, facts.callback_code, kept_now, on_close=_closed)
    _TRACKER.set(tracker)
    return tracker


def _closed() -> None:
    """A stage's tracker closed: the last one open puts sys.path back."""
    with _LOCK:
        _TRACKING.open = max(0, _TRACKING.open - 1)
        if _TRACKING.open == 0:
            _restore_path()


def _restore_path() -> None:
    if _TRACKING.baseline is not None:
        sys.path[:] = _TRACKING.baseline


def _use(root: str) -> None:
    use_project(root)
    importedges.install()


def unload_code() -> None:
    """Forget all code loading did to the process, as if none had run: the import hooks and
    wrappers go, every module executed is forgotten (the next load executes the current
    source), and so are the import graph and the sys.path baseline. sys.path and sys.modules
    are the caller's to put back (see inprocess.py)."""
    _TRACKER.set(None)
    _TRACKING.baseline = None
    _TRACKING.open = 0
    importedges.uninstall()
    forget_project()
    GRAPH.clear()
