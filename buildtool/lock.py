"""The workflow's build lock: an OS file lock, so a killed build never leaves it held.

The lock file holds the pid of the build that took it and when it took it, so `status` can
tell a stage a live build is running from one a killed build left `running`."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BuildLocked
from .fsutil import make_dirs_durably

if TYPE_CHECKING:
    from .records import StageRecord

LOCK_NAME = ".lock"
_held: list[int] = []  # descriptors of the locks this process holds
# Artifacts folders (of locks this process holds) that may hold leftovers of a killed command.
_pending: set[str] = set()
# The third line of a lock file whose holder ended cleanly and left nothing to sweep.
_TIDY = b"tidy"
# How long taking the lock waits out readers that hold it shared for a moment (`status`).
_READER_WAIT_S = 2.0


@dataclass(frozen=True)
class Holder:
    """The dd-build that holds a workflow's lock: its pid, and when it took the lock (None in
    a lock file written by an older dd-build)."""

    pid: int
    since: float | None


def held_lock_fds() -> tuple[int, ...]:
    """Passed on to a run stage's command: if dd-build is killed, the command keeps the lock
    until it ends, so no other build can record outputs the command may still overwrite."""
    return tuple(_held)


def _alive(pid: int | None) -> bool:
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse(text: bytes) -> tuple[int | None, float | None]:
    """(pid, since) from a lock file's `PID\\nSINCE\\n` (`PID\\n` from an older dd-build)."""
    lines = text.decode(errors="replace").split()
    try:
        pid = int(lines[0]) if lines else None
    except ValueError:
        pid = None
    try:
        since = float(lines[1]) if len(lines) > 1 else None
    except ValueError:
        since = None
    return pid, since


@contextmanager
def build_lock(root: Path) -> Iterator[None]:
    """Hold the workflow's lock. A holder that ends without an exception, and with no
    leftovers to sweep (`sweep_pending`), says so in the lock file: the next holder then
    knows that no killed command left temp files, journals or unlisted files behind."""
    make_dirs_durably(root)  # the artifacts folders every record is written into
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    key = str(root)
    ended = False
    try:
        _take(fd, path)
        if os.pread(fd, 64, 0).split()[2:3] != [_TIDY]:
            _pending.add(key)  # killed, failed, an older dd-build, or a new lock file
        os.ftruncate(fd, 0)
        mine = f"{os.getpid()}\n{time.time()!r}\n".encode()
        os.pwrite(fd, mine, 0)
        _held.append(fd)
        yield
        ended = True
    finally:
        if fd in _held:
            _held.remove(fd)
            if ended and key not in _pending:
                with contextlib.suppress(OSError):  # a read-only folder: the next one sweeps
                    os.pwrite(fd, _TIDY + b"\n", len(mine))
            _pending.discard(key)
        os.close(fd)


def sweep_pending(root: Path) -> bool:
    """Whether the last holder of the lock this process holds may have left leftovers (it
    was killed or ended with an error): the holder must sweep every stage folder."""
    return str(root) in _pending


def set_sweep_pending(root: Path, pending: bool) -> None:
    """Every folder was swept (False), or this holder may leave leftovers itself (True)."""
    if pending:
        _pending.add(str(root))
    else:
        _pending.discard(str(root))


def _take(fd: int, path: Path) -> None:
    """Take the lock, or raise BuildLocked when a build (or a command it left) holds it. A
    reader that holds it shared for a moment (`live_holder`) is waited out."""
    deadline = time.monotonic() + _READER_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        try:  # shared succeeds when only readers hold it
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _held_error(_parse(os.pread(fd, 64, 0))[0], path) from None
        fcntl.flock(fd, fcntl.LOCK_UN)  # so that two builds starting at once cannot both wait
        if time.monotonic() > deadline:
            raise _held_error(_parse(os.pread(fd, 64, 0))[0], path)
        time.sleep(0.001)


def live_holder(root: Path) -> Holder | None:
    """The live dd-build holding the workflow's lock now, or None. Taking the lock shared for
    a moment tells whether anyone holds it, without ever making a build fail to take it; a
    holder whose dd-build is gone is a `run` command a killed build left (None)."""
    try:
        fd = os.open(root / LOCK_NAME, os.O_RDONLY)
    except OSError:  # no lock file: no build has run here
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            held = True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            held = False
        pid, since = _parse(os.pread(fd, 64, 0))
    finally:
        os.close(fd)
    return Holder(pid, since) if held and pid is not None and _alive(pid) else None


def running_now(root: Path, records: Mapping[str, StageRecord | None]) -> dict[str, int]:
    """Stage → pid of the live build running it now. A record left `running` by a build that
    was killed is not one: no live build holds the lock, or the one that does started after
    the record did."""
    holder = live_holder(root)
    if holder is None:
        return {}
    return {name: holder.pid for name, record in records.items()
            if record is not None and record.status == "running"
            and (holder.since is None or (record.started_at or 0.0) >= holder.since)}


def _held_error(pid: int | None, path: Path) -> BuildLocked:
    holder = "unknown" if pid is None else str(pid)
    if _alive(pid):
        return BuildLocked(f"another dd-build (pid {holder}) is building this workflow",
                        file=os.path.relpath(path),
                        hint="wait for it to finish, or stop that process")
    return BuildLocked(
        f"the lock is held by a command that dd-build (pid {holder}, no longer running) "
        "started for a `run` stage",
        file=os.path.relpath(path),
        hint="wait for that command to end, or stop it (see `fuser -v` on the lock file)",
    )
