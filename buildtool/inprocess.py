"""A build inside the caller's Python process (the Python API): what a call changes in the
process while it runs, and how it puts each thing back.

`dd-build` runs one build per process and exits; a notebook calls `buildtool.build` again and
again in one process. So each API call starts as a fresh `dd-build` would, and leaves the
process as it found it:

- the current folder is the project folder while the call runs (stage code opens paths
  relative to it, as `run` commands do), and the caller's again afterwards, also on error;
- sys.path is put back; project modules (files under the project folder) the caller had
  imported are set aside while a build runs and put back after it, and those the build
  executed go: the next build executes the code as it is then. Installed packages stay
  imported (a package upgraded since it was imported needs a new process);
- the import hooks and wrappers that loading code installs go (kinds/loader.unload_code);
- SIGTERM and SIGHUP (and SIGINT), when their action is to end the process at once, first
  record the running stage `interrupted`: during a build they raise Interrupted, and once the
  build has recorded it the signal is delivered again with its own action. SIGINT with
  Python's own handler needs nothing: the KeyboardInterrupt it raises is recorded and goes
  on to the caller. Handlers are changed in the main thread only, and put back.

Not thread-safe: one call at a time per process (a second build of the same workflow meanwhile
gets BuildLocked; the current folder is the process's).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from .errors import Interrupted
from .kinds.sourceload import STAGE_FILE_PREFIX, Scope

# Signals whose default action ends the process without a word: caught while a build runs.
_ENDING = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, n))


@contextmanager
def project_call(project_dir: Path, *, runs_code: bool) -> Iterator[None]:
    """Around one API call on the project in `project_dir`; `runs_code`: a build that may
    run stages (a dry run, `status` and `read_output` run no user code)."""
    with ExitStack() as stack:
        if runs_code:
            stack.enter_context(_signals_recorded())
            stack.enter_context(_fresh_code(project_dir))
        stack.enter_context(_working_folder(project_dir))
        yield


@contextmanager
def _working_folder(folder: Path) -> Iterator[None]:
    try:  # a descriptor finds the caller's folder again even if it is renamed meanwhile
        back: int | None = os.open(".", os.O_RDONLY)
    except OSError:  # the caller's current folder is gone: there is nothing to go back to
        back = None
    try:
        os.chdir(folder)
        yield
    finally:
        if back is not None:
            try:
                os.fchdir(back)
            finally:
                os.close(back)


@contextmanager
def _fresh_code(project_dir: Path) -> Iterator[None]:
    from .kinds.loader import unload_code

    path = list(sys.path)
    callers = project_modules(project_dir)
    for name in callers:
        del sys.modules[name]
    unload_code()  # whatever an earlier call (or the caller) left: this build starts fresh
    try:
        yield
    finally:
        unload_code()
        for name in project_modules(project_dir):
            del sys.modules[name]
        sys.modules.update(callers)
        sys.path[:] = path


def project_modules(project_dir: Path) -> dict[str, ModuleType]:
    """The modules in sys.modules loaded from files of the project (not from a virtual
    environment kept in it), and the stages' `file.py` modules. Never the caller's script
    (`__main__`, which may be a file of the project) nor dd-build's own modules."""
    scope = Scope()
    scope.set(str(project_dir))
    return {name: module for name, module in list(sys.modules.items())
            if name.startswith(STAGE_FILE_PREFIX) or (
                name != "__main__" and name.partition(".")[0] != __package__
                and _of_project(module, scope))}


def _of_project(module: object, scope: Scope) -> bool:
    try:
        names = vars(module)
    except TypeError:  # not a module: some libraries put other objects in sys.modules
        return False
    file = names.get("__file__")
    if isinstance(file, str):
        return scope.rel(file) is not None
    try:  # a namespace package: project's when its folders all are
        folders = [p for p in names.get("__path__") or () if isinstance(p, str)]
    except TypeError:
        return False
    return bool(folders) and all(scope.holds(p) for p in folders)


@contextmanager
def _signals_recorded() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can be set in the main thread only
        return
    changed = {s: signal.signal(s, _raise_interrupted) for s in _ENDING
               if signal.getsignal(s) is signal.SIG_DFL}
    try:
        yield
    except Interrupted as exc:
        _put_back(changed)
        if exc.signum in changed:  # recorded: now the signal does what it would have done
            signal.raise_signal(exc.signum)
        raise
    finally:
        _put_back(changed)


def _put_back(changed: dict[int, Any]) -> None:
    for signum, handler in changed.items():
        signal.signal(signum, handler)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)
