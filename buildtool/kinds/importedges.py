"""Every import statement that runs in project code, recorded as an edge of the import graph.

`builtins.__import__` (which every `import` and `from … import` statement calls) and
`importlib.import_module` are wrapped once, when a stage first loads code. A call whose caller
is a project file records an edge from that file to each module the statement imports:

- `import a.b.c` imports `a`, `a.b` and `a.b.c`; `from a.b import c, d` also `a.b.c` when it is
  a module (`*`: the submodules `__all__` names);
- a project module → its project-relative path;
- a module outside the project that is not the standard library's → `ext:<top-level name>`
  (`ext:<ns>.<name>` below a namespace package), fingerprinted once, as it was imported, the
  way external.py fingerprints a `package.module:fn`: an installed distribution's name and
  version, otherwise a digest of the package's files.

A cached import records its edge too, so a stage that imports a module an earlier stage of
the same build executed still lists it. Any other caller (dd-build, the standard library,
installed packages) costs one dictionary lookup. An import that fails records what it had
imported before it failed. Only import statements count, not a C extension that imports while
project code calls it (pyarrow importing pandas inside `pa.table()`) nor an explicit
`__import__()` call (the first execution of a project module is still seen, by its loader).
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import opcode
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from ..codedeps import EXT, GRAPH
from ..external import MISSING, fingerprint_loaded
from ..fingerprint import FileState
from .sourceload import SCOPE, file_state, recheck

_STDLIB = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names)
_IMPORT_NAME = opcode.opmap["IMPORT_NAME"]
_original_import = builtins.__import__
_original_import_module = importlib.import_module
# (importer, module name, from-list) -> the module recorded: a statement run again (a lazy
# import in a function called per batch) costs a lookup
_DONE: dict[tuple[str, str, tuple[str, ...]], int] = {}


def install() -> None:
    """Wrap the import functions (once per process, or until uninstall)."""
    if builtins.__import__ is not _tracked_import:
        builtins.__import__ = _tracked_import
        importlib.import_module = _tracked_import_module


def uninstall() -> None:
    """Put the import functions back (unless something wrapped them after us) and forget the
    imports recorded: the import graph they fed is cleared with them."""
    if builtins.__import__ is _tracked_import:
        builtins.__import__ = _original_import
    if importlib.import_module is _tracked_import_module:
        importlib.import_module = _original_import_module
    _DONE.clear()


def _tracked_import(name: str, globals: Mapping[str, object] | None = None,
                    locals: Mapping[str, object] | None = None,
                    fromlist: Sequence[str] | None = (), level: int = 0) -> ModuleType:
    importer = SCOPE.rel(globals.get("__file__")) if globals else None
    if importer is None or globals is None or not _statement():
        return _original_import(name, globals, locals, fromlist, level)
    absolute = name if level == 0 else _absolute(name, globals, level)
    if absolute:
        recheck(absolute.partition(".")[0])
    try:
        return _original_import(name, globals, locals, fromlist, level)
    finally:
        if absolute:
            record(importer, absolute, tuple(fromlist) if fromlist else ())


def _statement() -> bool:
    """Called by an import statement: not by a C extension importing on the code's behalf
    (pyarrow importing pandas inside `pa.table()` passes the calling function's globals)."""
    try:
        frame = sys._getframe(2)
        return frame.f_code.co_code[frame.f_lasti] == _IMPORT_NAME
    except (ValueError, IndexError):  # no Python caller, or no instruction to look at
        return False


def _tracked_import_module(name: str, package: str | None = None) -> ModuleType:
    importer = SCOPE.rel(sys._getframe(1).f_globals.get("__file__"))
    if importer is None:
        return _original_import_module(name, package)
    try:
        absolute = importlib.util.resolve_name(name, package) if name.startswith(".") else name
    except (ImportError, ValueError):  # the call itself raises the user's error below
        absolute = ""
    if absolute:
        recheck(absolute.partition(".")[0])
    try:
        return _original_import_module(name, package)
    finally:
        if absolute:
            record(importer, absolute, ())


def _absolute(name: str, globals: Mapping[str, Any], level: int) -> str:
    package = globals.get("__package__")
    if not package:
        spec = globals.get("__spec__")
        package = getattr(spec, "parent", None)
    if not package:
        return ""  # the import raises "no known parent package"
    try:
        return importlib.util.resolve_name("." * level + name, package)
    except (ImportError, ValueError):
        return ""


def record(importer: str, absolute: str, fromlist: tuple[str, ...]) -> None:
    """Edges from `importer` to each module of one import of `absolute`."""
    key = (importer, absolute, fromlist)
    imported = sys.modules.get(absolute)
    if imported is not None and _DONE.get(key) == id(imported):
        return
    parts = absolute.split(".")
    names = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    items = [i for i in fromlist if i != "*"]
    if "*" in fromlist:
        items += list(getattr(imported, "__all__", ()))
    names += [f"{absolute}.{i}" for i in items if isinstance(i, str)]
    for name in names:
        module = sys.modules.get(name)
        node = _node(name, module) if module is not None else None
        if node is not None:
            GRAPH.add_edge(importer, node)
    if imported is not None:
        _DONE[key] = id(imported)


def _node(name: str, module: Any) -> str | None:
    file = _attr(module, "__file__")
    if isinstance(file, str):
        rel = SCOPE.rel(file)
        if rel is not None:
            if rel not in GRAPH.states:  # executed by no loader of ours (e.g. before one)
                try:
                    GRAPH.set_state(rel, rel, file_state(file, rel))
                except OSError:  # gone since: the next build sees it gone
                    return None
            return rel
    top = name.partition(".")[0]
    if top in _STDLIB:
        return None
    outside = _outside_name(name, top)
    if outside is None:
        return None
    node = EXT + outside
    if node not in GRAPH.states:
        try:
            key, state = fingerprint_loaded(outside)
        except (OSError, ValueError):  # unreadable metadata: found again (or not) next time
            key, state = "module:" + outside, FileState("module:" + outside, 0, 0, MISSING)
        GRAPH.set_state(node, key, state, outside)
    return node


def _outside_name(name: str, top: str) -> str | None:
    """The name a module outside the project is fingerprinted by: its top-level package, or
    the package below a namespace package (whose folders several distributions share)."""
    top_module = sys.modules.get(top)
    if isinstance(_attr(top_module, "__file__"), str):
        return top
    if "." in name and _attr(top_module, "__path__") is not None:
        below = ".".join(name.split(".")[:2])
        file = _attr(sys.modules.get(below), "__file__")
        if isinstance(file, str) and SCOPE.rel(file) is None:
            return below
    return None  # a namespace package itself, or a module without a file


def _attr(module: Any, name: str) -> Any:
    try:
        return vars(module).get(name)
    except TypeError:  # not a module: some libraries put other objects in sys.modules
        return None
