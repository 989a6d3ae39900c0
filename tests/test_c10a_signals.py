"""SIGINT and SIGTERM while batches are in flight (issue 10, item 6): no new batch starts, the
finished ones are recorded, the hung ones are abandoned (threads) or ended (worker processes),
the build exits 130/143 with its lock released, and a serial resume makes only the batches
that had not finished, to the output of an untroubled serial build.

Synchronisation is on files the stage code writes: a hung batch writes its marker only once
every other batch of the stage is journaled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from c10a_support import REPO, Proj, one_stage, outputs
from test_c10a_outputs import wait_for

CASES = [
    ("thread", signal.SIGINT, 130, False),
    ("thread", signal.SIGTERM, 143, False),
    ("process", signal.SIGINT, 130, False),
    ("process", signal.SIGINT, 130, True),  # Ctrl-C in a terminal: the whole process group
    ("process", signal.SIGTERM, 143, False),
]


def gone(pid: int, limit: float = 30.0) -> bool:
    """Whether process `pid` has ended (waiting up to `limit` seconds for it to)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if _zombie(pid):
            return True
        time.sleep(0.02)
    return False


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


@pytest.mark.parametrize(("executor", "signum", "code", "group"), CASES)
def test_a_signal_with_batches_in_flight(tmp_path, executor, signum, code, group):
    if executor == "process" and (os.cpu_count() or 1) < 2:
        pytest.skip("needs two worker processes: one hangs, the other makes the rest")
    hung = [3, 6] if executor == "thread" else [3]
    proj = Proj(tmp_path / "p", one_stage(12, f"concurrency: 4\nexecutor: {executor}"))
    build = subprocess.Popen([sys.executable, "-m", "buildtool"], cwd=proj.root,
                             env=proj.env(HANG_AT=",".join(f"a:{i}" for i in hung),
                                          HANG_AFTER=str(12 - len(hung)), BUILD="stopped"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    for index in hung:
        wait_for(proj.root / f"reached-a-{index}", build)
    if group:
        os.killpg(build.pid, signum)
    else:
        build.send_signal(signum)
    _, err = build.communicate(timeout=120)
    assert build.returncode == code, err
    rec = proj.record("a")
    assert rec["status"] == "interrupted"
    assert sorted(b["index"] for b in rec["batches"]) == sorted(set(range(12)) - set(hung))
    if executor == "process":  # the hung worker was ended with the build
        pid = int((proj.root / "reached-a-3").read_text())
        assert gone(pid), f"worker {pid} outlived the build"

    (proj.root / "Workflowfile").write_text(one_stage(12))
    done = proj.run("-q", BUILD="resumed")
    assert done.returncode == 0, done.stderr  # the lock was released
    assert sorted(proj.calls("resumed")) == [("a", i) for i in hung]
    reference = Proj(tmp_path / "ref", one_stage(12))
    assert reference.run("-q").returncode == 0
    assert outputs(proj) == outputs(reference)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_the_cancel_event_stops_a_stage(tmp_path, monkeypatch, concurrency):
    """`job.cancel` (set by the builder when a signal reaches another thread) is honoured
    between batches and while batches are in flight: the stage is recorded `interrupted` with
    the batches that finished. Driven in-process: the stage code sets the event of the job
    running it."""
    import buildtool.kinds.generate as generate
    from buildtool.errors import Interrupted

    proj = Proj(tmp_path / "p", one_stage(12, f"concurrency: {concurrency}"))
    (proj.root / "stages" / "gen.py").write_text(
        "import c10a_cancel\n\n"
        "def rows(ctx):\n"
        "    if ctx.batch_index == 5:\n"
        "        c10a_cancel.job.cancel.set()\n"
        "    return [{'i': ctx.offset + i} for i in range(ctx.size)]\n")
    holder = type(sys)("c10a_cancel")
    monkeypatch.setitem(sys.modules, "c10a_cancel", holder)
    real = generate.execute

    def execute(job):
        holder.job = job
        return real(job)

    monkeypatch.setattr(generate, "execute", execute)
    monkeypatch.syspath_prepend(str(REPO))
    from buildtool import api

    with pytest.raises((Interrupted, KeyboardInterrupt)):
        api.build(proj.root / "Workflowfile")
    rec = proj.record("a")
    assert rec["status"] == "interrupted"
    listed = {b["index"] for b in rec["batches"]}
    if concurrency == 1:  # one at a time: it stops right after the batch that set it
        assert listed == set(range(6))
    else:  # batch 5 started once 3 batches were written; it may still be in flight when
        # the stage thread sees the event (then it is abandoned, as are the others in flight)
        assert 3 <= len(listed) < 12
