"""Found by the review of "Many batches in flight"."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from conftest import Project

POOLED = '''
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def call(i):
    Path(__file__).with_name(f"started-{i}").write_text("x")
    time.sleep(600)  # a model call far longer than any test: the build must not wait for it
    return i


def make(ctx):
    with ThreadPoolExecutor(2) as pool:
        values = list(pool.map(call, range(ctx.offset, ctx.offset + ctx.size)))
    return [{"v": v} for v in values]
'''


@pytest.mark.parametrize("concurrency, sig, code", [(2, signal.SIGINT, 130),
                                                     (3, signal.SIGINT, 130),
                                                     (3, signal.SIGTERM, 143)])
def test_an_interrupt_does_not_wait_for_threads_the_stage_code_started(
        tmp_path: Path, concurrency: int, sig: signal.Signals, code: int) -> None:
    """The stage's own thread pool is in a long call: the build still ends at once with
    130/143 (the interpreter would join those threads at exit), its record interrupted."""
    proj = Project(tmp_path / "p")
    proj.write("code/pooled.py", POOLED)
    proj.write("Workflowfile", f"""
        workflow: demo
        stages:
          a: {{generate: code/pooled.py:make, num_records: 8, batch_size: 2,
              concurrency: {concurrency}}}
        """)
    proc = proj.start()
    proj.wait_for("code/started-0", proc)
    proc.send_signal(sig)
    try:
        proc.wait(timeout=60)  # a deadline far below the 600 s call, not a timing assertion
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the build waited for the stage code's own threads") from None
    out, err = proc.communicate()
    assert proc.returncode == code, err
    assert proj.record("a")["status"] == "interrupted"
    assert "Fatal Python error" not in err


def test_a_terminal_that_reports_no_size_is_taken_as_80_by_24(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """`script` without a size gives a pty of 0 x 0: the live line was cut to nothing."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    from buildtool import live

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        with os.fdopen(slave, "w", closefd=False) as stream:
            assert live._terminal_size(stream) == (80, 24)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 50, 0, 0))
        with os.fdopen(slave, "w", closefd=False) as stream:
            assert live._terminal_size(stream) == (50, 30)
    finally:
        os.close(master)
        os.close(slave)
