"""`--json`: stdout holds exactly one JSON document on every exit, whatever stage code prints.

User code's output (print, os.write(1), C stdio, child processes, prints at import) goes to
the stage's log at the file-descriptor level, with or without --json; a failure shows the
log's tail. Every error exit prints `{"ok": false, "error": {...}}`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest
from conftest import Project, Result

# Every way a stage's code can write to the process's stdout or stderr. Each marker names
# the stage and the channel, so a test can tell where each one ended up.
NOISY_CODE = '''
import ctypes, os, subprocess, sys
print("MARK-import-print")
sys.stderr.write("MARK-import-stderr\\n")

def noise(where):
    print(f"MARK-{where}-print")
    print(f"MARK-{where}-stderr", file=sys.stderr)
    os.write(1, f"MARK-{where}-fd1\\n".encode())
    os.write(2, f"MARK-{where}-fd2\\n".encode())
    subprocess.run(["echo", f"MARK-{where}-child"], check=True)
    os.system(f"echo MARK-{where}-shell >&2")
    ctypes.CDLL(None).printf(f"MARK-{where}-libc\\n".encode())  # left in C's stdio buffer

def rows(ctx):
    noise(f"{ctx.stage_name}{ctx.batch_index}")
    if os.environ.get("FAIL") == ctx.stage_name:
        raise ValueError("the code gave up")
    return [{"id": ctx.offset + i} for i in range(ctx.size)]

def join(ctx):
    noise(ctx.stage_name)
    if os.environ.get("FAIL") == ctx.stage_name:
        raise ValueError("the code gave up")
    return ctx.inputs["gen"]

def callback(ctx):
    noise(f"{ctx.stage_name}-callback")
'''

NOISY = """
workflow: demo
stages:
  gen:
    generate: code/noisy.py:rows
    num_records: 4
    batch_size: 2
    on_success: code/noisy.py:callback
  join:
    transform: code/noisy.py:join
    inputs: [gen]
"""

CHANNELS = ("print", "stderr", "fd1", "fd2", "child", "shell", "libc")


def _start_buffered(project: Project, *args: str, **env: str) -> subprocess.Popen[str]:
    """The CLI as users start it: Python's and C's stdout buffered (no PYTHONUNBUFFERED), so
    output still sitting in a buffer when the code returns must reach the log too."""
    full = {k: v for k, v in project.env(**env).items() if k != "PYTHONUNBUFFERED"}
    return subprocess.Popen([sys.executable, "-m", "buildtool", *args], cwd=project.root,
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _buffered(project: Project, *args: str, **env: str) -> Result:
    proc = _start_buffered(project, *args, **env)
    stdout, stderr = proc.communicate(timeout=300)
    return Result(proc.returncode, stdout, stderr)


def _noisy(project: Project) -> Project:
    project.write("code/noisy.py", NOISY_CODE)
    project.write("Workflowfile", NOISY)
    return project


def _document(result: Result) -> dict[str, Any]:
    """The whole of stdout is one JSON document (json.loads refuses anything around it)."""
    try:
        doc = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not one JSON document ({exc}):\n{result.stdout}\n"
                             f"stderr:\n{result.stderr}") from exc
    assert isinstance(doc, dict), doc
    return doc


def _error_document(result: Result, code: int) -> dict[str, Any]:
    assert result.code == code, f"exit {result.code}\n{result.stdout}\n{result.stderr}"
    doc = _document(result)
    assert doc["ok"] is False
    assert doc["error"]["exit_code"] == code
    assert doc["error"]["message"]
    assert "Traceback" not in result.stderr, result.stderr
    return doc


def _log(project: Project, stage: str) -> str:
    return (project.artifacts / stage / "log.txt").read_text()


# ----------------------------------------------------------------------------- user output

@pytest.mark.parametrize("json_flag", [True, False], ids=["json", "text"])
def test_everything_stage_code_prints_goes_to_its_log(project: Project, json_flag: bool) -> None:
    _noisy(project)
    result = _buffered(project, *(["--json"] if json_flag else []))
    assert result.code == 0, result.stderr
    if json_flag:
        doc = _document(result)
        assert doc["ok"] is True and "error" not in doc
        assert [s["result"] for s in doc["stages"]] == ["completed", "completed"]
    assert "MARK" not in result.stdout, result.stdout
    assert "MARK" not in result.stderr, result.stderr
    gen, join = _log(project, "gen"), _log(project, "join")
    for where in ("gen0", "gen1", "gen-callback"):
        for channel in CHANNELS:
            assert f"MARK-{where}-{channel}" in gen, (where, channel, gen)
    for channel in CHANNELS:
        assert f"MARK-join-{channel}" in join, (channel, join)
    # the file executes once per build process: its import-time output is in the log of the
    # stage that first loaded it
    assert "MARK-import-print" in gen and "MARK-import-stderr" in gen
    assert "MARK-import" not in join


def test_a_failing_stage_shows_the_tail_of_its_log(project: Project) -> None:
    _noisy(project)
    result = _buffered(project, "--json", FAIL="join")
    assert result.code == 1, result.stderr
    doc = _document(result)
    assert doc["ok"] is False
    assert doc["error"]["exit_code"] == 1 and "join" in doc["error"]["message"]
    join = next(s for s in doc["stages"] if s["stage"] == "join")
    assert join["result"] == "failed"
    assert join["log"] == "artifacts/demo/join/log.txt"
    assert "raised ValueError: the code gave up" in join["error"]
    assert "| MARK-join-libc" in join["error"]  # the last lines it printed
    assert "the traceback is in artifacts/demo/join/log.txt" in join["error"]
    # the human text on stderr says the same; the user's traceback is in the log only
    assert "| MARK-join-libc" in result.stderr
    assert "Traceback" not in result.stderr
    log = _log(project, "join")
    assert "Traceback (most recent call last)" in log and "ValueError: the code gave up" in log
    assert project.record("join")["status"] == "failed"
    assert "MARK-join-libc" in project.record("join")["error"]


def test_the_tail_is_the_last_lines_only(project: Project) -> None:
    project.write("code/chatty.py", '''
        def rows(ctx):
            for i in range(100):
                print(f"line {i}")
            raise RuntimeError("stop")
        ''')
    project.write("Workflowfile", """
        workflow: demo
        stages:
          chatty:
            generate: code/chatty.py:rows
            num_records: 1
        """)
    result = project.run("--json")
    stage = _document(result)["stages"][0]
    assert "the last 20 lines of its output" in stage["error"]
    assert "| line 99" in stage["error"] and "| line 80" in stage["error"]
    assert "| line 79\n" not in stage["error"]
    assert "line 0" in _log(project, "chatty")


def test_one_log_per_attempt(project: Project) -> None:
    _noisy(project)
    assert project.run("--json", FAIL="join").code == 1
    assert "Traceback" in _log(project, "join")
    project.write("code/noisy.py", NOISY_CODE.replace('"MARK-import-print"', '"MARK-again"'))
    result = project.run("--json")
    assert result.code == 0, result.stderr
    join = _log(project, "join")
    assert "MARK-again" in _log(project, "gen")  # the file executes once, as gen loads it
    assert "MARK-join-print" in join
    assert "Traceback" not in join and "MARK-import-print" not in join  # the old attempt's


def test_code_that_prints_nothing_leaves_no_log(project: Project) -> None:
    result = project.run("--json")
    assert result.code == 0, result.stderr
    assert not list(project.artifacts.rglob("log.txt"))


def test_json_documents_of_the_other_commands(project: Project) -> None:
    assert project.run("--json").code == 0
    docs = {}
    for args in (("status",), ("dag",), ("export", "a", "a.csv"), ("override", "a", "a.parquet"),
                 ("clean", "c")):
        if args[0] == "override":
            project.run("export", "a", "a.parquet")
        result = project.run(*args, "--json")
        assert result.code == 0, result.stderr
        docs[args[0]] = _document(result)
        assert docs[args[0]]["ok"] is True
    assert [s["stage"] for s in docs["dag"]["stages"]] == ["a", "b", "c"]
    assert docs["dag"]["stages"][2]["inputs"] == ["a", "b"]
    assert docs["export"]["rows"] == 20
    assert docs["clean"]["removed"] == ["artifacts/demo/c"]


# ----------------------------------------------------------------------------- error exits

def test_bad_yaml(project: Project) -> None:
    project.write("Workflowfile", "workflow: demo\nstages: [\n")
    doc = _error_document(project.run("--json"), 2)
    assert doc["error"]["file"] == "Workflowfile" and doc["error"]["line"] >= 1
    doc = _error_document(project.run("status", "--json"), 2)
    assert "workflow" not in doc  # not known: the file did not load


@pytest.mark.parametrize("args", [("--bogus",), ("--resume", "sometimes"), ("show",),
                                  ("status", "--bogus"), ("--js", "--bogus")])
def test_bad_arguments(project: Project, args: tuple[str, ...]) -> None:
    doc = _error_document(project.run(*args, "--json"), 2)
    assert doc["error"]["hint"]


def test_unknown_stage_and_missing_output(project: Project) -> None:
    doc = _error_document(project.run("--json", "nope"), 2)
    assert doc["workflow"] == "demo"
    doc = _error_document(project.run("show", "a", "--json"), 2)
    assert doc["error"]["stage"] == "a"


def test_strict_resume_refused(project: Project) -> None:
    doc = _error_document(project.run("--json", "--resume", "always"), 3)
    assert doc["workflow"] == "demo"
    assert [s["stage"] for s in doc["stages"]] == ["a", "b", "c"]  # the plan it refused
    doc = _error_document(project.run("--json", "-n", "--resume", "always"), 3)
    assert doc["dry_run"] is True


def test_lock_held(project: Project) -> None:
    first = project.start("--json", HANG_AT="b:0")
    try:
        project.wait_for("code/b-reached-0", first)
        doc = _error_document(project.run("--json"), 4)
        assert doc["workflow"] == "demo" and str(first.pid) in doc["error"]["message"]
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_stage_code_runs(project: Project, signum: int, code: int) -> None:
    project.write("code/loud.py", '''
        import time
        from pathlib import Path

        def rows(ctx):
            print("MARK-before-the-hang")  # still in sys.stdout's buffer at the signal
            reached = Path(__file__).parent / "b-reached-1"
            if ctx.batch_index == 1 and not reached.exists():  # hangs once
                reached.write_text("x")
                while True:
                    time.sleep(0.05)
            return [{"id": ctx.offset + i} for i in range(ctx.size)]
        ''')
    project.write("Workflowfile", CHAIN_WITH_LOUD_B)
    proc = _start_buffered(project, "--json")
    project.wait_for("code/b-reached-1", proc)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    doc = _error_document(Result(proc.returncode, stdout, stderr), code)
    assert {s["stage"]: s["result"] for s in doc["stages"]} == \
        {"a": "completed", "b": "not_run", "c": "not_run"}
    assert "MARK" not in stdout + stderr
    assert "MARK-before-the-hang" in _log(project, "b")
    assert project.record("b")["status"] == "interrupted"
    # fds 1 and 2 were put back: a later build prints its document to stdout again
    assert _document(project.run("--json"))["ok"] is True


CHAIN_WITH_LOUD_B = """
workflow: demo
stages:
  a:
    generate: code/stages.py:rows
    num_records: 20
    batch_size: 5
  b:
    generate: code/loud.py:rows
    seed: a
    num_records: 60
    batch_size: 10
  c:
    transform: code/stages.py:join
    inputs: [a, b]
"""


def test_no_json_flag_means_no_document(project: Project) -> None:
    project.write("Workflowfile", "workflow: demo\nstages: [\n")
    result = project.run()
    assert result.code == 2 and result.stdout == ""
