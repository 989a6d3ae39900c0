"""Where user code failed: the frame of the user's own code in a traceback, and the traceback
as the stage's log keeps it (without dd-build's frames above the user's call). No I/O.

The user's frame is the innermost frame in a file of the project (not dd-build's own files,
and not a virtual environment kept in the project folder): for an exception raised inside a
library (pyarrow, json) the line of the user's code that called it. When no frame is the
project's (a `package.module:fn` installed elsewhere), it is the frame dd-build called.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

_OWN = os.path.dirname(os.path.abspath(__file__)) + os.sep  # dd-build's package folder
_OWN_REAL = os.path.dirname(os.path.realpath(__file__)) + os.sep


@dataclass(frozen=True)
class UserFrame:
    file: str  # project-relative posix path, or absolute outside the project
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "function": self.function}


@dataclass(frozen=True)
class Where:
    """The user's innermost frame, and the frame dd-build called when that is another."""

    at: UserFrame
    called_from: UserFrame | None = None

    def __str__(self) -> str:
        via = f" (called from {self.called_from})" if self.called_from else ""
        return f"at {self.at}{via}"

    def to_json(self) -> dict[str, Any]:
        """`{"file", "line", "function"}` of the innermost frame, with `called_from` (the same
        three) when the function dd-build called is another frame."""
        found = self.at.to_json()
        if self.called_from is not None:
            found["called_from"] = self.called_from.to_json()
        return found


class Remote(Exception):
    """The user's exception raised in another process (a worker of `executor: process`): its
    place and its traceback, as that process found them."""

    def __init__(self, found: Where | None, trace: str) -> None:
        super().__init__(trace.rstrip().rpartition("\n")[2])
        self.found = found
        self.trace = trace


def where(exc: BaseException, project_dir: Path) -> Where | None:
    """Where in the user's code `exc` was raised, or None when no frame is the user's."""
    if isinstance(exc, Remote):
        return exc.found
    if isinstance(exc, SyntaxError) and exc.filename and not exc.filename.startswith("<"):
        # raised by the compiler (the module's own line never ran): the line that is wrong
        return Where(_frame(traceback.FrameSummary(exc.filename, exc.lineno or 0, "<module>"),
                            project_dir))
    frames = [f for f in _user_frames(exc.__traceback__)
              if not f.filename.startswith("<") and not _is_own(f.filename)]
    if not frames:  # e.g. raised by importlib itself
        return None
    inside = [f for f in frames if _project_rel(f.filename, project_dir) is not None]
    if not inside:  # code outside the project: the function dd-build called
        return Where(_frame(frames[0], project_dir))
    at, entry = _frame(inside[-1], project_dir), _frame(inside[0], project_dir)
    return Where(at, entry if entry != at else None)


def user_traceback(exc: BaseException) -> str:
    """The traceback as Python prints it, starting at the user's code: the frames of dd-build
    (and of the import system loading the user's module) that called it are left out
    (chained exceptions are printed whole)."""
    if isinstance(exc, Remote):
        return exc.trace
    tb = exc.__traceback__
    while tb is not None and _is_callers(tb.tb_frame.f_code.co_filename) and \
            tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _user_frames(tb: TracebackType | None) -> list[traceback.FrameSummary]:
    """The frames below dd-build's: the first is the user's callable dd-build called."""
    frames = traceback.extract_tb(tb)
    start = 0
    while start < len(frames) and _is_own(frames[start].filename):
        start += 1
    return list(frames[start:])


def _frame(summary: traceback.FrameSummary, project_dir: Path) -> UserFrame:
    rel = _project_rel(summary.filename, project_dir)
    return UserFrame(rel if rel is not None else summary.filename, summary.lineno or 0,
                     summary.name)


def _project_rel(filename: str, project_dir: Path) -> str | None:
    """The project-relative path of a file of the project's own code, else None."""
    from .kinds.sourceload import not_project_folders

    root = str(project_dir)
    path = os.path.abspath(filename)
    inside = root.rstrip(os.sep) + os.sep
    if not path.startswith(inside):  # perhaps through a symlink on either side
        root, path = os.path.realpath(root), os.path.realpath(filename)
        inside = root.rstrip(os.sep) + os.sep
    if not path.startswith(inside) or _is_own(path):
        return None
    installed = tuple(p for p in not_project_folders(root) if p != inside)  # venvs, site-packages
    if path.startswith(installed):
        return None
    return os.path.relpath(path, root).replace(os.sep, "/")


def _is_callers(filename: str) -> bool:
    return filename.startswith("<frozen ") or _is_own(filename)


def _is_own(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_OWN) or \
        os.path.realpath(filename).startswith(_OWN_REAL)
