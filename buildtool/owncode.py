"""dd-build's own code on disk: the folders and source files of its package, with their stats.

What is kept between runs and depends on dd-build's code (the compiled workflow, compiled.py;
the null-build stamp, nullstamp.py) keys these stats, so that dd-build changed in place (an
editable install checked out, a copy over the same version) is a miss. The folders are keyed
as well as the files: a module added, removed or renamed changes its folder's mtime and ctime
while the modules beside it keep theirs (a new package `explain/` is found before
`explain.py`, whose stats stay as they were). Bytecode folders are left out: Python writes
them as it imports (creating one still changes its parent folder's stats, once).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .loadfacts import signature

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .loadfacts import Signature


def package_paths() -> tuple[list[str], list[str]]:
    """(folders, `.py` files) of dd-build's package: the package's folder and every folder
    below it but bytecode folders, and the source files in them."""
    package = os.path.dirname(os.path.abspath(__file__))
    folders: list[str] = []
    files: list[str] = []
    for folder, dirs, names in os.walk(package):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        folders.append(folder)
        files.extend(os.path.join(folder, name) for name in names if name.endswith(".py"))
    return folders, files


def stats(paths: Iterable[str]) -> list[tuple[str, Signature]]:
    """Each of `paths` with its stats (loadfacts.signature); one that cannot be stat'ed (gone
    since it was listed) is left out."""
    found = []
    for path in paths:
        try:
            found.append((path, signature(os.stat(path))))
        except OSError:
            continue
    return found
