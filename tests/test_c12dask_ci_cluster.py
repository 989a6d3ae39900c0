""".ci/with-dask-cluster (what .ci/run starts the CI cluster with) stops the scheduler, the
workers and what the command left running, and removes its temp folder, whatever happened:
the command failed, or the script got SIGINT or SIGTERM while the command ran."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from c12dask_support import needs_dask
from conftest import REPO

pytestmark = [needs_dask, pytest.mark.skipif(shutil.which("setsid") is None,
                                             reason="needs setsid (util-linux)")]

SCRIPT = REPO / ".ci" / "with-dask-cluster"

# The command: writes the cluster's pids and folder and a child of its own, then waits (or
# exits with the code it is given); on SIGINT it notes that its teardown ran.
PROBE = '''
import json, os, subprocess, sys, time
from pathlib import Path
from distributed import Client

out = Path(sys.argv[1])
with Client(os.environ["DD_BUILD_TEST_SCHEDULER"], timeout=30) as client:
    scheduler = client.run_on_scheduler(os.getpid)
    workers = client.run(lambda dask_worker: (os.getpid(), dask_worker.local_directory))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
pids = [scheduler, child.pid] + [pid for pid, _ in workers.values()]
folders = [folder for _, folder in workers.values()]
out.write_text(json.dumps({"pids": pids, "folders": folders}))
if sys.argv[2] != "wait":
    sys.exit(int(sys.argv[2]))
try:
    while True:
        time.sleep(0.05)
except KeyboardInterrupt:
    (out.parent / "teardown").write_text("ran")
    raise
'''


def _gone(pid: int) -> bool:
    """Ended: no such process, or a zombie left for init to reap."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def _start(tmp_path: Path, mode: str) -> subprocess.Popen[bytes]:
    (tmp_path / "probe.py").write_text(PROBE)
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    env.pop("DD_BUILD_TEST_SCHEDULER", None)
    (tmp_path / "tmp").mkdir()
    # SIGINT back to its default (a test runner may start us with it ignored): as in a shell
    return subprocess.Popen([str(SCRIPT), sys.executable, str(tmp_path / "probe.py"),
                             str(tmp_path / "seen.json"), mode],
                            cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "err", "wb"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _seen(tmp_path: Path, proc: subprocess.Popen[bytes]) -> dict:
    seen = tmp_path / "seen.json"
    deadline = time.monotonic() + 180
    while not seen.exists() or not seen.read_text():
        assert proc.poll() is None, (tmp_path / "err").read_text()
        assert time.monotonic() < deadline, "the cluster did not start"
        time.sleep(0.05)
    return json.loads(seen.read_text())


def _check_cleaned(tmp_path: Path, seen: dict) -> None:
    assert all(_gone(pid) for pid in seen["pids"]), seen
    assert len(seen["folders"]) == 2
    assert list((tmp_path / "tmp").iterdir()) == []  # the cluster's temp folder is gone


def _ended(proc: subprocess.Popen[bytes], seen: dict | None = None) -> int:
    """Its exit code; at teardown of a failed test, whatever it left is killed."""
    try:
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in (seen or {}).get("pids", []):
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_a_signal_mid_run_stops_everything_and_removes_the_folder(
        tmp_path: Path, signum: int) -> None:
    proc = _start(tmp_path, "wait")
    seen: dict = {}
    try:
        seen = _seen(tmp_path, proc)
        os.kill(proc.pid, signum)  # the script alone, as a CI runner's cancel may send it
    finally:
        code = _ended(proc, seen)
    assert code == 128 + signum
    assert (tmp_path / "teardown").read_text() == "ran"  # the command got SIGINT first
    _check_cleaned(tmp_path, seen)


def test_a_failed_command_gives_its_code_and_everything_is_stopped(tmp_path: Path) -> None:
    proc = _start(tmp_path, "3")
    code = _ended(proc)
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert code == 3
    _check_cleaned(tmp_path, seen)
