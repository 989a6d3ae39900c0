"""dd-build: a Make-style, declarative build tool for multi-stage synthetic-data pipelines.

The Python API (README, "Python API"):

    import buildtool

    report = buildtool.build("my-project")              # dd-build -C my-project
    buildtool.status("my-project")                      # dd-build status
    buildtool.read_output("my-project", "judged")       # a pyarrow.Table

Its names load on first use (`import buildtool` stays fast: no networkx or pyarrow, not
even `typing`: `dd-build --version` imports this module and nothing else).
"""

from __future__ import annotations

__version__ = "0.1.0"

# When dd-build's code began loading (its first module, this one): a cache that names the
# code's files by their stats (the compiled workflow, the null-build stamp) is not stored
# when one changed since, as then the stats are not those of the code that ran.
from time import time_ns as _time_ns  # noqa: E402 - a builtin module: nothing to load

LOADED_NS = _time_ns()

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

    from .api import build, read_output, status
    from .errors import BuildError, BuildLocked, ResumeRefused, WorkflowError
    from .reasons import Reason
    from .report import BuildReport, StageResult, StageStatus, WorkflowStatus

# name -> the module that defines it
_LAZY = {
    "build": "api", "status": "api", "read_output": "api",
    "BuildError": "errors", "WorkflowError": "errors", "ResumeRefused": "errors",
    "BuildLocked": "errors",
    "BuildReport": "report", "StageResult": "report", "WorkflowStatus": "report",
    "StageStatus": "report", "Reason": "reasons",
}

__all__ = ["BuildError", "BuildLocked", "BuildReport", "Reason", "ResumeRefused",
           "StageResult", "StageStatus", "WorkflowError", "WorkflowStatus", "__version__",
           "build", "read_output", "status"]


def __getattr__(name: str) -> Any:  # PEP 562: the API's modules load when first used
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'buildtool' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
