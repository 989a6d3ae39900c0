"""Atomic writes: a uniquely named temp file, fsync, os.replace, fsync of the folder."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any


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
    return path.with_name(f".{path.name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:12]}")


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


def append_line_durably(path: Path, line: str) -> None:
    """Append one line and fsync it: O(1) per call, so journals never grow quadratically.
    The call that creates the file also fsyncs its folder, so the file's entry is durable too."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        created = False
    except FileNotFoundError:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        created = True
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)


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
