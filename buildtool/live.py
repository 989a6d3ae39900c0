"""The live progress area of a build on a terminal: one line per running stage (batches
done/total, rows/s, ETA, batches in flight, retries), redrawn in place below what dd-build
prints, and removed when the stage ends (its result line is printed above, in its place).

Only a build whose stderr is a terminal uses it (Console.live). The display library, rich,
is imported when the first stage starts running, so a null build, `status`, `--version`,
a build off a terminal and `-q` never load it. The line's wording (`progress_text`) needs
no library and is tested on its own.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import RenderableType

Writer = Callable[[TextIO | None, str, str], None]  # console._write: (stream, text, end)


@dataclass
class StageProgress:
    """One running stage as its Reporter.progress calls tell it. `rows` and `retries` are
    cumulative for this run; `done` counts batches a resume kept too, so the rate and the ETA
    are worked out from the batches done since the stage started (`done - kept`)."""

    started: float = field(default_factory=time.monotonic)
    done: int = 0
    total: int | None = None
    in_flight: int = 0
    rows: int = 0
    retries: int = 0
    kept: int | None = None  # batches done at the first call (kept by a resume)
    last_done_at: float | None = None  # when the latest batch of this run finished

    def update(self, done: int, total: int | None, in_flight: int, rows: int,
               retries: int, now: float | None = None) -> bool:
        """Take one call in; True when it says a batch more (or fewer) is done."""
        now = time.monotonic() if now is None else now
        if self.kept is None:
            self.kept = done
        moved = done != self.done or total != self.total
        if done > self.done and done > self.kept:
            self.last_done_at = now
        self.done, self.total = done, total
        self.in_flight, self.rows, self.retries = in_flight, rows, retries
        return moved


def progress_text(stage: str, p: StageProgress) -> str:
    """`  answers: 12/40 batches · 31.5 rows/s · ETA 1m 05s · 8 in flight · 2 retries`;
    the rate once a row is counted, the ETA once a batch of this run finished."""
    if p.total is None:
        parts = ["running"]
    else:
        parts = [f"{p.done}/{p.total} {'batch' if p.total == 1 else 'batches'}"]
        ran = p.done - (p.kept or 0)
        spent = None if p.last_done_at is None else p.last_done_at - p.started
        if spent is not None and spent > 0 and p.rows > 0:
            parts.append(f"{_rate(p.rows / spent)} rows/s")
        if spent is not None and ran > 0 and p.done < p.total:
            parts.append(f"ETA {_duration(spent / ran * (p.total - p.done))}")
    if p.in_flight:
        parts.append(f"{p.in_flight} in flight")
    if p.retries:
        parts.append(f"{p.retries} {'retry' if p.retries == 1 else 'retries'}")
    return f"  {stage}: " + " · ".join(parts)


def _rate(per_second: float) -> str:
    return f"{per_second:.1f}" if per_second < 100 else f"{per_second:,.0f}"


def _duration(seconds: float) -> str:
    whole = max(1, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


class LiveArea:
    """The lines below everything else on the terminal, one per key (a stage), in the order
    they were first shown. Text written while it shows goes above it (`write`), whole lines
    at a time; text for stdout when stdout is another file or terminal goes straight there.
    Thread-safe: one re-entrant lock around every change (re-entrant, so that Ctrl-C arriving
    inside a redraw can still `close` it)."""

    def __init__(self, err: TextIO, out: TextIO | None, write: Writer) -> None:
        from rich.console import Console as RichConsole
        from rich.live import Live

        self._err, self._out, self._raw = err, out, write
        self._same = out is not None and _same_terminal(out, err)
        self._lock = threading.RLock()
        self._lines: dict[str, str] = {}
        self._pending: dict[TextIO, str] = {}  # a line written in pieces, by stream
        self._console = RichConsole(file=err, force_terminal=True, color_system=None,
                                    highlight=False, markup=False, emoji=False,
                                    legacy_windows=False)
        self._live = Live(console=self._console, auto_refresh=False, transient=True,
                          redirect_stdout=False, redirect_stderr=False)
        self._shown = False
        atexit.register(self.close)

    def show(self, key: str, line: str) -> None:
        with self._lock:
            if self._lines.get(key) != line:
                self._lines[key] = line
                self._redraw()

    def drop(self, key: str) -> None:
        with self._lock:
            if self._lines.pop(key, None) is not None:
                self._redraw()

    def write(self, stream: TextIO | None, text: str) -> None:
        """`text` above the live lines (or, when none shows, as dd-build writes it anyway)."""
        with self._lock:
            if stream is None or not self._shown or not self._here(stream):
                self._raw(stream, text, "")
                return
            lines = (self._pending.pop(stream, "") + text).split("\n")
            if lines[-1]:
                self._pending[stream] = lines[-1]
            whole = [_overlaid(line) for line in lines[:-1]]
            if whole:
                from rich.text import Text

                self._console.print(Text("\n".join(whole)), soft_wrap=True)

    def close(self) -> None:
        """The build ends (or is interrupted): the live lines go, the cursor shows again.
        Also at exit (atexit), should an error path have missed it."""
        with self._lock:
            self._lines.clear()
            try:
                self._redraw()
            except OSError:  # the terminal went away (a hangup): nothing more can be shown
                self._shown = False

    def _here(self, stream: TextIO) -> bool:
        return stream is self._err or (stream is self._out and self._same)

    def _redraw(self) -> None:
        size = _terminal_size(self._err)  # each time: fds 1 and 2 may point at a log now
        if not self._lines or size[0] < _MIN_COLS or size[1] < _MIN_ROWS:
            # None left, or a terminal too small for one (it would wrap, or scroll away before
            # it is erased): the area goes; the lines come back if the window grows.
            if self._shown:
                self._shown = False
                self._live.stop()  # transient: erased, the cursor where the area began
                for stream, rest in self._pending.items():  # a line still unfinished
                    self._raw(stream, rest, "")
                self._pending.clear()
            return
        self._console.size = size
        if not self._shown:
            self._shown = True
            self._live.start()
        self._live.update(self._renderable(), refresh=True)

    def _renderable(self) -> RenderableType:
        from rich.console import Group
        from rich.text import Text

        lines = list(self._lines.values())
        room = max(1, self._console.size.height - 1)
        if len(lines) > room:  # never taller than the terminal: it could not be redrawn
            hidden = len(lines) - room + 1
            lines = [*lines[:room - 1], f"  … and {hidden} more running"]
        width = self._console.size.width
        return Group(*(Text(_fit(line, width), no_wrap=True, overflow="ellipsis")
                       for line in lines))


# A smaller terminal shows no live lines (results still print): narrower, a line would be
# little more than its ellipsis; shorter, the area and the row below it (rich ends a redraw
# there) do not fit, and what scrolls off cannot be erased.
_MIN_COLS, _MIN_ROWS = 10, 2
_NAME_KEPT = 8  # characters of a shortened stage name (with its indent) kept at least


def _fit(line: str, width: int) -> str:
    """A line too wide for the terminal loses the middle of its stage name first (rich's
    ellipsis then cuts what still does not fit): the figures are what changes."""
    from rich.cells import cell_len

    over = cell_len(line) - width
    head, sep, rest = line.partition(": ")
    if over <= 0 or not sep:
        return line
    keep = max(_NAME_KEPT, len(head) - over - 1)
    if keep >= len(head):
        return line
    return f"{head[:keep - keep // 3]}…{head[len(head) - keep // 3:]}{sep}{rest}"


def _overlaid(line: str) -> str:
    """What a terminal would show of a line a command redrew with `\\r` (a progress bar of
    its own): its last version. The live lines below keep it from being redrawn in place."""
    parts = [p for p in line.split("\r") if p]
    return parts[-1] if parts else ""


def _same_terminal(a: TextIO, b: TextIO) -> bool:
    try:
        return a.isatty() and os.path.samestat(os.fstat(a.fileno()), os.fstat(b.fileno()))
    except (OSError, ValueError):
        return False


def _terminal_size(stream: TextIO) -> tuple[int, int]:
    """Columns and lines: COLUMNS and LINES when set (as rich and shutil honour them), else
    the terminal's own size, read on every redraw so that a resized window is followed."""
    try:
        cols, rows = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):
        cols, rows = 80, 24
    # A terminal that reports no size (`script` without one, a serial console) says 0: take
    # 80 x 24 as shutil.get_terminal_size does.
    cols, rows = cols or 80, rows or 24
    if os.environ.get("COLUMNS", "").isdigit():
        cols = int(os.environ["COLUMNS"])
    if os.environ.get("LINES", "").isdigit():
        rows = int(os.environ["LINES"])
    return cols, rows
