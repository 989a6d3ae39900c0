"""Bugs found by hunting the null-build stamp (nullstamp.py): cases where a command answered
from the stamp says something other than the full path would (the same command with the
stamp removed). Each test was xfail(strict) until its bug was fixed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, Project, Result


def run(project: Project, *args: str, env: dict[str, str] | None = None
        ) -> tuple[Result, bool]:
    """The CLI, and whether it answered from the stamp (no planning module imported)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "buildtool", *args],
                          cwd=project.root, env=env or project.env(), capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    lines = proc.stderr.splitlines(keepends=True)
    fast = not any(" buildtool.plan\n" in line or " buildtool.execute\n" in line
                   for line in lines if line.startswith("import time:"))
    stderr = "".join(line for line in lines if not line.startswith("import time:"))
    return Result(proc.returncode, proc.stdout, stderr), fast


def stamps(project: Project) -> list[Path]:
    folder = project.root / "artifacts" / ".compiled"
    return sorted(folder.glob("*.stamp")) if folder.is_dir() else []


def settled(project: Project) -> None:
    """Wait until the code file is no longer racy for the compiled workflow (as
    test_nbfast_stamp.settled does)."""
    from buildtool.loadfacts import RACY_NS

    st = (project.root / "code" / "stages.py").stat()
    wait = max(st.st_mtime_ns, st.st_ctime_ns) + RACY_NS - time.time_ns()
    if wait > 0:
        time.sleep(wait / 1e9 + 0.05)


def _full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is full: the first write to its write end blocks until the read
    end is drained (a sync point that holds a process still without any deadline)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    try:  # fill the last few bytes a 4 KiB write did not fit
        while True:
            os.write(w, b"x")
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return r, w


def test_dd_build_upgraded_during_a_null_build_is_not_stamped_as_the_new_code(
        project: Project, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "buildtool", checkout / "buildtool",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**project.env(), "PYTHONPATH": str(checkout)}
    # bytecode is written, so that its appearance tells when a module was imported
    for name in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"):
        env.pop(name, None)
    assert run(project, env=env)[0].code == 0  # stages run
    settled(project)
    run(project, env=env)
    assert run(project, env=env)[1]  # answered from the stamp
    for p in stamps(project):  # the next null build takes the full path and stamps
        p.unlink()
    shutil.rmtree(checkout / "buildtool" / "__pycache__")

    # The full path, held at its first line of output (a full pipe) while dd-build is
    # upgraded in place: explain.py, which words that line, gets new wording.
    r, w = _full_pipe()
    proc = subprocess.Popen([sys.executable, "-m", "buildtool"], cwd=project.root, env=env,
                            stdout=w, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    os.close(w)
    try:
        # explain.py is first imported to word the first stage's line, after the planning:
        # once its bytecode is there, the command is at (or just before) its first write
        loaded = checkout / "buildtool" / "__pycache__"
        while not list(loaded.glob("explain.*.pyc")):
            assert proc.poll() is None
            time.sleep(0.01)
        explain = checkout / "buildtool" / "explain.py"
        text = explain.read_text()
        assert ': up to date"' in text
        explain.write_text(text.replace(': up to date"', ': current"'))
        while os.read(r, 1 << 16):  # let it print and end
            pass
        assert proc.wait(timeout=300) == 0
    finally:
        os.close(r)
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    got, fast = run(project, env=env)
    # expected: the full path of the new code, "= a: current (20 rows)";
    # actual: the old code's "= a: up to date (20 rows)", replayed from the stamp
    assert "= a: current (20 rows)" in got.stdout, (fast, got.stdout)
