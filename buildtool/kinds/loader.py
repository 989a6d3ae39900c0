"""Load the user callables a stage names: `file.py:fn` from the project, or `module:fn`."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
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
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = _load_file(workflow.project_dir / ref.module) if ref.is_file else \
            importlib.import_module(ref.module)
    except Exception as exc:  # user code failed to import: report it as the stage's failure
        raise StageFailed(f"cannot load {ref.module}: {type(exc).__name__}: {exc}",
                          stage=stage) from exc
    fn = getattr(module, ref.function, None)
    if fn is None:
        raise StageFailed(f"{ref.module} has no function '{ref.function}'", stage=stage,
                          hint="fix the name after `:` in the callable reference")
    if not callable(fn):
        raise StageFailed(f"{ref.module}:{ref.function} is not callable", stage=stage)
    return fn


def _load_file(path: Path) -> Any:
    name = "ddbuild_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
