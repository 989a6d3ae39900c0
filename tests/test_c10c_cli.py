"""`ctx.request()` through the real CLI: every request's monotonic entry and exit times are
logged by the stage code, and the log must keep the limit's bounds (starts within every
1-second window, requests in flight at once: counts, never how long the build took).

The two-concurrent-stages test needs `-j` and `concurrency:` (issue 10's other parts): it is
skipped until both are there, and runs as written once they are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from c10c_support import check_bounds, most_in_flight
from conftest import Project

from buildtool.keys import STAGE_KEYS

# Stage code: each request appends "stage pid start end" to stamps.log in one write
# (O_APPEND: lines from threads and processes never mix).
CODE = '''
import os, threading, time
from pathlib import Path

LOG = Path(__file__).parent / "stamps.log"


def _stamp(ctx, work_s):
    with ctx.request():
        start = time.monotonic()
        if work_s:
            time.sleep(work_s)
        end = time.monotonic()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{ctx.stage_name} {os.getpid()} {start!r} {end!r}\\n".encode())
    finally:
        os.close(fd)


def make(ctx):
    for _ in range(ctx.params.get("calls", 1)):
        _stamp(ctx, ctx.params.get("work_s", 0.005))
    return [{"i": ctx.offset + k} for k in range(ctx.size)]


def fan(ctx):
    """A transform calling its model from its own threads: they share the stage's limit."""
    threads = [threading.Thread(target=_stamp, args=(ctx, 0.1)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [{"n": 16}]


def slow(ctx):
    with ctx.request():
        pass
    (Path(__file__).parent / "first-done").write_text("x")
    with ctx.request():  # the limit allows the next one in 100 s
        pass
    return [{"i": 0}]
'''


def _spans(project: Project) -> dict[str, list[tuple[float, float]]]:
    found: dict[str, list[tuple[float, float]]] = {}
    for line in (project.root / "code" / "stamps.log").read_text().splitlines():
        stage, _pid, start, end = line.split()
        found.setdefault(stage, []).append((float(start), float(end)))
    return found


def _pids(project: Project) -> set[str]:
    return {line.split()[1] for line in
            (project.root / "code" / "stamps.log").read_text().splitlines()}


@pytest.fixture
def proj(project: Project) -> Project:
    project.write("code/limited.py", CODE)
    return project


def test_one_stage_keeps_its_limit(proj: Project) -> None:
    proj.write("Workflowfile", """\
        workflow: demo
        rate_limits:
          api: {requests_per_second: 20, max_in_flight: 1}
        stages:
          a:
            generate: code/limited.py:make
            num_records: 30
            batch_size: 1
            params: {calls: 1}
            rate_limit: api
        """)
    result = proj.run()
    assert result.code == 0, result.stderr
    spans = _spans(proj)["a"]
    assert len(spans) == 30
    check_bounds(spans, rate=20, cap=1)


def test_a_transforms_own_threads_share_its_limit(proj: Project) -> None:
    proj.write("Workflowfile", """\
        workflow: demo
        rate_limits:
          api: {requests_per_second: 30, max_in_flight: 2}
        stages:
          t:
            transform: code/limited.py:fan
            rate_limit: api
        """)
    result = proj.run()
    assert result.code == 0, result.stderr
    spans = _spans(proj)["t"]
    assert len(spans) == 16
    check_bounds(spans, rate=30, cap=2)
    assert most_in_flight(spans) == 2  # the threads did overlap: the cap was what held them


def test_without_a_rate_limit_request_is_a_no_op(proj: Project) -> None:
    proj.write("Workflowfile", """\
        workflow: demo
        stages:
          t:
            transform: code/limited.py:fan
        """)
    result = proj.run()
    assert result.code == 0, result.stderr
    assert most_in_flight(_spans(proj)["t"]) > 2  # nothing held the 16 threads back


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_during_a_wait_ends_the_build(proj: Project) -> None:
    proj.write("Workflowfile", """\
        workflow: demo
        rate_limits:
          api: {requests_per_second: 0.01}
        stages:
          a:
            generate: code/limited.py:slow
            num_records: 1
            rate_limit: api
        """)
    proc = proj.start()
    try:
        proj.wait_for("code/first-done", proc)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)  # a safety limit: the wait would last 100 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert proj.record("a")["status"] == "interrupted"


# ---------------------------------------------------------------- with -j and concurrency


def _has_concurrency() -> bool:
    if "concurrency" not in STAGE_KEYS or "executor" not in STAGE_KEYS:
        return False
    found = subprocess.run([sys.executable, "-m", "buildtool", "--help"], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__)
                                                                          .parents[1])})
    return "--jobs" in found.stdout


@pytest.mark.skipif(not _has_concurrency(), reason="needs -j and concurrency: (issue 10)")
@pytest.mark.parametrize("executor", ["thread", "process"])
def test_two_concurrent_stages_share_one_limit(proj: Project, executor: str) -> None:
    """Two stages built at once (-j 2), each with 8 batches in flight, name one limit: their
    requests together keep its rate and its cap."""
    stage = ("  {name}:\n    generate: code/limited.py:make\n    num_records: 24\n"
             "    batch_size: 1\n    concurrency: 8\n    executor: {executor}\n"
             "    params: {{calls: 2, work_s: 0.02}}\n    rate_limit: api\n")
    proj.write("Workflowfile", "workflow: demo\nrate_limits:\n"
               "  api: {requests_per_second: 25, max_in_flight: 3}\nstages:\n" +
               "".join(stage.format(name=n, executor=executor) for n in ("a", "b")))
    started = time.monotonic()
    result = proj.run("-j", "2")
    assert result.code == 0, result.stderr
    spans = _spans(proj)
    assert len(spans["a"]) == len(spans["b"]) == 48
    both = spans["a"] + spans["b"]
    check_bounds(both, rate=25, cap=3)
    assert all(start >= started for start, _ in both)
    # the two stages did run at once: their requests interleave
    a_first, a_last = min(s for s, _ in spans["a"]), max(s for s, _ in spans["a"])
    assert any(a_first < s < a_last for s, _ in spans["b"])
    if executor == "process":
        assert len(_pids(proj)) > 1  # the requests came from worker processes
