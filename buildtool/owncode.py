"""dd-build's own code: which dd-build this process runs, and its package on disk.

- `identity()`: its version and a digest of its package's sources. A Dask worker runs
  dd-build's own code from its own install (the batch's context, its rng seeding, its
  retries, the table's encoding), and the stage's code from the client's bytes
  (codebundle.py). Where the two dd-builds differ (another version, an edited file), a batch
  computed there could differ from one computed here while every fingerprint says up to date;
  so the client sends its identity with each stage's payload and a worker whose identity
  differs fails the stage (daskwork.py). The digest covers every `*.py` file under the
  package's folder (its path relative to the folder, and its bytes), as the files are when
  first asked for: once per process (~5 ms for dd-build's ~1 MB of sources). The folder is
  only said, not compared: the same dd-build may be installed at different paths.
- `package_paths()` and `stats()`: the folders and source files of the package, with their
  stats. What is kept between runs and depends on dd-build's code (the compiled workflow,
  compiled.py; the null-build stamp, nullstamp.py) keys these stats, so that dd-build changed
  in place (an editable install checked out, a copy over the same version) is a miss. The
  folders are keyed as well as the files: a module added, removed or renamed changes its
  folder's mtime and ctime while the modules beside it keep theirs (a new package `explain/`
  is found before `explain.py`, whose stats stay as they were). Bytecode folders are left
  out: Python writes them as it imports (creating one still changes its parent folder's
  stats, once).
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import TYPE_CHECKING

from .loadfacts import changed_since_loaded, signature

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .loadfacts import Signature

# (version, digest of the package's sources, the package's folder): plain strings, so that a
# worker of any dd-build can read a client's (no class of this version is needed to unpickle).
Identity = tuple[str, str, str]


@functools.cache
def identity() -> Identity:
    """This process's dd-build (computed once)."""
    from . import __version__

    folder = os.path.dirname(os.path.abspath(__file__))
    return __version__, sources_digest(folder), folder


def sources_digest(folder: str) -> str:
    """sha256 of every `*.py` file under `folder` (relative posix path and bytes), in path
    order; a file that cannot be read counts as one whose bytes differ."""
    files = sorted((os.path.relpath(path, folder).replace(os.sep, "/"), path)
                   for path in package_paths(folder)[1])
    digest = hashlib.sha256()
    for rel, path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:  # unreadable: said in the digest, so it matches no other
            data = f"\0unreadable: {type(exc).__name__}".encode()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def package_paths(package: str | None = None) -> tuple[list[str], list[str]]:
    """(folders, `.py` files) of dd-build's package (or of the folder `package`): the folder
    and every folder below it but bytecode folders, and the source files in them."""
    package = package or os.path.dirname(os.path.abspath(__file__))
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


def edited_since_loaded(code: Iterable[tuple[str, tuple[int, ...]]]) -> bool:
    """Whether any file of `code` (stats taken for a cache's key: dd-build's and PyYAML's
    files, dd-build's folders), or any source file of dd-build's package, changed after
    dd-build began loading: what ran may not be the code those stats describe, so the cache
    is not stored. Files only: a folder's ctime also moves when Python adds a `__pycache__` to
    it (a fresh checkout's first commands, or another process's, while a long-lived one runs),
    which changes no code; a module added to a folder meanwhile shows by its own file."""
    code = list(code)
    folders, files = package_paths()
    skip, listed = set(folders), {path for path, _ in code}
    return changed_since_loaded(sig for path, sig in code if path not in skip) or \
        changed_since_loaded(sig for _, sig in stats(f for f in files if f not in listed))
