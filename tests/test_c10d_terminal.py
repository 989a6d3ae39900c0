"""Live progress on a real pseudo-terminal: while a stage runs its line shows batches done of
total and redraws in place; when the build ends the screen holds what a build off a terminal
prints (a `▶` line and one result line per stage) and nothing of the live lines. Batches wait
on files the test creates, so each moment is reached by synchronisation, never by timing.

The screen is read with a small terminal (`Screen`): text, CR, LF, autowrap at the width,
erase-in-line, cursor up and cursor show/hide; any other escape sequence fails the test."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Project

GATED = '''
import time
from pathlib import Path

HERE = Path(__file__).parent

def rows(ctx):
    """Batch i says it began (`reached-STAGE-i`), then waits for `go-STAGE-i`; a batch named
    in FAIL_ONCE fails its first attempt."""
    name = f"{ctx.stage_name}-{ctx.batch_index}"
    (HERE / f"reached-{name}").write_text("x")
    while not (HERE / f"go-{name}").exists():
        time.sleep(0.01)
    failed = HERE / f"failed-{name}"
    if (HERE / f"fail-once-{name}").exists() and not failed.exists():
        failed.write_text("x")
        raise ValueError(f"first attempt of {name}")
    return [{"i": ctx.offset + k} for k in range(ctx.size)]

def count(ctx):
    import pyarrow as pa
    return [{"n": sum(t.num_rows for t in ctx.inputs.values() if isinstance(t, pa.Table))}]

def broken(ctx):
    raise RuntimeError("this stage always fails")
'''

STAGE = "answers_from_the_model"  # long: on a narrow terminal its live line must be cut

WORKFLOW = f"""
workflow: demo
stages:
  {STAGE}:
    generate: code/gated.py:rows
    num_records: 6
    batch_size: 2
    retries: 1
  joined:
    transform: code/gated.py:count
    inputs: [{STAGE}]
"""

START = re.compile(r"▶ (\w+): run: never built: no record$")
DONE = re.compile(r"✓ (\w+): completed \((\d+) rows?, (\d+) of \3 batch(es)? run\) in [\d.]+s$")
LIVE = re.compile(r"\d+/\d+ batch|running|…")  # what only a live line holds


# ---------------------------------------------------------------- a small terminal


class Screen:
    """The text a terminal of `cols` columns shows after `feed`, with unlimited scrollback."""

    CSI = re.compile(r"\x1b\[(\??)(\d*)([A-Za-z])")

    def __init__(self, cols: int) -> None:
        self.cols = cols
        self.rows: list[list[str]] = [[]]
        self.continued: set[int] = set()  # rows begun by autowrap
        self.row = self.col = 0
        self.cursor_shown = True

    def feed(self, text: str) -> None:
        pos = 0
        while pos < len(text):
            if text[pos] == "\x1b":
                match = self.CSI.match(text, pos)
                assert match, f"unknown escape sequence {text[pos:pos + 8]!r}"
                self._csi(*match.groups())
                pos = match.end()
                continue
            self._char(text[pos])
            pos += 1

    def _csi(self, private: str, arg: str, code: str) -> None:
        n = int(arg) if arg else None
        if private:
            assert n == 25 and code in "hl", f"unknown sequence ?{arg}{code}"
            self.cursor_shown = code == "h"
        elif code == "A":
            self.row, self.col = max(0, self.row - (n or 1)), min(self.col, self.cols - 1)
        elif code == "K":
            line = self.rows[self.row]
            if n == 2:
                line.clear()
                self.continued.discard(self.row)
            else:
                assert n in (None, 0), f"erase mode {n}"
                del line[self.col:]
        else:
            raise AssertionError(f"unknown sequence {arg}{code}")

    def _char(self, ch: str) -> None:
        if ch == "\r":
            self.col = 0
        elif ch == "\n":
            self._down()
            self.continued.discard(self.row)
        elif ch in "\x07\b":
            raise AssertionError(f"unexpected control character {ch!r}")
        else:
            if self.col >= self.cols:  # autowrap
                self._down()
                self.continued.add(self.row)
                self.col = 0
            line = self.rows[self.row]
            line.extend(" " * (self.col - len(line)))
            line[self.col:self.col + 1] = [ch]
            self.col += 1

    def _down(self) -> None:
        self.row += 1
        if self.row == len(self.rows):
            self.rows.append([])

    def lines(self, keep_wrapped_spaces: bool = False) -> list[str]:
        """The logical lines shown (rows joined where one wrapped into the next), trailing
        blank rows left out; with `keep_wrapped_spaces`, a row that wrapped keeps its trailing
        spaces (they are text)."""
        out: list[str] = []
        for i, row in enumerate(self.rows):
            text = "".join(row)
            if not (keep_wrapped_spaces and i + 1 in self.continued):
                text = text.rstrip()
            if i in self.continued and out:
                out[-1] += text
            else:
                out.append(text)
        while out and not out[-1]:
            out.pop()
        return out

    def physical(self) -> list[str]:
        return ["".join(row).rstrip() for row in self.rows]


def test_the_screen_follows_a_redraw() -> None:
    """The test's terminal itself: a line redrawn in place and one wrapped at the width."""
    screen = Screen(10)
    screen.feed("keep\r\n\x1b[?25lone\r\x1b[2Ktwo\r\n0123456789ab\r\n\x1b[1A\x1b[2K\x1b[1A\x1b[2Kx")
    assert screen.lines() == ["keep", "two", "x"]
    screen.feed("\r\n0123456789ab\x1b[?25h")
    assert screen.physical()[-2:] == ["0123456789", "ab"] and screen.lines()[-1] == "0123456789ab"
    assert screen.cursor_shown


# ---------------------------------------------------------------- a build on a terminal


_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_build_left_running() -> Iterator[None]:
    """A test that fails while its build waits on a gate file must not leave it waiting."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Terminal:
    """dd-build (or a Python `script`) with stdin, stderr (and stdout, unless `stdout_pipe`)
    on a pseudo-terminal of `cols` columns; what it shows is read as it comes."""

    def __init__(self, project: Project, args: list[str], cols: int = 100,
                 stdout_pipe: bool = False, script: Path | None = None, rows: int = 30,
                 **env: str) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        environ = project.env(TERM="xterm", **env)
        for name in ("COLUMNS", "LINES"):
            if name not in env:
                environ.pop(name, None)
        self.cols = cols
        self.proc = subprocess.Popen(
            [sys.executable, *([str(script)] if script else ["-m", "buildtool"]), *args],
            cwd=project.root, env=environ,
            stdin=slave, stdout=subprocess.PIPE if stdout_pipe else slave, stderr=slave,
            close_fds=True)
        _STARTED.append(self.proc)
        os.close(slave)
        self.master = master
        self.seen = b""
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the other side is closed by every holder
                chunk = b""
            with self.changed:
                self.seen += chunk
                self.changed.notify_all()
            if not chunk:
                return

    def text(self) -> str:
        with self.changed:
            return self.seen.decode(errors="replace")

    def wait_for(self, what: Callable[[str], bool], about: str) -> None:
        """Until what the terminal showed satisfies `what` (a limit only against a hang)."""
        deadline = time.monotonic() + 120
        with self.changed:
            while not what(self.seen.decode(errors="replace")):
                if self.proc.poll() is not None and not self.reader.is_alive():
                    raise AssertionError(f"ended before {about}: {self.seen!r}")
                assert time.monotonic() < deadline, f"never {about}: {self.seen!r}"
                self.changed.wait(1)

    def finish(self) -> tuple[int, str, str]:
        """The exit code, everything the terminal showed, and stdout when piped."""
        out = self.proc.stdout.read().decode() if self.proc.stdout else ""
        code = self.proc.wait(timeout=120)
        self.reader.join(timeout=120)
        os.close(self.master)
        return code, self.text(), out

    def screen(self, text: str | None = None) -> Screen:
        screen = Screen(self.cols)
        screen.feed(self.text() if text is None else text)
        return screen


@pytest.fixture
def gated(project: Project) -> Project:
    project.write("code/gated.py", GATED)
    project.write("Workflowfile", WORKFLOW)
    return project


def _go(project: Project, *batches: int, stage: str = STAGE) -> None:
    for index in batches:
        (project.root / "code" / f"go-{stage}-{index}").write_text("x")


def _reached(project: Project, term: Terminal, index: int, stage: str = STAGE) -> None:
    project.wait_for(f"code/reached-{stage}-{index}", term.proc)


def _check_final(lines: list[str], stages: list[str]) -> None:
    """A `▶` line and a `✓` line per stage, in order, and nothing else (no live line)."""
    assert len(lines) == 2 * len(stages), lines
    for i, stage in enumerate(stages):
        start, done = START.match(lines[2 * i]), DONE.match(lines[2 * i + 1])
        assert start and start.group(1) == stage, lines
        assert done and done.group(1) == stage, lines


def test_live_lines_show_batches_and_end_as_one_result_per_stage(gated: Project) -> None:
    term = Terminal(gated, [])
    _reached(gated, term, 0)
    term.wait_for(lambda t: f"{STAGE}: 0/3 batches" in t, "0/3 shown")
    screen = term.screen()
    assert screen.lines()[-1] == f"  {STAGE}: 0/3 batches"  # below the ▶ line
    assert not screen.cursor_shown  # hidden while the live line is redrawn
    _go(gated, 0)
    _reached(gated, term, 1)
    term.wait_for(lambda t: f"{STAGE}: 1/3 batches · " in t and "ETA " in t, "1/3 with an ETA")
    live = term.screen().lines()
    assert live[0].startswith(f"▶ {STAGE}") and re.fullmatch(
        rf"  {STAGE}: 1/3 batches · [\d.]+ rows/s · ETA \d+s", live[-1]), live
    assert len(live) == 2  # the line changed in place: no line per batch
    _go(gated, 1, 2)
    code, shown, _ = term.finish()
    assert code == 0, shown
    final = term.screen()
    _check_final(final.lines(), [STAGE, "joined"])
    assert final.cursor_shown
    assert DONE.match(final.lines()[1]).group(2, 3) == ("6", "3")


def test_a_narrow_terminal_cuts_the_live_line_instead_of_wrapping_it(gated: Project) -> None:
    term = Terminal(gated, [], cols=40)
    _reached(gated, term, 0)
    _go(gated, 0)
    _reached(gated, term, 1)
    term.wait_for(lambda t: "1/3 batches · " in t and "rows/s" in t, "1/3 with a rate")
    screen = term.screen()
    live = screen.physical()[screen.row]
    # the stage name gives way first (its middle), so the figures show
    assert "…" in live and "1/3 batches · " in live and "rows/s" in live and len(live) <= 40, live
    assert STAGE not in live, live
    assert screen.row not in screen.continued  # the live line did not wrap
    _go(gated, 1, 2)
    code, shown, _ = term.finish()
    assert code == 0, shown
    _check_final(term.screen().lines(), [STAGE, "joined"])  # no piece of a live line left


def test_columns_narrows_the_live_lines_too(gated: Project) -> None:
    _go(gated, 0, 1, 2)
    term = Terminal(gated, [], cols=100, COLUMNS="40")
    code, shown, _ = term.finish()
    assert code == 0, shown
    frames = [f for f in re.split(r"\x1b\[2K|\r\n", shown) if LIVE.search(f)]
    assert frames and all(len(f.strip("\r")) <= 40 for f in frames), frames
    _check_final(term.screen().lines(), [STAGE, "joined"])


def test_quiet_shows_nothing_on_a_terminal(gated: Project) -> None:
    _go(gated, 0, 1, 2)
    code, shown, _ = Terminal(gated, ["-q"]).finish()
    assert code == 0 and shown == ""
    assert gated.record("joined")["status"] == "completed"


def test_json_keeps_stdout_one_document_and_stderr_plain(gated: Project) -> None:
    import json

    _go(gated, 0, 1, 2)
    code, shown, out = Terminal(gated, ["--json"], stdout_pipe=True).finish()
    assert code == 0, shown
    doc = json.loads(out)
    assert [s["result"] for s in doc["stages"]] == ["completed", "completed"]
    assert "\x1b" not in shown and "\r" not in shown.replace("\r\n", "\n")
    _check_final(shown.replace("\r\n", "\n").splitlines(), [STAGE, "joined"])  # on stderr


def test_retry_notes_and_failures_print_above_the_live_line(gated: Project) -> None:
    gated.write("Workflowfile", WORKFLOW + """
  broken:
    transform: code/gated.py:broken
    inputs: [joined]
""")
    (gated.root / "code" / f"fail-once-{STAGE}-1").write_text("x")
    term = Terminal(gated, [], DD_BUILD_RETRY_BASE_S="0.01")
    _go(gated, 0, 1)
    _reached(gated, term, 2)
    term.wait_for(lambda t: "retrying in" in t and "2/3 batches" in t, "the retry and 2/3")
    screen = term.screen().lines()
    assert "attempt 1 of 2 failed" in screen[1] and "retrying in" in screen[1], screen
    assert screen[-1].startswith(f"  {STAGE}: 2/3 batches"), screen  # still the last line
    _go(gated, 2)
    code, shown, _ = term.finish()
    assert code == 1, shown
    lines = term.screen().lines()
    _check_final([lines[0], *lines[2:5]], [STAGE, "joined"])
    assert lines[5].startswith("▶ broken") and lines[6].startswith("✗ broken: failed")
    assert not any(LIVE.search(line) for line in lines if line.startswith("  "))


def test_verbose_command_output_prints_above_the_live_line(project: Project) -> None:
    script = project.write("code/talk.py", """
        import sys
        from pathlib import Path
        print("line 1", flush=True)
        sys.stdout.write("10%\\r20%\\r"); sys.stdout.flush()
        print("line 2", flush=True)
        Path("said").write_text("x")
        while not Path("go").exists():
            pass
        Path("out.txt").write_text("done")
        """)
    project.write("Workflowfile", f"""
        workflow: demo
        stages:
          talk:
            run: {sys.executable} {script}
            outputs: [out.txt]
        """)
    term = Terminal(project, ["-v"])
    project.wait_for("said", term.proc)
    term.wait_for(lambda t: "line 2" in t, "line 2 echoed")
    lines = term.screen().lines()
    assert lines[-3:] == ["    | line 1", "    | line 2", "  talk: running"], lines
    (project.root / "go").write_text("x")
    code, shown, _ = term.finish()
    assert code == 0, shown
    lines = term.screen().lines()
    assert lines[0].startswith("▶ talk") and lines[1].startswith("  talk: $ ")
    assert lines[2:4] == ["    | line 1", "    | line 2"]
    assert re.fullmatch(r"✓ talk: completed in [\d.]+s", lines[-1]) and len(lines) == 5, lines


def test_an_interrupt_clears_the_live_line_and_says_what_was_kept(gated: Project) -> None:
    term = Terminal(gated, [])
    _go(gated, 0)
    _reached(gated, term, 1)
    term.wait_for(lambda t: "1/3 batches" in t, "1/3 shown")
    term.proc.send_signal(signal.SIGINT)
    code, shown, _ = term.finish()
    assert code == 130, shown
    screen = term.screen()
    assert screen.cursor_shown
    lines = screen.lines()
    assert len(lines) == 2 and START.match(lines[0]), lines  # no live line left
    assert lines[1] == f"interrupted in '{STAGE}' (1 of 3 batches kept); " \
        "run dd-build again to resume"


def test_a_null_build_on_a_terminal_prints_results_only(gated: Project) -> None:
    _go(gated, 0, 1, 2)
    assert Terminal(gated, []).finish()[0] == 0
    code, shown, _ = Terminal(gated, []).finish()
    assert code == 0
    assert "\x1b" not in shown  # nothing ran: no live line, not even a hidden cursor
    assert shown.replace("\r\n", "\n").splitlines() == [
        f"= {STAGE}: up to date (6 rows)", "= joined: up to date (1 row)"]


def test_results_go_to_stdout_when_it_is_not_the_terminal(gated: Project) -> None:
    """stdout to a pipe, stderr on the terminal: the result lines go down the pipe as they
    did; the terminal keeps the `▶` lines and no live line."""
    term = Terminal(gated, [], stdout_pipe=True)
    _reached(gated, term, 0)
    term.wait_for(lambda t: "0/3 batches" in t, "0/3 shown")
    _go(gated, 0, 1, 2)
    code, shown, out = term.finish()
    assert code == 0, shown
    assert [DONE.match(line).group(1) for line in out.splitlines()] == [STAGE, "joined"]
    assert "\x1b" not in out
    lines = term.screen().lines()
    assert [START.match(line).group(1) for line in lines] == [STAGE, "joined"], lines
