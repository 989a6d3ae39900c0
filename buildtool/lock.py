"""The workflow's build lock: an OS file lock, so a killed build never leaves it held."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import BuildLocked
from .fsutil import make_dirs_durably

LOCK_NAME = ".lock"
_held: list[int] = []  # descriptors of the locks this process holds


def held_lock_fds() -> tuple[int, ...]:
    """Passed on to a run stage's command: if dd-build is killed, the command keeps the lock
    until it ends, so no other build can record outputs the command may still overwrite."""
    return tuple(_held)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def build_lock(root: Path) -> Iterator[None]:
    make_dirs_durably(root)  # the artifacts folders every record is written into
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise _held_error(holder, path) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held.append(fd)
        yield
    finally:
        if fd in _held:
            _held.remove(fd)
        os.close(fd)


def _held_error(holder: str, path: Path) -> BuildLocked:
    if _alive(holder):
        return BuildLocked(f"another dd-build (pid {holder}) is building this workflow",
                        file=os.path.relpath(path),
                        hint="wait for it to finish, or stop that process")
    return BuildLocked(
        f"the lock is held by a command that dd-build (pid {holder}, no longer running) "
        "started for a `run` stage",
        file=os.path.relpath(path),
        hint="wait for that command to end, or stop it (see `fuser -v` on the lock file)",
    )
