"""A restore killed midway (issue 11): no record stands while a restore places its files, so
the stage is never up to date after the kill (nor a `running` record of its trace, which a
resume would run in full), and the next build restores it again — also after a revert to the
trace it had before. A damaged entry is found before anything of the stage changes. Each
outcome is compared with a build from scratch (DD_BUILD_CACHE=off). Real CLI, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from c11cache_support import (  # noqa: E402
    calls,
    clear_calls,
    env,
    make_project,
    outputs,
    set_param,
)

REPO = Path(__file__).resolve().parent.parent

# `dd-build ARGS` whose restore is held (then SIGKILLed by the test) once it has placed
# PLACED files: MARKER holds its pid then.
HOLD = '''
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from buildtool import cache
placed = cache.Cache.materialize
count = [0]

def held(self, *args, **kwargs):
    placed(self, *args, **kwargs)
    count[0] += 1
    if count[0] == int(sys.argv[3]):
        Path(sys.argv[2]).write_text(str(os.getpid()))
        while True:
            time.sleep(0.05)

cache.Cache.materialize = held
from buildtool.cli import main
sys.exit(main(sys.argv[4:]))
'''


def dd(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=root,
                          env=env(**extra), capture_output=True, text=True, timeout=300)


def ok(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    done = dd(root, *args, **extra)
    assert done.returncode == 0, done.stderr
    return done


def actions(root: Path, *args: str) -> dict[str, tuple[str, str]]:
    stages = json.loads(ok(root, "--json", *args).stdout)["stages"]
    return {s["stage"]: (s["action"], s["result"]) for s in stages}


def kill_restore(tmp_path: Path, root: Path, placed: int) -> None:
    """A build whose restore is SIGKILLed once it has placed `placed` files."""
    hold = tmp_path / "hold.py"
    hold.write_text(HOLD)
    marker = tmp_path / "held"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, str(hold), str(REPO), str(marker), str(placed),
                             "-q", "a"], cwd=root, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "the build ended before the restore was held"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


def reverted_to_k5(tmp_path: Path) -> Path:
    """A project built with k=5, then k=6, whose Workflowfile says k=5 again: `a`'s k=5
    build is in the cache."""
    root = make_project(tmp_path / "p")
    ok(root)
    set_param(root, "params: {k: 5}", "params: {k: 6}")
    ok(root)
    set_param(root, "params: {k: 6}", "params: {k: 5}")
    return root


def scratch(tmp_path: Path, k: int) -> dict:
    other = make_project(tmp_path / f"scratch-{k}")
    if k != 5:
        set_param(other, "params: {k: 5}", f"params: {{k: {k}}}")
    ok(other, DD_BUILD_CACHE="off")
    return outputs(other)


def test_after_a_killed_restore_the_stage_is_not_up_to_date_and_is_restored_again(
        tmp_path: Path) -> None:
    root = reverted_to_k5(tmp_path)
    kill_restore(tmp_path, root, placed=2)
    status = json.loads(ok(root, "status", "--json").stdout)
    a = next(s for s in status["stages"] if s["stage"] == "a")
    assert not a["up_to_date"] and a["action"] != "up_to_date", a
    assert not (root / "artifacts" / "demo" / "a" / "stage.json").exists()
    plan = json.loads(ok(root, "-n", "--json").stdout)["stages"]
    assert next(s for s in plan if s["stage"] == "a")["action"] == "restore"
    clear_calls(root)
    done = actions(root)
    assert calls(root) == []
    assert done["a"] == ("restore", "restored")
    assert outputs(root) == scratch(tmp_path, 5)
    assert set(actions(root).values()) == {("up_to_date", "up_to_date")}


def test_a_killed_restore_then_a_revert_to_the_trace_before_is_restored_too(
        tmp_path: Path) -> None:
    """The kill took the k=6 record away with the files it listed; going back to k=6 finds
    k=6 in the cache, and runs nothing."""
    root = reverted_to_k5(tmp_path)
    kill_restore(tmp_path, root, placed=3)
    set_param(root, "params: {k: 5}", "params: {k: 6}")
    clear_calls(root)
    done = actions(root)
    assert calls(root) == []
    assert done["a"] == ("restore", "restored")
    assert outputs(root) == scratch(tmp_path, 6)


def test_a_damaged_entry_changes_nothing_of_the_stage_before_it_runs(tmp_path: Path) -> None:
    """num_records 40 → 30 keeps three of the four batches (a shrink); the cache holds a
    30-row build too, but one of its objects is damaged (replaced, same size: the artifacts'
    file is another one). The damage is found before any file of the stage is touched, so
    the shrink that runs instead keeps batches that are still there."""
    root = make_project(tmp_path / "p")
    set_param(root, "num_records: 40", "num_records: 30")
    ok(root)
    set_param(root, "num_records: 30", "num_records: 40")
    ok(root)
    set_param(root, "num_records: 40", "num_records: 30")
    rec = json.loads((root / "artifacts" / "demo" / "a" / "stage.json").read_text())
    first = rec["batches"][0]["digest"].split(":")[1]
    obj = root / "artifacts" / ".cache" / "objects" / first[:2] / first[2:]
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 1
    tmp = obj.with_name(obj.name + ".new")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, obj)  # a new inode: the batch file in the artifacts keeps its bytes
    clear_calls(root)
    done = dd(root, "--json")
    assert done.returncode == 0, done.stderr
    assert "cannot be restored" in done.stderr
    assert calls(root) == ["a all"]  # its callback: no batch ran, b and report restored
    assert outputs(root) == scratch_30(tmp_path)


def scratch_30(tmp_path: Path) -> dict:
    other = make_project(tmp_path / "scratch-30")
    set_param(other, "num_records: 40", "num_records: 30")
    ok(other, DD_BUILD_CACHE="off")
    return outputs(other)
