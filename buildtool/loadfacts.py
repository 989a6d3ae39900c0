"""What a reading of the Workflowfile asked besides the file's own bytes, and the answers.

Validation asks the file system about paths (is it a file? a folder? there at all?), reads the
code files that callables name, and asks the interpreter whether a module is found before
the project's file of that name. Each question goes through a `LoadFacts`, which answers it
and remembers the answer, so that a compiled workflow (compiled.py) can later ask each one
again, cheaply, and be used only when every answer is the same. Nothing the reading consults
may bypass this class: an unrecorded question is an input the cache would not see change.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

# What `kind` says of a path: the answers `is_file`, `is_dir` and `exists` are made of.
MISSING, FILE, FOLDER, OTHER = 0, 1, 2, 3
# What pathlib's is_file()/exists() take as "not there" instead of raising (its
# _IGNORED_ERRNOS): any other OSError (a permission error) is raised, as pathlib raises it.
_NOT_THERE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})
# A file whose timestamps are this close to the moment it was read may change again within
# the same timestamp tick (1 s or 2 s on some file systems) and keep its stat: its content is
# compared again (by digest) until it is older than this.
RACY_NS = 3_000_000_000

Signature = tuple[int, int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)


def kind_of(path: Path) -> int:
    """MISSING, FILE, FOLDER or OTHER, as `os.stat` (following symlinks) says; an OSError that
    pathlib would raise from is_file()/exists() is raised."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno in _NOT_THERE:
            return MISSING
        raise
    except ValueError:  # an embedded NUL: pathlib says False
        return MISSING
    if stat.S_ISREG(mode):
        return FILE
    return FOLDER if stat.S_ISDIR(mode) else OTHER


def signature(st: os.stat_result) -> Signature:
    """What identifies a file's content without reading it: a change of content changes it,
    but for a rewrite in place within one timestamp tick (see RACY_NS)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# A file's ctime comes from the kernel's coarse clock, which may lag the real time by a tick:
# a change this long (a few ticks) before dd-build began loading may have come after it.
_CHANGED_MARGIN_NS = 20_000_000


def changed_since_loaded(sigs: Iterable[tuple[int, ...]]) -> bool:
    """One of these (dd-build's own files) changed after dd-build began loading, or just
    before: the code that ran may not be the code these stats describe."""
    from . import LOADED_NS

    since = LOADED_NS - _CHANGED_MARGIN_NS
    return any(sig[4] >= since for sig in sigs)


def is_racy(sig: Signature, now_ns: int) -> bool:
    return max(sig[3], sig[4]) >= now_ns - RACY_NS


def digest(data: bytes) -> bytes:
    import hashlib  # only when a file is read (a full reading) or a racy one is checked

    return hashlib.blake2b(data, digest_size=20).digest()


def found_elsewhere(module: str) -> bool:
    """Whether importing `module` finds something before the project's file of that name: a
    module of the standard library, or one imported already."""
    top = module.split(".")[0]
    return top in sys.stdlib_module_names or top in sys.modules


class LoadFacts:
    """The questions one reading asked, with their answers. Paths are relative to
    `project_dir` (posix, as the Workflowfile writes them)."""

    def __init__(self, project_dir: Path) -> None:
        self.project_dir = project_dir
        self.started_ns = time.time_ns()
        self.kinds: dict[str, int] = {}
        # path → (signature, digest, racy) of each file read; the content read is the one
        # the signature was taken of (fstat before and after the read agree)
        self.reads: dict[str, tuple[Signature, bytes, bool]] = {}
        self.modules: dict[str, bool] = {}
        self.complete = True  # False when an answer cannot be asked again (an unreadable file)

    def kind(self, rel: str) -> int:
        if rel not in self.kinds:
            self.kinds[rel] = kind_of(self.project_dir / rel)
        return self.kinds[rel]

    def is_file(self, rel: str) -> bool:
        return self.kind(rel) == FILE

    def is_dir(self, rel: str) -> bool:
        return self.kind(rel) == FOLDER

    def exists(self, rel: str) -> bool:
        return self.kind(rel) != MISSING

    def read_bytes(self, rel: str) -> bytes | None:
        """The file's bytes, or None when it cannot be read (then the reading is not kept)."""
        try:
            with open(self.project_dir / rel, "rb") as fh:
                before = signature(os.fstat(fh.fileno()))
                data = fh.read()
                after = signature(os.fstat(fh.fileno()))
        except (OSError, ValueError):
            self.complete = False
            return None
        if before != after:  # written while read: which content was read is not known
            self.complete = False
        self.reads[rel] = (after, digest(data), is_racy(after, self.started_ns))
        return data

    def found_elsewhere(self, module: str) -> bool:
        top = module.split(".")[0]
        if top not in self.modules:
            self.modules[top] = found_elsewhere(top)
        return self.modules[top]
