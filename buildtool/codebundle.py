"""The project's Python sources as one value, for machines without a copy of the project.

A stage on a Dask cluster runs its code from these bytes (kinds/bundleload.py), not from the
worker's disk or its module cache: what runs is what the client read, however long the worker
has lived, and a module the code imports lazily (inside a function) is there too. Each file's
state is taken as it is read (stat first: a later edit moves the stats recorded), so the
import graph records what ran.

What is collected: every `*.py` file under the project folder, except in hidden folders,
`__pycache__`, a virtual environment or site-packages kept there, `node_modules`, and the
folders named in `skip` (the artifacts).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .fingerprint import FileState
from .kinds.sourceload import file_state, not_project_folders

_NOT_CODE = frozenset({"__pycache__", "node_modules", "site-packages"})


@dataclass(frozen=True)
class CodeBundle:
    root: str  # the project folder, absolute, as the client has it
    files: dict[str, bytes]  # project-relative posix path -> source
    states: dict[str, FileState]  # the same paths -> the file's state as read
    digest: str = field(default="")  # of root, paths and sources: equal bundles, equal code

    def folders(self) -> frozenset[str]:
        """Every folder that holds a file of the bundle ("" is the project folder)."""
        found = {""}
        for rel in self.files:
            parts = rel.split("/")[:-1]
            found.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        return frozenset(found)


def collect(root: Path, skip: tuple[Path, ...] = ()) -> CodeBundle:
    """The bundle of the project folder `root` (absolute) as it is now."""
    base = os.path.normpath(str(root))
    excluded = {os.path.normpath(str(p)) for p in skip}
    excluded.update(p.rstrip(os.sep) for p in not_project_folders(base))
    files: dict[str, bytes] = {}
    states: dict[str, FileState] = {}
    for folder, dirs, names in os.walk(base):
        dirs[:] = sorted(d for d in dirs if _is_code_folder(os.path.join(folder, d), excluded))
        for name in sorted(names):
            if name.endswith(".py"):
                _read(os.path.join(folder, name), base, files, states)
    digest = hashlib.sha256(base.encode() + b"\0")  # the same code elsewhere is other code
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + states[rel].digest.encode() + b"\0")
    return CodeBundle(base, files, states, digest.hexdigest())


def _is_code_folder(path: str, excluded: set[str]) -> bool:
    name = os.path.basename(path)
    if name.startswith(".") or name in _NOT_CODE or path in excluded:
        return False
    return not os.path.exists(os.path.join(path, "pyvenv.cfg"))  # a virtual environment


def _read(path: str, base: str, files: dict[str, bytes], states: dict[str, FileState]) -> None:
    rel = os.path.relpath(path, base).replace(os.sep, "/")
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            data = f.read()
    except OSError:  # gone or unreadable since it was listed: not the project's code now
        return
    files[rel] = data
    states[rel] = file_state(path, rel, st, data)  # as sourceload records an execution
