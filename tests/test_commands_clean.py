"""`dd-build clean`: with no stage names it asks on a terminal (a real pty) and needs --all
elsewhere; `-n` lists what would go and removes nothing."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys

import pytest
from conftest import CHAIN, Project, Result

EXTRA = """
  extra:
    generate: code/stages.py:rows
    num_records: 3
    batch_size: 3
"""


def _run(project: Project, *args: str) -> Result:
    """The CLI with stdin not a terminal (/dev/null), whatever runs the tests."""
    proc = subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=project.root,
                          env=project.env(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=300)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _folders(project: Project) -> list[str]:
    if not project.artifacts.is_dir():
        return []
    return sorted(p.name for p in project.artifacts.iterdir() if p.is_dir())


@pytest.fixture
def built(project: Project) -> Project:
    """The CHAIN built, plus the folder of a stage since removed from the Workflowfile."""
    project.write("Workflowfile", CHAIN + EXTRA)
    assert _run(project).code == 0
    project.write("Workflowfile", CHAIN)
    assert _folders(project) == ["a", "b", "c", "extra"]
    return project


# ---------------------------------------------------------------- not a terminal


@pytest.mark.parametrize("extra", [(), ("--json",), ("-q",)])
def test_clean_without_stage_names_off_a_terminal_refuses(built: Project,
                                                         extra: tuple[str, ...]) -> None:
    res = _run(built, "clean", *extra)
    assert res.code == 2
    assert "--all" in res.stderr
    assert _folders(built) == ["a", "b", "c", "extra"]
    if extra == ("--json",):
        doc = res.json()
        assert doc["ok"] is False and doc["error"]["exit_code"] == 2
        assert "--all" in doc["error"]["hint"]


def test_clean_all_removes_everything_without_asking(built: Project) -> None:
    assert _run(built, "status").code == 0  # stores the compiled workflow (the build did not)
    extras = [e for e in _EXTRAS if (built.root / e).exists()]
    assert len(extras) == 3
    res = _run(built, "clean", "--all", "--json")
    assert res.code == 0, res.stderr
    assert _folders(built) == []
    assert sorted(res.json()["removed"]) == sorted(
        [f"artifacts/demo/{s}" for s in ("a", "b", "c", "extra")] + extras)
    assert sorted(p.name for p in built.artifacts.iterdir()) == [".lock"]
    assert not (built.root / "artifacts" / ".compiled").exists()
    again = _run(built, "clean", "--all")
    assert again.code == 0 and "nothing to clean" in again.stdout


def test_clean_names_or_all_or_orphans_not_two_of_them(built: Project) -> None:
    for args in (("a", "--all"), ("--all", "--orphans"), ("a", "--orphans")):
        res = _run(built, "clean", *args)
        assert res.code == 2, args
        assert "not both" in res.stderr
    assert _folders(built) == ["a", "b", "c", "extra"]


# ---------------------------------------------------------------- dry run


# What --all (or no stage names) removes besides stage folders: the lock file stays.
_EXTRAS = ["artifacts/demo/workflow.json", "artifacts/demo/.plan-index", "artifacts/.compiled"]
_EVERY = sorted(["a", "b", "c", "extra", "workflow.json", ".plan-index"])


@pytest.mark.parametrize("args, listed", [
    ((), _EVERY),
    (("--all",), _EVERY),
    (("b", "c"), ["b", "c"]),
    (("--orphans",), ["extra"]),
])
@pytest.mark.parametrize("flag", ["-n", "--dry-run"])
def test_clean_dry_run_lists_and_removes_nothing(built: Project, args: tuple[str, ...],
                                                 listed: list[str], flag: str) -> None:
    before = {p: p.stat().st_mtime_ns for p in built.artifacts.rglob("*")}
    res = _run(built, "clean", flag, *args)
    assert res.code == 0, res.stderr
    shown = [line for line in res.stdout.splitlines() if "artifacts/demo/" in line]
    assert sorted(line.split("artifacts/demo/")[1] for line in shown) == listed
    assert {p: p.stat().st_mtime_ns for p in built.artifacts.rglob("*")} == before

    doc = _run(built, "clean", flag, "--json", *args)
    assert doc.code == 0, doc.stderr
    assert doc.json()["dry_run"] is True and doc.json()["removed"] == []
    every = ["artifacts/.compiled"] if listed == _EVERY and \
        (built.root / "artifacts" / ".compiled").exists() else []
    assert sorted(doc.json()["would_remove"]) == sorted(
        [f"artifacts/demo/{s}" for s in listed] + every)
    assert _folders(built) == ["a", "b", "c", "extra"]


def test_clean_dry_run_of_a_project_never_built(project: Project) -> None:
    res = _run(project, "clean", "-n")
    assert res.code == 0, res.stderr
    assert "nothing to clean" in res.stdout
    assert not (project.root / "artifacts").exists()


# ---------------------------------------------------------------- on a terminal


def _on_terminal(project: Project, *args: str, answer: bytes | None = None,
                 asked: bool = True) -> tuple[int, str]:
    """Run `clean ARGS` with stdin, stdout and stderr on a pseudo-terminal; once the question
    is shown (when `asked`), type `answer` (None: end the input, as Ctrl-D does). The exit
    code and all the terminal showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "buildtool", "clean", *args],
                            cwd=project.root, env=project.env(), stdin=slave, stdout=slave,
                            stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    try:
        if asked:
            seen = _read_until(master, seen, b"[y/N] ")
            os.write(master, answer if answer is not None else b"\x04")  # ^D: end of input
        seen = _read_until(master, seen, None)
    finally:
        os.close(master)
    return proc.wait(timeout=60), seen.decode(errors="replace").replace("\r\n", "\n")


def _read_until(fd: int, seen: bytes, marker: bytes | None) -> bytes:
    """Read what the terminal shows until `marker` appears (None: until the process closes
    it). The select limit only keeps a broken test from hanging; it times nothing."""
    while marker is None or marker not in seen:
        ready, _, _ = select.select([fd], [], [], 120)
        if not ready:
            raise AssertionError(f"the terminal showed no {marker!r}: {seen!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every holder of the terminal's other side has closed it
            chunk = b""
        if not chunk:
            if marker is None:
                return seen
            raise AssertionError(f"the terminal closed before {marker!r}: {seen!r}")
        seen += chunk
    return seen


@pytest.mark.parametrize("answer", [b"y\n", b"yes\n", b"Y\n"])
def test_on_a_terminal_clean_lists_asks_and_removes_on_yes(built: Project, answer: bytes) -> None:
    code, shown = _on_terminal(built, answer=answer)
    assert code == 0, shown
    question = shown.split("[y/N]")[0]
    for stage in ("a", "b", "c", "extra"):
        assert f"artifacts/demo/{stage}" in question  # listed before the question
    assert _folders(built) == []
    assert "removed artifacts/demo/a" in shown.split("[y/N]")[1]


@pytest.mark.parametrize("answer", [b"\n", b"n\n", b"no\n", b"whatever\n", None])
def test_on_a_terminal_anything_but_yes_removes_nothing(built: Project,
                                                        answer: bytes | None) -> None:
    code, shown = _on_terminal(built, answer=answer)
    assert code == 0, shown
    assert "nothing removed" in shown
    assert _folders(built) == ["a", "b", "c", "extra"]


def test_on_a_terminal_named_stages_and_all_are_not_asked_about(built: Project) -> None:
    code, shown = _on_terminal(built, "b", asked=False)
    assert code == 0 and "[y/N]" not in shown
    assert _folders(built) == ["a", "c", "extra"]
    code, shown = _on_terminal(built, "--all", asked=False)
    assert code == 0 and "[y/N]" not in shown
    assert _folders(built) == []


def test_on_a_terminal_json_still_needs_all(built: Project) -> None:
    code, shown = _on_terminal(built, "--json", asked=False)
    assert code == 2 and "[y/N]" not in shown and "--all" in shown
    assert _folders(built) == ["a", "b", "c", "extra"]


def test_on_a_terminal_ctrl_c_at_the_question_removes_nothing(built: Project) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "buildtool", "clean"], cwd=built.root,
                            env=built.env(), stdin=slave, stdout=slave, stderr=slave,
                            close_fds=True)
    os.close(slave)
    try:
        _read_until(master, b"", b"[y/N] ")
        proc.send_signal(signal.SIGINT)
        shown = _read_until(master, b"", None).decode(errors="replace")
    finally:
        os.close(master)
    assert proc.wait(timeout=60) == 130
    assert "nothing removed" in shown and "resume" not in shown
    assert _folders(built) == ["a", "b", "c", "extra"]
