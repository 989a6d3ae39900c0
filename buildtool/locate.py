"""Finding the Workflowfile: named with -f, or the nearest one at or above a folder (as git
finds `.git`). Used by the CLI and the Python API alike; prints nothing."""

from __future__ import annotations

from pathlib import Path

from .errors import WorkflowError

WORKFLOWFILE = "Workflowfile"
_START = "start a project there with `dd-build init`"


def find_workflowfile(start: Path, name: str = WORKFLOWFILE) -> Path:
    """The absolute path of `name` in `start` or in the nearest folder above it that holds
    one. A WorkflowError names `start` (absolute) when no folder up to the root does."""
    start = Path(start).absolute()
    for folder in (start, *start.parents):
        candidate = folder / name
        if candidate.is_file():
            return candidate
        if candidate.is_dir():  # the nearest thing of that name is not a file: say so
            raise _a_folder(candidate)
    raise WorkflowError(
        f"no {name} in {start} or any folder above it",
        hint=f"run in the project folder, name the file with -f FILE or the folder with "
             f"-C DIR, or {_START}")


def workflowfile_at(path: Path) -> Path:
    """`path` (as given with -f: relative to the working folder, no search), made absolute,
    once it is known to be a file."""
    absolute = Path(path).absolute()
    if absolute.is_dir():
        raise _a_folder(path)
    if not absolute.is_file():
        raise WorkflowError(
            f"no Workflowfile at {path} (looked for {absolute})",
            hint="-f names a file relative to the working folder (or to -C DIR); "
                 "`dd-build init` starts a new project")
    return absolute


def _a_folder(path: Path) -> WorkflowError:
    return WorkflowError(f"the Workflowfile {path} is a folder, not a file",
                         hint="name the file inside it with -f FILE, or run there with -C DIR")
