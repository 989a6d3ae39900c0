"""`dd-build init`: a minimal runnable project (the files of `starter/`) written into a folder.

Nothing is written until every check has passed, and no file that exists is overwritten
(a `.gitignore` only gains the lines it lacks)."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from .errors import UsageError
from .keys import NAME_PATTERN
from .locate import WORKFLOWFILE
from .model import ARTIFACT_FILES, TOOL_WORDS
from .wording import noun

# (file in starter/, where it goes in the project); the Workflowfile first
FILES = ((WORKFLOWFILE, WORKFLOWFILE), ("stages/topics.py", "stages/topics.py"),
         ("stages/questions.py", "stages/questions.py"), ("stages/summary.py", "stages/summary.py"))
GITIGNORE = ("gitignore", ".gitignore")
DEFAULT_NAME = "starter"


def write_project(folder: Path) -> list[tuple[str, str]]:
    """Write the starter project into `folder` (made if missing); each file's path, with the
    line saying what was done to it. A UsageError, with nothing touched, if `folder` holds a Workflowfile or any file
    the project would write."""
    _check_free(folder)
    name = workflow_name(folder)
    folder.mkdir(parents=True, exist_ok=True)
    said: list[tuple[str, str]] = []
    for source, target in FILES:
        text = _template(source).replace("{workflow}", name)
        path = folder / target
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as fh:  # never over a file made meanwhile
            fh.write(text)
        said.append((_shown(path), f"wrote {_shown(path)}"))
    gitignore = folder / GITIGNORE[1]
    said.append((_shown(gitignore), _gitignore(gitignore, _template(GITIGNORE[0]))))
    return said


def workflow_name(folder: Path) -> str:
    """The folder's name when it is a valid workflow name, else `starter`."""
    name = folder.absolute().resolve().name
    if re.fullmatch(NAME_PATTERN, name) and name not in TOOL_WORDS \
            and name.casefold() not in (f.casefold() for f in ARTIFACT_FILES):
        return name
    return DEFAULT_NAME


def _check_free(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"init: {folder} is a file, not a folder",
                         hint="name a new or existing folder: dd-build init DIR")
    if _stands(folder / WORKFLOWFILE):
        raise UsageError(f"init: {_shown(folder / WORKFLOWFILE)} already exists; nothing written",
                         hint="build that project with `dd-build`, or init another folder: "
                              "dd-build init DIR")
    in_the_way = [_shown(folder / part) for part in _folders_needed()
                  if _stands(folder / part) and not (folder / part).is_dir()]
    gitignore = folder / GITIGNORE[1]
    if _stands(gitignore) and not gitignore.is_file():
        in_the_way.append(_shown(gitignore))
    if in_the_way:
        raise UsageError(f"init: {', '.join(in_the_way)} "
                         f"{'is' if len(in_the_way) == 1 else 'are'} in the way (the project "
                         "writes a file there, or a folder for its files); nothing written",
                         hint="move them away, or init another folder: dd-build init DIR")
    taken = [_shown(folder / target) for _, target in FILES if _stands(folder / target)]
    if taken:
        raise UsageError(f"init: {', '.join(taken)} already {noun(len(taken), 'exists', 'exist')}"
                         "; nothing written",
                         hint="move them away, or init another folder: dd-build init DIR")


def _stands(path: Path) -> bool:
    """Anything at `path`, a dangling symlink too (which `exists()` calls nothing, and over
    which a write fails or lands wherever it points)."""
    return os.path.lexists(path)


def _folders_needed() -> list[str]:
    """The folders inside the project that the starter's files go in (`stages`)."""
    return sorted({parent.as_posix() for _, target in FILES
                   for parent in Path(target).parents if parent != Path(".")})


def _gitignore(path: Path, template: str) -> str:
    if not path.exists():
        path.write_text(template, encoding="utf-8")
        return f"wrote {_shown(path)}"
    # any bytes: a .gitignore in another encoding keeps them (only ASCII lines are added)
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    have = {line.strip() for line in text.splitlines()}
    missing = [line for line in template.splitlines()
               if line.strip() and not line.startswith("#") and line.strip() not in have]
    if not missing:
        return f"kept {_shown(path)} (it ignores the artifacts already)"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(("" if text.endswith("\n") or not text else "\n") + "\n".join(missing) + "\n")
    return f"added {', '.join(missing)} to {_shown(path)}"


def _template(name: str) -> str:
    return resources.files("buildtool").joinpath("starter", name).read_text(encoding="utf-8")


def _shown(path: Path) -> str:
    return path.as_posix()
