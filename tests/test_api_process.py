"""The Python API leaves the caller's process as it found it: working folder, sys.path,
sys.modules, import hooks, sys.stdout, signal handlers; and an interrupt (KeyboardInterrupt,
SIGTERM) is recorded before it goes on."""

from __future__ import annotations

import builtins
import importlib
import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project

import buildtool

# Stage code that raises KeyboardInterrupt (as Ctrl-C in a notebook does) or sends itself
# SIGTERM at batch 2 while `code/stop` names the way; it prints, and notes the signal
# handlers it saw.
STOPPING = '''
import os, signal
from pathlib import Path

HERE = Path(__file__).parent

def rows(ctx):
    print(f"MARK-printed-{ctx.batch_index}")
    (HERE / "handler.txt").write_text(repr(signal.getsignal(signal.SIGTERM)))
    stop = HERE / "stop"
    if ctx.batch_index == 2 and stop.exists():
        if stop.read_text() == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt
    return [{"id": ctx.offset + i} for i in range(ctx.size)]
'''

STOPPING_FLOW = """
workflow: demo
stages:
  s:
    generate: code/stopping.py:rows
    num_records: 10
    batch_size: 2
"""


@pytest.fixture
def stopping(project: Project) -> Project:
    project.write("code/stopping.py", STOPPING)
    project.write("Workflowfile", STOPPING_FLOW)
    return project


def _process_state() -> dict[str, object]:
    return {"cwd": Path.cwd(), "path": list(sys.path), "hooks": list(sys.path_hooks),
            "import": builtins.__import__, "import_module": importlib.import_module,
            "stdout": sys.stdout, "stderr": sys.stderr,
            "signals": {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM,
                                                         signal.SIGHUP)}}


def test_keyboard_interrupt_is_recorded_then_raised(stopping: Project) -> None:
    stopping.write("code/stop", "keyboard")
    before = _process_state()
    with pytest.raises(KeyboardInterrupt):
        buildtool.build(stopping.root)
    assert _process_state() == before
    record = stopping.record("s")
    assert record["status"] == "interrupted" and len(record["batches"]) == 2
    (stopping.root / "code/stop").unlink()
    report = buildtool.build(stopping.root)
    s = report.stage("s")
    assert (s.action, s.result, s.batches_run) == ("resume", "completed", 3)
    assert buildtool.read_output(stopping.root, "s").column("id").to_pylist() == list(range(10))


def test_sigterm_is_recorded_then_ends_the_process(stopping: Project) -> None:
    stopping.write("code/stop", "sigterm")
    code = "import buildtool; buildtool.build(); print('not reached')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=stopping.root, env=stopping.env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert "not reached" not in proc.stdout
    record = stopping.record("s")
    assert record["status"] == "interrupted" and len(record["batches"]) == 2


def test_process_state_is_put_back(stopping: Project) -> None:
    before = _process_state()
    report = buildtool.build(stopping.root)
    assert report.ok
    assert _process_state() == before
    handler = (stopping.root / "code/handler.txt").read_text()
    assert handler != repr(signal.SIG_DFL)  # while it ran, SIGTERM was recorded first
    assert not [m for m in sys.modules if m.startswith("ddbuild_user_")]
    assert "MARK" in (stopping.artifacts / "s" / "log.txt").read_text()


def test_a_notebooks_stdout_stays_and_stage_prints_go_to_the_log(stopping: Project,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    notebook = io.StringIO()
    monkeypatch.setattr(sys, "stdout", notebook)
    assert buildtool.build(stopping.root).ok
    assert sys.stdout is notebook
    print("after")
    assert notebook.getvalue() == "after\n"
    log = (stopping.artifacts / "s" / "log.txt").read_text()
    assert [f"MARK-printed-{i}" for i in range(5)] == log.split()


def test_the_callers_project_modules_are_theirs_again(project: Project,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    project.write("helpers.py", "WORD = 'old'\n")
    project.write("code/words.py", '''
        from helpers import WORD

        def make(ctx):
            return [{"word": WORD} for _ in range(ctx.size)]
        ''')
    project.write("Workflowfile", """
        workflow: demo
        stages:
          words:
            generate: code/words.py:make
            num_records: 2
        """)
    monkeypatch.syspath_prepend(str(project.root))
    import helpers  # type: ignore[import-not-found]  # the notebook's own import

    project.write("helpers.py", "WORD = 'new'\n")  # edited since the notebook imported it
    assert buildtool.build(project.root).ok
    assert sys.modules["helpers"] is helpers and helpers.WORD == "old"
    assert buildtool.read_output(project.root, "words").column("word").to_pylist() == \
        ["new", "new"]
    monkeypatch.delitem(sys.modules, "helpers")


SCRIPT = '''
import sys
from pathlib import Path

import buildtool

RUNNING = True  # the stage code looks for this: the caller's script stays __main__
first = buildtool.build()
words = Path("code/words.py")
words.write_text(words.read_text().replace("VERSION = 1", "VERSION = 2"))
second = buildtool.build()
print(first.ok, second.ok, buildtool.read_output(".", "words").column("v").to_pylist())
'''

MAIN_SEER = '''
import sys

def make(ctx):
    return [{"v": VERSION, "main": getattr(sys.modules["__main__"], "RUNNING", False)}
            for _ in range(ctx.size)]

VERSION = 1
'''


def test_a_script_in_the_project_folder(project: Project) -> None:
    project.write("run.py", SCRIPT)
    project.write("code/words.py", MAIN_SEER)
    project.write("Workflowfile", """
        workflow: demo
        stages:
          words:
            generate: code/words.py:make
            num_records: 2
        """)
    proc = subprocess.run([sys.executable, "run.py"], cwd=project.root, env=project.env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "[2,", "2]"]
    assert project.table("words").column("main").to_pylist() == [True, True]
