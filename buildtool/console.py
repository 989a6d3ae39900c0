"""dd-build's own output: where each kind of text goes, and the one `--json` document.

With cli.py and reporter.py, the printing layer: nothing below it prints. Text goes to
streams of dd-build's own (duplicates of fds 1 and 2, safe from what stage code does to
them); a reader that goes away does not stop the build; an internal error gets one screen
and its traceback in a file.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, TextIO

from .capture import restore
from .errors import EXIT_INTERNAL, describe

if TYPE_CHECKING:
    from .live import LiveArea
    from .report import BuildReport


def _to_devnull(stream: TextIO) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


class Console:
    """Where text goes: stdout, or stderr when stdout carries JSON; nothing with -q.

    With --json, stdout holds exactly one document, also on every error exit: `fail` prints
    `{"ok": false, "error": {...}}` with what is known (the workflow, the build's stages)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = getattr(args, "json", False)
        self.quiet = getattr(args, "quiet", False)
        self.verbose = getattr(args, "verbose", False)
        self.stdout, self.stderr = own_streams()
        self.tty = self.stderr is not None and self.stderr.isatty()
        # The live progress lines of a build (live.py): on a terminal that can redraw them,
        # not with -q, and not with --json (whose stderr is read by programs).
        self.live_ok = self.tty and not self.quiet and not self.json and \
            os.environ.get("TERM", "").lower() not in ("dumb", "unknown")
        self._live: LiveArea | None = None
        self.workflow: str | None = None  # set once the Workflowfile is loaded
        self.report: BuildReport | None = None  # set once a build (or its plan) is under way
        self._documented = False

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> Console:
        """The output options guessed from the raw arguments, for errors in parsing them."""
        flags = argparse.Namespace(json=False, quiet=False, verbose=False)
        for arg in argv:
            if arg == "--":
                break
            if arg.startswith("--j") and "--json".startswith(arg):
                flags.json = True
            elif arg in ("-v", "--verbose"):
                flags.verbose = True
        return cls(flags)

    def live(self, make: bool = True) -> LiveArea | None:
        """The live progress area, made (and rich imported) on first use when `make`; None off
        a terminal, with -q and with --json."""
        if make and self._live is None and self.live_ok and self.stderr is not None:
            from .live import LiveArea

            self._live = LiveArea(self.stderr, self.stdout, _write)
        return self._live

    def end_live(self) -> None:
        """The live lines go (an error exit, an interrupt): what follows is printed plainly."""
        if self._live is not None:
            self._live.close()

    def text(self, line: str) -> None:
        if not self.quiet:
            self._put(self.stderr if self.json else self.stdout, line)

    def progress(self, line: str, end: str = "\n") -> None:
        if not self.quiet:
            self._put(self.stderr, line, end)

    def error(self, line: str) -> None:
        self._put(self.stderr, line)

    def result(self, text: str) -> None:
        """What the command prints on stdout whatever -q says (a table, a graph, a schema)."""
        self._put(self.stdout, text)

    def _put(self, stream: TextIO | None, text: str, end: str = "\n") -> None:
        """Every line dd-build prints: above the live lines while they show."""
        if self._live is not None:
            self._live.write(stream, text + end)
        else:
            _write(stream, text, end)

    def document(self, value: Any) -> None:
        if self._documented:  # one document, whatever happens after the first
            return
        self._documented = True
        self._put(self.stdout, json.dumps(strict_json(value), indent=1, ensure_ascii=False,
                                          allow_nan=False, default=str))

    def fail(self, message: str, exit_code: int, fields: dict[str, Any] | None = None) -> int:
        """An error exit: the message on stderr, and with --json the error document."""
        restore()  # an interrupt may have come while user code's output was captured
        self.end_live()
        self.error(message)
        if self.json:
            self.document(self.error_document(message, exit_code, fields))
        return exit_code

    def error_document(self, message: str, exit_code: int,
                       fields: dict[str, Any] | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = self.report.to_json() if self.report is not None else {}
        if self.workflow is not None:
            doc.setdefault("workflow", self.workflow)
        doc["ok"] = False
        doc["error"] = {"message": message, "exit_code": exit_code, **(fields or {})}
        return doc

    def internal_error(self, exc: Exception) -> int:
        """A bug outside any stage: one screen, the traceback in a file (and shown with -v)."""
        import traceback  # an error path: kept out of start-up

        restore()
        self.end_live()
        trace = "".join(traceback.format_exception(exc))
        path = _save_traceback(trace)
        if self.verbose or path is None:  # with no file to keep it in, shown rather than lost
            self.error(trace.rstrip())
        where = f"{path} (-v prints it)" if path and not self.verbose else path
        return self.fail(internal_message(describe(exc), None, where), EXIT_INTERNAL,
                         {"traceback_file": path} if path else None)


def strict_json(value: Any) -> Any:
    """`value` with NaN and ±infinity (which JSON has no number for, and strict parsers such as
    JavaScript's JSON.parse refuse) as null, as JavaScript's JSON.stringify writes them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


@cache
def own_streams() -> tuple[TextIO | None, TextIO | None]:
    """dd-build's own stdout and stderr: text streams on duplicates of fds 1 and 2, made once,
    before any stage code runs. Stage code may replace or close sys.stdout and sys.stderr, and
    points fds 1 and 2 at its log while it runs (capture.py); neither reaches these, so dd-build's
    output (and its one `--json` document) is never lost or sent into a log."""
    return _own_stream(1, sys.stdout), _own_stream(2, sys.stderr)


def _own_stream(fd: int, like: TextIO | None) -> TextIO | None:
    try:
        dup = os.dup(fd)
    except OSError:  # started with that descriptor closed: what goes there is dropped
        return None
    return open(dup, "w", encoding=getattr(like, "encoding", None) or "utf-8",
                errors=getattr(like, "errors", None) or "strict")


def _write(stream: TextIO | None, text: str, end: str = "\n") -> None:
    """Print dd-build's own text. A reader that went away (`dd-build -v | head -3`, `less`
    quit) must not fail a stage or stop the build: on a broken pipe the stream's file
    descriptor is pointed at os.devnull (as the Python docs advise for SIGPIPE), so this and
    every later write to it, and the flush at exit, go nowhere; the build runs to its end and
    the exit code is the build's."""
    if stream is None:
        return
    try:
        stream.write(text + end)
        stream.flush()
    except OSError as exc:
        if not isinstance(exc, BrokenPipeError) and exc.errno != errno.EPIPE:
            raise
        _to_devnull(stream)


def internal_message(error: str, stage: str | None, where: str | None) -> str:
    during = f" while running stage '{stage}'" if stage else ""
    lines = [f"dd-build internal error{during}: {error}"]
    if where:
        lines.append(f"  the traceback is in {where}")
    lines.append("  this is a bug in dd-build: please report it, with the traceback")
    return "\n".join(lines)


def _save_traceback(trace: str) -> str | None:
    """A file in the temp folder holding the traceback, or None when none can be written."""
    import tempfile

    try:
        fd, path = tempfile.mkstemp(prefix="dd-build-internal-error-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(trace)
    except OSError:
        return None
    return path
