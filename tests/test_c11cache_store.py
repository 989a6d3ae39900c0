"""The build cache is bounded, inspectable and never restores what is not whole: its
location (DD_BUILD_CACHE, `cache:`), `cache status` / `cache gc` (text and --json), damaged
objects and entries, SIGKILL during a store or a gc, and gc beside a build (the lock)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from c11cache_support import (  # noqa: E402
    HERE,
    calls,
    clear_calls,
    env,
    make_project,
    outputs,
    set_param,
)

SUPPORT = str(HERE / "c11cache_support.py")


def dd(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=root,
                          env=env(**extra), capture_output=True, text=True, timeout=300)


def stages_of(done: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    assert done.returncode == 0, done.stderr
    return {s["stage"]: s for s in json.loads(done.stdout)["stages"]}


def two_builds(root: Path, **extra: str) -> None:
    """k=5 then k=6: the cache holds both; the project is left at k=6."""
    assert dd(root, **extra).returncode == 0
    set_param(root, "params: {k: 5}", "params: {k: 6}")
    assert dd(root, **extra).returncode == 0


def revert(root: Path, **extra: str) -> dict[str, dict]:
    set_param(root, "params: {k: 6}", "params: {k: 5}")
    clear_calls(root)
    return stages_of(dd(root, "--json", **extra))


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"ended before {path.name}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def entry_files(cache: Path) -> list[Path]:
    return sorted((cache / "entries").glob("*/*.json"))


def assert_sound(cache: Path) -> None:
    """Every entry that reads as valid names only objects that are there, whole."""
    from buildtool.cache import Cache
    from buildtool.fingerprint import digest_file

    c = Cache(cache)
    for path in entry_files(cache):
        entry = c.read_entry(path)
        if entry is None:
            continue
        for f in entry["files"]:
            assert digest_file(c.object_path(f["digest"])) == f["digest"], path


# ---------------------------------------------------------------- where it lives

def test_the_default_cache_is_in_the_artifacts_folder(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    two_builds(root)
    assert entry_files(root / "artifacts" / ".cache")
    stages = revert(root)
    assert stages["a"]["result"] == "restored" and calls(root) == []


def test_dd_build_cache_points_elsewhere(tmp_path: Path) -> None:
    shared = tmp_path / "shared-cache"
    root = make_project(tmp_path / "p")
    two_builds(root, DD_BUILD_CACHE=str(shared))
    assert not (root / "artifacts" / ".cache").exists()
    assert entry_files(shared)
    # a second checkout of the project, sharing the cache, restores instead of running
    other = make_project(tmp_path / "q")
    stages = stages_of(dd(other, "--json", DD_BUILD_CACHE=str(shared)))
    assert {s["result"] for s in stages.values()} == {"restored"}
    assert calls(other) == []
    status = json.loads(dd(other, "cache", "status", "--json",
                           DD_BUILD_CACHE=str(shared)).stdout)
    assert Path(status["cache"]) == shared.resolve()


def test_the_cache_key_of_the_workflowfile(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    text = (root / "Workflowfile").read_text()
    (root / "Workflowfile").write_text(text.replace("workflow: demo",
                                                    "workflow: demo\ncache: ../team-cache"))
    two_builds(root)
    assert entry_files(tmp_path / "team-cache")
    assert not (root / "artifacts" / ".cache").exists()
    assert revert(root)["a"]["result"] == "restored"
    # DD_BUILD_CACHE wins over cache:
    set_param(root, "params: {k: 5}", "params: {k: 6}")
    stages = stages_of(dd(root, "--json", DD_BUILD_CACHE=str(tmp_path / "empty")))
    assert stages["a"]["result"] == "completed"


def test_a_wrong_cache_key_is_an_error_at_its_line(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    text = (root / "Workflowfile").read_text()
    (root / "Workflowfile").write_text(text.replace("workflow: demo", "workflow: demo\ncache: 5"))
    done = dd(root, "-n", "--json")
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["key"] == "cache" and error["line"] == 3


# ---------------------------------------------------------------- status and gc

def test_cache_status_and_gc(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    two_builds(root)
    status = dd(root, "cache", "status")
    assert status.returncode == 0
    assert re.search(r"^  demo/a +2 entries, [0-9.]+ KB, last used 20", status.stdout, re.M), \
        status.stdout
    doc = json.loads(dd(root, "cache", "status", "--json").stdout)
    assert doc["ok"] and doc["entries"] == 6 and doc["size"] > 0 and doc["damaged"] == 0
    assert {(s["stage"], s["entries"]) for s in doc["stages"]} == \
        {("a", 2), ("b", 2), ("report", 2)}
    # --keep-last 1: the most recently used entry of each stage stays (the k=6 build)
    dry = json.loads(dd(root, "cache", "gc", "--keep-last", "1", "-n", "--json").stdout)
    assert dry["dry_run"] and dry["entries_removed"] == 3
    assert len(entry_files(root / "artifacts" / ".cache")) == 6
    done = json.loads(dd(root, "cache", "gc", "--keep-last", "1", "--json").stdout)
    assert done["entries_removed"] == 3 and done["entries"] == 3
    assert {e["stage"] for e in done["removed"]} == {"a", "b", "report"}
    assert_sound(root / "artifacts" / ".cache")
    assert revert(root)["a"]["result"] == "completed"  # k=5 was the one removed
    # a restore counts as a use: after k=6 → k=5 → k=6, k=6 is the most recent again
    set_param(root, "params: {k: 5}", "params: {k: 6}")
    assert stages_of(dd(root, "--json"))["a"]["result"] == "restored"
    dd(root, "cache", "gc", "--keep-last", "1")
    assert revert(root)["a"]["result"] == "completed"
    # --max-size 0 empties it
    text = dd(root, "cache", "gc", "--max-size", "0")
    assert text.returncode == 0 and "the cache holds 0 B in 0 entries" in text.stdout
    assert not list((root / "artifacts" / ".cache" / "objects").glob("*/*"))


def test_gc_max_size_removes_the_least_recently_used_first(tmp_path: Path) -> None:
    from buildtool.cache import Cache, object_sizes, scan

    root = make_project(tmp_path / "p")
    two_builds(root)
    cache = Cache(root / "artifacts" / ".cache")
    entries = scan(cache)
    sizes = object_sizes(cache)
    newest = max(entries, key=lambda e: e.last_used)
    limit = sum(sizes[d] for d in set(newest.digests))
    done = json.loads(dd(root, "cache", "gc", "--max-size", f"{limit}B", "--json").stdout)
    assert done["size"] <= limit
    kept = scan(cache)
    assert newest.path in {e.path for e in kept}
    assert all(e.last_used >= min(k.last_used for k in kept) for e in kept)


@pytest.mark.parametrize("args", [["gc"], ["gc", "--max-size", "ten"],
                                  ["gc", "--keep-last", "-1"], ["status", "--keep-last", "2"]])
def test_cache_command_mistakes_exit_2(tmp_path: Path, args: list[str]) -> None:
    root = make_project(tmp_path / "p")
    done = dd(root, "cache", *args, "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["ok"] is False


# ---------------------------------------------------------------- damage

def test_a_flipped_byte_in_an_object_is_never_restored(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    two_builds(root)
    from buildtool.cache import Cache

    cache = Cache(root / "artifacts" / ".cache")
    set_param(root, "params: {k: 6}", "params: {k: 5}")
    plan = stages_of(dd(root, "--json", "-n"))
    assert plan["a"]["action"] == "restore"
    entry_path = next(p for p in entry_files(cache.root)
                      if (e := cache.read_entry(p)) and e["stage"] == "a"
                      and e["record"]["spec"]["params"]["k"] == 5)
    entry = cache.read_entry(entry_path)
    assert entry is not None
    victim = cache.object_path(entry["files"][0]["digest"])
    os.chmod(victim, 0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    done = dd(root, "--json")
    stages = stages_of(done)
    assert stages["a"]["result"] == "completed" and stages["a"]["batches_run"] == 4
    assert "cannot be restored" in done.stderr and "is ignored" in done.stderr
    assert not entry_path.exists()  # dropped: not offered again
    other = make_project(tmp_path / "scratch")
    assert dd(other, DD_BUILD_CACHE="off").returncode == 0
    assert outputs(root) == outputs(other)


def test_a_half_written_entry_is_ignored(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    two_builds(root)
    cache = root / "artifacts" / ".cache"
    for path in entry_files(cache):  # torn: every entry cut in half (a check fails)
        text = path.read_bytes()
        path.write_bytes(text[: len(text) // 2])
    stages = revert(root)
    assert stages["a"]["result"] == "completed"
    doc = json.loads(dd(root, "cache", "status", "--json").stdout)
    assert doc["damaged"] == 6
    dd(root, "cache", "gc", "--keep-last", "5")
    assert json.loads(dd(root, "cache", "status", "--json").stdout)["damaged"] == 0


def test_an_entry_edited_to_look_valid_is_caught_by_its_check(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    two_builds(root)
    for path in entry_files(root / "artifacts" / ".cache"):
        data = json.loads(path.read_text())
        data["record"]["output"]["rows"] = 999
        path.write_text(json.dumps(data))
    assert revert(root)["a"]["result"] == "completed"


# ---------------------------------------------------------------- kills

def _probe(root: Path, point: str, *args: str, **extra: str) -> subprocess.Popen[str]:
    marker = root / f"at-{point}"
    return subprocess.Popen([sys.executable, SUPPORT, point, str(marker), *args], cwd=root,
                            env=env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_sigkill_during_a_store_leaves_no_entry_that_looks_valid(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert dd(root, DD_BUILD_CACHE="off").returncode == 0
    set_param(root, "params: {k: 5}", "params: {k: 6}")
    proc = _probe(root, "store-object", "a")
    try:
        wait_for(root / "at-store-object", proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    cache = root / "artifacts" / ".cache"
    assert list((cache / "objects").glob("*/*"))  # an object made, and no entry for it
    assert entry_files(cache) == []
    assert_sound(cache)
    # its record was written before the store: a is up to date, only its entry is lost
    assert stages_of(dd(root, "--json", "a"))["a"]["result"] == "up_to_date"
    # gc removes the objects no entry names
    done = json.loads(dd(root, "cache", "gc", "--keep-last", "9", "--json").stdout)
    assert done["objects_removed"] >= 1 and done["entries"] == 0
    assert not list((cache / "objects").glob("*/*"))
    # a revert to it later runs it (nothing to restore), and stores it then
    set_param(root, "params: {k: 6}", "params: {k: 7}")
    assert dd(root, "a").returncode == 0
    set_param(root, "params: {k: 7}", "params: {k: 6}")
    assert stages_of(dd(root, "--json", "a"))["a"]["result"] == "completed"
    set_param(root, "params: {k: 6}", "params: {k: 7}")
    assert stages_of(dd(root, "--json", "a"))["a"]["result"] == "restored"
    assert_sound(cache)


def test_sigkill_during_gc_leaves_every_entry_whole(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    two_builds(root)
    proc = _probe(root, "gc-drop", "cache", "gc", "--max-size", "0")
    try:
        wait_for(root / "at-gc-drop", proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    cache = root / "artifacts" / ".cache"
    assert 0 < len(entry_files(cache)) < 6  # one entry dropped, none of the objects yet
    assert_sound(cache)
    stages = revert(root)  # whatever is left restores, or the stage runs: same bytes
    other = make_project(tmp_path / "scratch")
    assert dd(other, DD_BUILD_CACHE="off").returncode == 0
    assert outputs(root) == outputs(other)
    assert set(s["result"] for s in stages.values()) <= {"restored", "completed"}


# ---------------------------------------------------------------- gc beside a build

def test_gc_waits_for_a_build_that_holds_the_cache(tmp_path: Path) -> None:
    """A build holds the cache's lock shared while it stores or restores; gc takes it
    exclusive, so it waits (and says so) and removes nothing meanwhile."""
    root = make_project(tmp_path / "p")
    two_builds(root)
    cache = root / "artifacts" / ".cache"
    before = entry_files(cache)
    fd = os.open(cache / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)  # as a build storing an entry does
    proc = subprocess.Popen([sys.executable, "-m", "buildtool", "cache", "gc", "--max-size",
                             "0"], cwd=root, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "waiting for a build" in line, line
        assert entry_files(cache) == before
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert entry_files(cache) == []


def test_gc_during_a_build_leaves_both_sound(tmp_path: Path) -> None:
    """gc --max-size 0 while a build waits inside a stage: the build ends well, its stages
    are stored, and every entry is whole."""
    root = make_project(tmp_path / "p")
    two_builds(root)
    set_param(root, "params: {k: 6}", "params: {k: 8}")
    proc = subprocess.Popen([sys.executable, "-m", "buildtool", "--json"], cwd=root,
                            env=env(GATE_AT="a:2"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(root / "code" / "reached", proc)
        gc = dd(root, "cache", "gc", "--max-size", "0")
        assert gc.returncode == 0, gc.stderr
        (root / "code" / "go").write_text("x")
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    cache = root / "artifacts" / ".cache"
    assert_sound(cache)
    assert {json.loads(p.read_text())["stage"] for p in entry_files(cache)} == \
        {"a", "b", "report"}
    set_param(root, "params: {k: 8}", "params: {k: 6}")
    assert dd(root).returncode == 0
    set_param(root, "params: {k: 6}", "params: {k: 8}")
    clear_calls(root)
    stages = stages_of(dd(root, "--json"))
    assert stages["a"]["result"] == "restored" and calls(root) == []


def test_a_damaged_entry_whose_stage_then_runs_differently_reruns_its_dependants(
        tmp_path: Path) -> None:
    """b was planned up to date on the output a's entry promised; a's restore fails and a
    runs, writing other rows (its code changed meanwhile, in a way no key sees: a random
    source): b is decided again and runs on what a wrote."""
    root = make_project(tmp_path / "p")
    two_builds(root)
    from buildtool.cache import Cache

    cache = Cache(root / "artifacts" / ".cache")
    code = root / "code" / "stages.py"
    code.write_text(code.read_text().replace('"k": ctx.params.get("k", 0)}',
                                             '"k": ctx.params.get("k", 0) + NOISE}')
                    + "\nimport os\nNOISE = int(os.environ.get('NOISE', '0'))\n")
    set_param(root, "params: {k: 6}", "params: {k: 5}")
    # the key of a holds its code's digest: build both sides of the revert with this code
    assert dd(root).returncode == 0
    set_param(root, "params: {k: 5}", "params: {k: 6}")
    assert dd(root).returncode == 0
    set_param(root, "params: {k: 6}", "params: {k: 5}")
    victims = set()  # a's k=5 entries (both codes write the same rows: shared objects)
    for path in entry_files(cache.root):
        entry = cache.read_entry(path)
        if entry is not None and entry["stage"] == "a" and \
                entry["record"]["spec"]["params"]["k"] == 5:
            victims.add(cache.object_path(entry["files"][0]["digest"]))
    for victim in victims:
        data = bytearray(victim.read_bytes())
        data[-20] ^= 0xFF
        victim.write_bytes(bytes(data))
    plan = stages_of(dd(root, "--json", "-n", NOISE="1"))
    assert plan["a"]["action"] == "restore" and plan["b"]["action"] == "restore"
    stages = stages_of(dd(root, "--json", NOISE="1"))
    assert stages["a"]["result"] == "completed"
    assert stages["b"]["result"] == "completed"  # decided again: a's rows differ now
