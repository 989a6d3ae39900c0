"""The null-build stamp (buildtool/nullstamp.py) is never trusted over the files.

A command run twice on an up-to-date project answers the second time from the stamp (seen by
what it imports: no planning module); its output, JSON and exit code are those of the full
path (the same command with the stamp removed). After each change a decision depends on, the
stamp is not used and the outcome is the full path's.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CHAIN, REPO, STAGE_CODE, Project, Result

FILES = CHAIN + """
  d:
    transform: code/stages.py:join
    inputs: [a, data/seed.csv, "data/*.jsonl"]
"""


def stamps(project: Project) -> list[Path]:
    folder = project.root / "artifacts" / ".compiled"
    return sorted(folder.glob("*.stamp")) if folder.is_dir() else []


def run(project: Project, *args: str, env: dict[str, str] | None = None) -> tuple[Result, bool]:
    """The CLI, and whether it answered from the stamp (no planning module imported)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "buildtool", *args],
                          cwd=project.root, env=env or project.env(), capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    imports = [line for line in proc.stderr.splitlines(keepends=True)
               if line.startswith("import time:")]
    stderr = "".join(line for line in proc.stderr.splitlines(keepends=True)
                     if not line.startswith("import time:"))
    fast = not any(" buildtool.plan\n" in line or " buildtool.execute\n" in line
                   for line in imports)
    return Result(proc.returncode, proc.stdout, stderr), fast


def full(project: Project, *args: str) -> Result:
    """The full path: the same command with the stamp moved away (and put back after)."""
    kept = {p: p.read_bytes() for p in stamps(project)}
    for p in kept:
        p.unlink()
    try:
        result, fast = run(project, *args)
    finally:
        for p, data in kept.items():
            p.write_bytes(data)
    assert not fast
    return result


def same(a: Result, b: Result) -> None:
    assert (a.code, a.stdout, a.stderr) == (b.code, b.stdout, b.stderr)


def stamped(project: Project, *args: str) -> Result:
    """Run until the command is answered from the stamp (twice at most): its result."""
    first, _ = run(project, *args)
    again, fast = run(project, *args)
    assert fast, f"not answered from the stamp: {again.stderr}"
    same(first, again)
    return again


@pytest.fixture
def built(project: Project) -> Project:
    project.write("Workflowfile", FILES)
    project.write("data/seed.csv", "id,v\n1,2\n")
    project.write("data/one.jsonl", '{"x": 1}\n')
    result = project.run()
    assert result.code == 0, result.stderr
    settled(project)
    return project


def settled(project: Project) -> None:
    """Wait until the code file is no longer racy for the compiled workflow (compiled.py
    compares a file younger than RACY_NS by content, and stores it settled once older: a
    full path that makes a new stamp), then let a full path settle it."""
    from buildtool.loadfacts import RACY_NS

    st = (project.root / "code" / "stages.py").stat()
    wait = max(st.st_mtime_ns, st.st_ctime_ns) + RACY_NS - time.time_ns()
    if wait > 0:
        time.sleep(wait / 1e9 + 0.05)
    assert project.run("status").code == 0


COMMANDS = [(), ("--json",), ("--explain",), ("-v",), ("-q",), ("-j", "2"), ("c",),
            ("--json", "-k", "b"), ("--resume", "always"), ("build", "--json"), ("status",),
            ("status", "--json"), ("-C", "data"), ("-f", "Workflowfile", "--json")]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_stamped_answer_is_the_full_paths(built: Project, args: tuple[str, ...]) -> None:
    answer = stamped(built, *args)
    same(answer, full(built, *args))
    assert answer.code == 0


def test_a_dry_run_neither_writes_nor_reads_a_stamp(built: Project) -> None:
    stamped(built)
    for p in stamps(built):
        p.unlink()
    for args in (("-n",), ("-n", "--json"), ("--dry-run", "--explain")):
        result, fast = run(built, *args)
        again, fast_again = run(built, *args)
        assert not fast and not fast_again and stamps(built) == []
        same(result, again)
    stamped(built, "--json")
    result, fast = run(built, "-n", "--json")
    assert not fast


def test_another_command_line_is_not_answered_by_a_stamp(built: Project) -> None:
    stamped(built)
    for args in (("--json",), ("-j", "3"), ("-q",), ("status",)):
        result, fast = run(built, *args)
        assert not fast, args
        assert result.code == 0
    for args in ((), ("--json",), ("status",)):  # one stamp keeps the answers of each
        assert run(built, *args)[1], args
    # fewer stages: another summary (workflow.json), so the others' answers go
    for args in (("c",), ()):
        result, fast = run(built, *args)
        assert not fast and result.code == 0, args


def _touch_back(path: Path, text: str) -> None:
    """Write `text` (same size) and put the file's mtime back: only its ctime tells."""
    st = path.stat()
    assert len(text.encode()) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _replace_same_stats(path: Path, data: bytes) -> None:
    """Replace the file by another (a new inode) of the same size and mtime."""
    st = path.stat()
    assert len(data) == st.st_size
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)


def _batch(project: Project, stage: str) -> Path:
    return project.artifacts / project.record(stage)["batches"][0]["file"]


EDITS = {
    "code edited": lambda p: p.write("code/stages.py", STAGE_CODE + "\nK = 1\n"),
    "code edited, same size and mtime": lambda p: _touch_back(
        p.root / "code/stages.py", STAGE_CODE.replace("tag", "tug")),
    "input edited": lambda p: p.write("data/seed.csv", "id,v\n1,3\n"),
    "input edited, same size and mtime": lambda p: _touch_back(p.root / "data/seed.csv",
                                                              "id,v\n1,9\n"),
    "a file the glob matches added": lambda p: p.write("data/two.jsonl", '{"x": 2}\n'),
    "input deleted": lambda p: (p.root / "data/one.jsonl").unlink(),
    "batch file deleted": lambda p: _batch(p, "b").unlink(),
    "batch file rewritten": lambda p: _batch(p, "a").write_bytes(b"x" * 10),
    "batch file replaced, same size and mtime": lambda p: _replace_same_stats(
        _batch(p, "a"), _batch(p, "b").read_bytes()[:_batch(p, "a").stat().st_size].ljust(
            _batch(p, "a").stat().st_size, b"\0")),
    "Workflowfile replaced, same size and second": lambda p: _replace_same_stats(
        p.root / "Workflowfile", FILES.replace("tag: x", "tag: y").encode()),
    "record edited": lambda p: _touch_back(
        p.artifacts / "c" / "stage.json",
        (p.artifacts / "c" / "stage.json").read_text().replace('"rows": 1', '"rows": 2')),
    "stage cleaned": lambda p: shutil.rmtree(p.artifacts / "b"),
    "summary deleted": lambda p: (p.artifacts / "workflow.json").unlink(),
    "index deleted": lambda p: (p.artifacts / ".plan-index").unlink(),
    "stamp torn": lambda p: [f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])
                             for f in stamps(p)],
    "stamp garbled": lambda p: [f.write_bytes(b"\x00garbage" * 50) for f in stamps(p)],
    "stamp of another format": lambda p: [_other_format(f) for f in stamps(p)],
}


def _other_format(file: Path) -> None:
    import marshal

    magic, fmt, crc, payload = marshal.loads(file.read_bytes())
    file.write_bytes(marshal.dumps((magic, fmt + 1, crc, payload)))


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize("command", [("--json",), ("status", "--json")], ids=" ".join)
def test_a_change_is_never_answered_by_the_stamp(built: Project, edit: str,
                                                 command: tuple[str, ...]) -> None:
    stamped(built, *command)
    stamped(built, "status", "--json")
    EDITS[edit](built)
    want = full(built, "status", "--json")  # what the files say now (changes nothing)
    got, fast = run(built, "status", "--json")
    assert not fast, edit
    same(got, want)
    if command[0] == "--json":
        built_now, fast = run(built, *command)
        assert not fast, edit
        if built_now.code == 0:
            up = {s["stage"]: s["up_to_date"] for s in want.json()["stages"]}
            assert {s["stage"]: s["action"] == "up_to_date"
                    for s in built_now.json()["stages"]} == up


def test_a_deleted_compiled_workflow_is_a_cache_not_a_fact(built: Project) -> None:
    """The stamp checks what the Workflowfile's reading depended on itself: without the
    compiled entry it still answers, as the full path (which reads the Workflowfile again)."""
    answer = stamped(built, "--json")
    for entry in (built.root / "artifacts" / ".compiled").glob("*.bin"):
        entry.unlink()
    got, fast = run(built, "--json")
    assert fast
    same(got, answer)
    same(got, full(built, "--json"))


def test_a_held_lock_is_refused_as_the_full_path_refuses_it(built: Project) -> None:
    stamped(built, "--json")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('held', flush=True)\ntime.sleep(120)", str(built.artifacts / ".lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        got, _ = run(built, "--json")
        assert got.code == 4
        same(got, full(built, "--json"))
    finally:
        holder.kill()
        holder.wait()
    assert run(built, "--json")[1]


def test_after_a_killed_build_the_full_path_sweeps(built: Project) -> None:
    stamped(built)
    lock = built.artifacts / ".lock"
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"999999\n1.0\n", 0)  # a holder that never ended cleanly
    finally:
        os.close(fd)
    leftover = built.artifacts / "a" / ".stage.json.tmp.1.abc"
    leftover.write_text("x")
    result, fast = run(built)
    assert not fast and result.code == 0
    assert not leftover.exists()
    assert run(built)[1]


def test_an_upgraded_dd_build_is_not_answered_by_the_stamp(built: Project, tmp_path: Path
                                                           ) -> None:
    """A stamp of dd-build's own files as they were: any module changed in place (an
    editable install, a new version) is the full path."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "buildtool", checkout / "buildtool",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**built.env(), "PYTHONPATH": str(checkout)}
    run(built, "--json", env=env)
    assert run(built, "--json", env=env)[1]
    explain = checkout / "buildtool" / "explain.py"
    explain.write_text(explain.read_text().replace('"up to date"', '"current"'))
    got, fast = run(built, "--explain", env=env)
    assert not fast
    got, fast = run(built, "--json", env=env)
    assert not fast and got.code == 0


def test_the_stamp_is_written_only_when_every_stage_was_up_to_date(project: Project) -> None:
    result = project.run()  # stages ran: no stamp
    assert result.code == 0 and stamps(project) == []
    result, fast = run(project, "--json")
    assert not fast and result.code == 0 and len(stamps(project)) == 1
    project.write("code/stages.py", STAGE_CODE + "\n# edited\n")
    before = stamps(project)[0].read_bytes()
    result, fast = run(project, "--json")  # ran c again: the old stamp is left as it was
    assert not fast and any(s["action"] != "up_to_date" for s in result.json()["stages"])
    assert stamps(project)[0].read_bytes() == before
    settled(project)  # the edited code file, young, is compared by content until it settles
    stamped(project, "--json")


def test_a_failed_build_is_never_stamped(project: Project) -> None:
    for _ in range(2):
        result, fast = run(project, "-k", "--json", env=project.env(FAIL_AT="b:0"))
        assert result.code == 1 and not fast
    # the failed build's leftovers are swept by the next build of every stage: till then,
    # a build of fewer stages is not answered from a stamp
    for _ in range(2):
        result, fast = run(project, "a", "--json")
        assert result.code == 0 and not fast
    assert run(project)[0].code == 0
    stamped(project, "a", "--json")
