"""Ending a run stage's command with everything it started: its whole process group.

A run stage's command is started in its own session, so its process group holds the shell and
every child it starts (a compound `sleep 20; echo done > o.txt` runs `sleep` as a child). When
dd-build is interrupted it ends that group, waits for it, and only then lets go of the lock
the command inherited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

# Seconds the group has to end after SIGTERM, and again after SIGKILL.
GRACE_S = 3.0
_PROC = Path("/proc")


def end_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group of `proc` (its leader), a grace period, then SIGKILL; reap `proc`.

    A second SIGINT/SIGTERM/SIGHUP waits until this is done (pressing Ctrl-C twice must not
    leave the group running); it is delivered when this returns."""
    blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        _signal_group(proc.pid, signal.SIGTERM)
        if not _wait_group(proc, GRACE_S):
            _signal_group(proc.pid, signal.SIGKILL)
            _wait_group(proc, GRACE_S)
        proc.wait()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:  # every process of the group has ended
        pass
    except PermissionError:  # a member that changed its user: nothing more dd-build can do
        pass


def _wait_group(proc: subprocess.Popen[bytes], limit: float) -> bool:
    """Whether the group ended within `limit` seconds (the leader is reaped as it ends)."""
    deadline = time.monotonic() + limit
    while True:
        proc.poll()
        if not group_alive(proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: they hold no file (so
    no lock), and where init does not reap orphans they would stay in the group for ever."""
    if not _PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "stat"), "rb") as fh:
                stat = fh.read()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False
