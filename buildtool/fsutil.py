"""Atomic writes: a uniquely named temp file, fsync, os.replace, fsync of the folder.

Batch files are written without an fsync each (`write_file_unsynced`): a kill cannot tear
them (a temp file renamed into place), and `make_durable` later makes many files durable at
once (records.JournalWriter appends journal lines the same way).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Temp names: the pid, a token drawn once per process and a counter (cheaper than a uuid4).
_TOKEN = os.urandom(4).hex()
_SERIAL = itertools.count()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durably(folder: Path) -> None:
    """Create `folder` and its missing parents, fsyncing the parent of each folder created, so
    that a file made durable inside it cannot vanish with its folder after a power loss. One stat
    when the folder is already there."""
    if folder.is_dir():
        return
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:  # made meanwhile by another build or thread; still sync its entry
            if not new.is_dir():
                raise
        _fsync_dir(new.parent)


def temp_name(path: Path) -> Path:
    """A temp path beside `path`, unique across processes and threads."""
    return path.with_name(_temp_base(path.name))


def _temp_base(name: str) -> str:
    return f".{name}.tmp.{os.getpid()}.{_TOKEN}{next(_SERIAL):x}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    make_dirs_durably(path.parent)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # e.g. the folder turned read-only: keep the first error
            pass
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            exc.filename = str(path)  # a failed write() or fsync() names no file: say which
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=1, sort_keys=False, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def write_file_unsynced(folder: str, name: str, data: Any) -> os.stat_result:
    """Write `data` (bytes or any buffer) as `folder/name` through a temp file renamed into
    place, with no fsync: readers, and a build after a kill, see the whole file or none.
    Not durable against a power loss until `make_durable`. Returns the file's stat."""
    path = os.path.join(folder, name)
    tmp = os.path.join(folder, _temp_base(name))
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:  # never written, or the folder turned read-only: keep the first error
            pass
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            exc.filename = path
        raise
    return os.stat(path)


def make_durable(files: Iterable[str], folders: Iterable[str]) -> None:
    """Make files written without an fsync (their data, and their entries in `folders`, the
    folders that hold them) durable against a power loss. Where the OS has syncfs (Linux),
    one call per filesystem of the folders; else an fsync of each file, then of each folder."""
    folders = list(dict.fromkeys(folders))
    syncfs = _syncfs()
    if syncfs is not None:
        devices: set[int] = set()
        for folder in folders:
            fd = os.open(folder, os.O_RDONLY)
            try:
                device = os.fstat(fd).st_dev
                if device not in devices:
                    devices.add(device)
                    syncfs(fd)
            finally:
                os.close(fd)
        return
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for folder in folders:
        _fsync_dir(Path(folder))


@functools.cache
def _syncfs() -> Callable[[int], None] | None:
    """syncfs(2) of the C library, raising OSError as os.fsync does; None where there is none
    (not Linux) or DD_BUILD_NO_SYNCFS is set (then each file is fsynced: tests use it)."""
    if not sys.platform.startswith("linux") or os.environ.get("DD_BUILD_NO_SYNCFS"):
        return None
    import ctypes

    try:
        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if call(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    return syncfs


def remove_path(path: Path) -> None:
    """Remove a file, a folder with all it holds, or a symlink itself (never what it points
    to); nothing when there is nothing."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def remove_temp_files_of(path: Path) -> None:
    """Delete the temp files that killed atomic writes of `path` left beside it, and no others:
    `path` may be in a user's folder (an export copy)."""
    prefix = f".{path.name}.tmp."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
