"""User code's output goes to its stage's log, never to dd-build's stdout or stderr.

`captured(log)` points file descriptors 1 and 2 at the log around one call of user code, so
print(), os.write(1, ...), C code and child processes all land there; dd-build's own output
(and its one `--json` document) cannot be interleaved with it. While inside, sys.stdout and
sys.stderr write to fds 1 and 2 (in a notebook they are streams of the notebook's), and
afterwards are the objects they were, should the code replace or close them; dd-build itself prints
to streams of its own (console.Console), which nothing user code does to sys.stdout can reach.
Each attempt of a stage starts a new log (`clear_log`); an attempt whose code prints nothing
leaves none.

While several stages run at once (`-j`, `shared_output`), file descriptors are one per process
and cannot follow a thread: fds 1 and 2 point at one log of the build for the whole time, and
sys.stdout and sys.stderr are routers that send each write to the log of the stage whose code
runs in the writing thread (a ContextVar, which batch threads inherit), so print() still lands
in its stage's log. What bypasses sys.stdout/sys.stderr (os.write(1, ...), C code, child
processes of Python stages) lands in the build's log. Run stages are not concerned: their
commands write to files of their own.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

LOG_NAME = "log.txt"
TAIL_LINES = 20
_TAIL_WIDTH = 300  # characters kept of each line of a tail

# Before each active capture: where fds 1 and 2 pointed (None: closed), and the objects
# sys.stdout and sys.stderr were (stage code may replace or close them).
_saved: list[tuple[int | None, int | None, Any, Any]] = []
# The stage log that sys.stdout/sys.stderr write to in this thread while stages run at once.
_CURRENT: contextvars.ContextVar[TextIO | None] = contextvars.ContextVar(
    "dd_build_stage_output", default=None)


class Shared:
    """fds 1 and 2 while stages run at once: a log of the build (`written`: something went
    there). `depth`: its entry in `_saved`."""

    def __init__(self, log: Path, depth: int) -> None:
        self.log = log
        self.depth = depth
        self.written = False


_shared: Shared | None = None


def stage_log(stage_dir: Path) -> Path:
    return stage_dir / LOG_NAME


def clear_log(log: Path) -> None:
    """A new attempt begins: the previous attempt's log goes."""
    log.unlink(missing_ok=True)


@contextlib.contextmanager
def captured(log: Path) -> Iterator[None]:
    """Fds 1 and 2 write to the end of `log` while inside; restored afterwards, also when
    the code raises or a signal interrupts it."""
    with LogCapture(log) as capture, capture.call():
        yield


class LogCapture:
    """The captures of one attempt of a stage, which may call its code many times (once per
    batch): the log is opened once and kept open, so a call costs a few dup2s rather than a
    file made and removed on every call. A log that nothing was printed into is removed when
    the capture is closed."""

    def __init__(self, log: Path) -> None:
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self.fd: int | None = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._stream: TextIO | None = None  # its stream while stages run at once

    def __enter__(self) -> LogCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Fds 1 and 2 write to the log while inside; restored afterwards, also when the code
        raises or a signal interrupts it. While stages run at once, only sys.stdout and
        sys.stderr do, in this thread (and the batch threads it starts)."""
        assert self.fd is not None, "the capture is closed"
        if _shared is not None:
            with self._routed():
                yield
            return
        _flush()
        depth = len(_saved)
        _saved.append((_dup(1), _dup(2), sys.stdout, sys.stderr))
        try:
            os.dup2(self.fd, 1)
            os.dup2(self.fd, 2)
            sys.stdout = _on_fd(sys.stdout, 1)
            sys.stderr = _on_fd(sys.stderr, 2)
            yield
        finally:
            _flush()
            restore(depth)

    @contextlib.contextmanager
    def _routed(self) -> Iterator[None]:
        assert self.fd is not None
        if self._stream is None:
            self._stream = open(self.fd, "w", encoding="utf-8", errors="backslashreplace",
                                closefd=False, buffering=1)
        token = _CURRENT.set(self._stream)
        try:
            yield
        finally:
            _CURRENT.reset(token)
            with contextlib.suppress(OSError, ValueError):  # a full disk
                self._stream.flush()

    def close(self) -> None:
        if self.fd is None:
            return
        if self._stream is not None:
            with contextlib.suppress(OSError, ValueError):
                self._stream.close()  # closefd=False: flushes only
            self._stream = None
        fd, self.fd = self.fd, None
        empty = os.fstat(fd).st_size == 0
        os.close(fd)
        if empty:  # nothing printed: no log
            with contextlib.suppress(OSError):  # an empty file left behind is harmless
                self.log.unlink(missing_ok=True)


@contextlib.contextmanager
def shared_output(log: Path) -> Iterator[Shared]:
    """While stages run at once: fds 1 and 2 write to `log` (a new one; removed when nothing
    was written), and sys.stdout/sys.stderr route each write to the current stage's log
    (`LogCapture.call`), or to fds 1 and 2 outside stage code."""
    global _shared
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    shared = Shared(log, len(_saved))
    try:
        _flush()
        _saved.append((_dup(1), _dup(2), sys.stdout, sys.stderr))
        try:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = _Router(_on_fd(sys.stdout, 1))
            sys.stderr = _Router(_on_fd(sys.stderr, 2))
            _shared = shared
            yield shared
        finally:
            _flush()
            restore(shared.depth)
            shared.written = os.fstat(fd).st_size > 0
    finally:
        os.close(fd)
        if not shared.written:
            with contextlib.suppress(OSError):
                log.unlink(missing_ok=True)


class _Router:
    """sys.stdout or sys.stderr while stages run at once: each write goes to the log of the
    stage whose code runs in this thread, else to `fallback` (on fd 1 or 2). Closing it (stage
    code may) closes nothing."""

    def __init__(self, fallback: Any) -> None:
        self._fallback = fallback

    def _target(self) -> Any:
        return _CURRENT.get() or self._fallback

    def write(self, text: str) -> int:
        target = self._target()
        return len(text) if target is None else int(target.write(text))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        target = self._target()
        if target is not None:
            target.flush()

    def close(self) -> None:
        pass

    @property
    def closed(self) -> bool:
        return False

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:  # encoding, errors, fileno, buffer, ...
        return getattr(self._target(), name)


def restore(depth: int = 0) -> None:
    """Point fds 1 and 2 back where they were before the capture at `depth` (0: the
    outermost) began. The Console calls restore() before it prints an error, in case an
    interrupt came in the middle of a capture's own restoring."""
    global _shared
    if _shared is not None and _shared.depth >= depth:
        _shared = None
    while len(_saved) > depth:
        out, err, stdout, stderr = _saved.pop()
        _put_back(out, 1)
        _put_back(err, 2)
        sys.stdout = _usable(stdout, 1)
        sys.stderr = _usable(stderr, 2)


def log_tail(log: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last lines of the log (each cut to a screen's width), or [] when there is none."""
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - lines * _TAIL_WIDTH * 4))
            data = fh.read()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace").rstrip("\n")
    tail = text.splitlines()[-lines:] if text else []
    return [line if len(line) <= _TAIL_WIDTH else line[:_TAIL_WIDTH] + "…" for line in tail]


def append_log(log: Path, text: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8", errors="replace") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")


def _dup(fd: int) -> int | None:
    try:
        return os.dup(fd)
    except OSError:  # dd-build was started with that descriptor closed
        return None


def _put_back(saved: int | None, fd: int) -> None:
    if saved is None:
        os.close(fd)
        return
    os.dup2(saved, fd)
    os.close(saved)


def _on_fd(stream: Any, fd: int) -> Any:
    """`stream` when it writes to `fd`; else (a notebook's or a test runner's stream, which
    keeps what is printed itself) a stream on `fd` for the time of the capture, so that
    print() in stage code reaches the log as it does under the CLI."""
    try:
        if stream is not None and stream.fileno() == fd:
            return stream
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of these
        pass
    try:
        return open(fd, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    except OSError:  # no such descriptor: leave it as it is
        return stream


def _usable(stream: Any, fd: int) -> Any:
    """The stream sys.stdout/sys.stderr was before user code ran, or, when that code closed it,
    a new one on the same descriptor (so the next stage's prints still reach its log)."""
    if stream is None or not getattr(stream, "closed", False):
        return stream
    try:
        return open(fd, "w", encoding=getattr(stream, "encoding", None) or "utf-8",
                    errors=getattr(stream, "errors", None) or "strict", closefd=False,
                    buffering=1 if getattr(stream, "line_buffering", False) else -1)
    except (OSError, ValueError, LookupError):  # no such descriptor: as Python would have it
        return None


def _flush() -> None:
    """Buffered output goes where fd 1 and 2 point now: Python's streams and C's stdio."""
    for stream in {id(s): s for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
                   if s is not None}.values():
        try:
            stream.flush()
        except (OSError, ValueError):  # a stream the user's code closed, or a full disk
            pass
    libc = _libc()
    if libc is not None:
        libc.fflush(None)


@functools.cache
def _libc() -> Any:
    """The C library, whose stdio buffers output of C extensions (flushed with fflush)."""
    import ctypes

    try:
        return ctypes.CDLL(None)
    except OSError:  # no C library to flush on this platform
        return None
