"""Start-up stays light, and --keep-going lets independent stages finish."""

from __future__ import annotations

import fcntl
import os
import py_compile
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import Project

INDEPENDENT = """
workflow: demo
stages:
  a:
    generate: code/stages.py:rows
    num_records: 4
    batch_size: 2
  b:
    generate: code/stages.py:rows
    seed: a
  c:
    generate: code/stages.py:rows
    num_records: 4
    batch_size: 2
"""


def _imported_modules(project: Project, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "buildtool", *args],
                          cwd=project.root, env=project.env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


def test_version_imports_no_heavy_module(project: Project) -> None:
    imports = _imported_modules(project, "--version")
    for heavy in ("pyarrow", "networkx", "yaml", "pandas"):
        assert f" {heavy}\n" not in imports and f" {heavy}." not in imports, heavy


def test_null_build_imports_no_pyarrow(project: Project) -> None:
    assert project.run().code == 0
    assert project.run("-q").code == 0  # stores the compiled workflow (and a null-build stamp)
    for stamp in (project.root / "artifacts" / ".compiled").glob("*.stamp"):
        stamp.unlink()  # the full path: the probe runs
    full = _imported_modules(project, "-q")
    assert " buildtool.probe\n" in full
    stamped = _imported_modules(project, "-q")  # the stamp the full path wrote answers this one
    assert " buildtool.probe\n" not in stamped
    for imports in (full, stamped):
        for heavy in ("pyarrow", "networkx", "yaml"):
            assert f" {heavy}\n" not in imports and f" {heavy}." not in imports, heavy


def test_keep_going_builds_independent_stages(project: Project) -> None:
    project.write("Workflowfile", INDEPENDENT)
    stopped = project.run("--json", FAIL_AT="a:1")
    assert stopped.code == 1
    results = {s["stage"]: s["result"] for s in stopped.json()["stages"]}
    assert results == {"a": "failed", "b": "not_run", "c": "not_run"}
    kept_going = project.run("--json", "--keep-going", FAIL_AT="a:1")
    assert kept_going.code == 1
    results = {s["stage"]: s["result"] for s in kept_going.json()["stages"]}
    assert results == {"a": "failed", "b": "not_run", "c": "completed"}



ORPHAN = """
workflow: demo
stages:
  slow:
    run: exec python3 -c "import os, time; open('code/cmd.pid', 'w').write(str(os.getpid())); time.sleep(120)"
    outputs: [out.txt]
"""


def _wait_until_unlocked(lock: Path, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    with open(lock, "rb") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                assert time.monotonic() < deadline, "the lock was never released"
                time.sleep(0.05)
                continue
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return


def test_a_run_command_left_by_a_killed_build_keeps_the_lock(project: Project) -> None:
    project.write("Workflowfile", ORPHAN)
    first = project.start()
    project.wait_for("code/cmd.pid", first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    command_pid = int((project.root / "code" / "cmd.pid").read_text())
    blocked = project.run()
    assert blocked.code == 4
    assert "run" in blocked.stderr and f"pid {first.pid}" in blocked.stderr
    os.kill(command_pid, signal.SIGKILL)
    _wait_until_unlocked(project.artifacts / ".lock")
    (project.root / "code" / "cmd.pid").unlink()
    project.write("Workflowfile", ORPHAN.replace("time.sleep(120)", "open('out.txt', 'w').write('x')"))
    assert project.run().code == 0


SELECTED = """
workflow: demo
stages:
  a:
    generate: code/stages.py:rows
    num_records: 20
    batch_size: 5
    processors: [{limit: 3}]
  report:
    run: python3 -c "import sys, pyarrow.parquet as pq; open(sys.argv[2], 'w').write(str(pq.read_table(sys.argv[1]).num_rows))" {inputs} {outputs}
    inputs: [a]
    outputs: [count.txt]
"""


def test_a_stage_input_is_the_selected_output_not_the_batches(project: Project) -> None:
    project.write("Workflowfile", SELECTED)
    result = project.run()
    assert result.code == 0, result.stderr
    assert (project.root / "count.txt").read_text() == "3"  # the processed output, not 20 rows


def test_a_run_command_never_runs_stale_bytecode(project: Project) -> None:
    project.write("code/mod.py", "VALUE = 1\n")
    project.write("code/run.py", "import sys\nsys.path.insert(0, 'code')\nimport mod\n"
                  "open(sys.argv[1], 'w').write(str(mod.VALUE))\n")
    project.write("Workflowfile", """
        workflow: demo
        stages:
          r:
            run: python3 code/run.py {outputs}
            code: [code/run.py, code/mod.py]
            outputs: [value.txt]
        """)
    mod = project.root / "code" / "mod.py"
    py_compile.compile(str(mod), doraise=True)  # a __pycache__ entry made from VALUE = 1
    before = mod.stat()
    mod.write_text("VALUE = 2\n")  # same size; same mtime as the cached bytecode expects
    os.utime(mod, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert project.run().code == 0
    assert (project.root / "value.txt").read_text() == "2"
