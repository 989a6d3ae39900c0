"""Load the user callables a stage names: `file.py:fn` from the project, or `module:fn`."""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import StageFailed
from ..model import CallableRef, Workflow


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
        return self.source_to_code(self.get_data(self.path), self.path)


_SOURCE_ROOTS: set[str] = set()


def _import_project_from_source(root: str) -> None:
    """Modules under the project folder (`module:fn` callables, and what stage code imports
    from the project) load from their current source as well: a path hook for that folder."""
    if root in _SOURCE_ROOTS:
        return
    _SOURCE_ROOTS.add(root)
    m = importlib.machinery
    finder = m.FileFinder.path_hook((m.ExtensionFileLoader, m.EXTENSION_SUFFIXES),
                                    (_SourceLoader, m.SOURCE_SUFFIXES),
                                    (m.SourcelessFileLoader, m.BYTECODE_SUFFIXES))
    inside = root.rstrip(os.sep) + os.sep

    def hook(path: str) -> Any:
        if path != root and not path.startswith(inside):
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
