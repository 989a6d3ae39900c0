"""A module the stage's code imports lazily is durable before any batch that used it is listed:
a SIGKILL later (in the on_success callback, or in a later batch) and a resume keep it, so
editing it afterwards reruns the stage instead of leaving it stale for good.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator

import pytest
from conftest import Project, find_reason

MAKE = '''
import os
import time
from pathlib import Path


def hang(here):
    if os.environ.get("DEPS2_HANG") == here:
        (Path(__file__).parent.parent / f"reached-{here}").write_text("x")
        while True:
            time.sleep(0.05)


def rows(ctx):
    hang(f"batch-{ctx.batch_index}")
    if ctx.batch_index == 0 or not os.environ.get("DEPS2_FIRST_ONLY"):
        from prompts import PREFIX  # a lazy import
    else:
        PREFIX = "?"
    return [{"i": ctx.offset + i, "p": PREFIX} for i in range(ctx.size)]


def done(ctx):
    hang("callback")
'''

FLOW = """
workflow: demo
stages:
  make:
    generate: stages/make.py:rows
    num_records: 4
    batch_size: 2
    on_success: stages/make.py:done
"""


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Builds a test started; any still alive at the end are killed (by their own pid)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _setup(project: Project) -> None:
    project.write("Workflowfile", FLOW)
    project.write("stages/make.py", MAKE)
    project.write("prompts.py", "PREFIX = 'one'\n")


def _kill_at(project: Project, procs: list[subprocess.Popen[str]], here: str,
             **env: str) -> None:
    proc = project.start(DEPS2_HANG=here, **env)
    procs.append(proc)
    project.wait_for(f"reached-{here}", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (project.root / f"reached-{here}").unlink()


def _journal(project: Project) -> list[dict[str, object]]:
    name = project.record("make")["journal"]
    lines = (project.artifacts / "make" / name).read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_killed_in_the_callback_then_resumed_keeps_the_lazy_import(
        project: Project, procs: list[subprocess.Popen[str]]) -> None:
    _setup(project)
    _kill_at(project, procs, "callback")
    journal = _journal(project)
    assert "prompts.py" in journal[0]["discovered"]  # listed before the first batch
    assert [e.get("index") for e in journal[1:]] == [0, 1]

    resumed = project.run("--json")
    assert resumed.code == 0, resumed.stderr
    st = resumed.stage("make")
    assert st["action"] == "resume" and st["batches_run"] == 0
    assert project.record("make")["discovered"]["prompts.py"]["by"] == "stages/make.py"

    project.write("prompts.py", "PREFIX = 'two'\n")
    st = project.run("--json").stage("make")
    assert st["action"] == "run", st["reasons"]
    assert find_reason(st, "code_changed")["message"] == \
        "code file prompts.py changed (imported by stages/make.py)"
    assert set(project.table("make").column("p").to_pylist()) == {"two"}


def test_killed_in_the_callback_and_edited_runs_fresh(
        project: Project, procs: list[subprocess.Popen[str]]) -> None:
    _setup(project)
    _kill_at(project, procs, "callback")
    project.write("prompts.py", "PREFIX = 'two'\n")
    st = project.run("--json").stage("make")
    assert st["action"] == "run" and st["batches_run"] == 2, st["reasons"]
    assert find_reason(st, "code_changed")["file"] == "prompts.py"
    assert set(project.table("make").column("p").to_pylist()) == {"two"}


def test_killed_in_a_later_batch_keeps_what_an_earlier_batch_imported(
        project: Project, procs: list[subprocess.Popen[str]]) -> None:
    """Only batch 0 imports the module; the kill lands in batch 1, and the resume keeps batch
    0 without calling the code that imports it."""
    _setup(project)
    _kill_at(project, procs, "batch-1", DEPS2_FIRST_ONLY="1")
    resumed = project.run("--json", DEPS2_FIRST_ONLY="1")
    assert resumed.code == 0, resumed.stderr
    st = resumed.stage("make")
    assert st["action"] == "resume" and st["batches_run"] == 1
    assert "prompts.py" in project.record("make")["discovered"]

    project.write("prompts.py", "PREFIX = 'two'\n")
    st = project.run("--json", DEPS2_FIRST_ONLY="1").stage("make")
    assert st["action"] == "run", st["reasons"]
    assert find_reason(st, "code_changed")["file"] == "prompts.py"


def test_journal_lines_of_discovered_modules_merge_up_to_a_torn_line(tmp_path) -> None:
    from buildtool.fingerprint import FileState
    from buildtool.records import (
        BatchEntry,
        Discovered,
        StageRecord,
        journal_append,
        journal_discovered,
        read_record,
        write_record,
    )

    def found(rel: str) -> dict[str, Discovered]:
        return {rel: Discovered(FileState(rel, 1, 2, "sha256:" + rel), "stages/make.py")}

    record = StageRecord(stage="make", status="running", kind="generate", spec={},
                         spec_fingerprint="f", code={}, file_inputs={}, stage_inputs={},
                         run_id="r", journal="journal-r.jsonl", discovered=found("a.py"))
    write_record(tmp_path, record)
    journal_discovered(tmp_path, "journal-r.jsonl", found("b.py"))
    journal_append(tmp_path, "journal-r.jsonl", BatchEntry(0, "make/b0", 2, 3, 4, "d"))
    with open(tmp_path / "journal-r.jsonl", "a") as fh:
        fh.write('{"discovered": {"c.py": {"path"')  # torn: it and what follows are ignored
    journal_discovered(tmp_path, "journal-r.jsonl", found("d.py"))
    read = read_record(tmp_path).record
    assert read is not None
    assert read.discovered == {**found("a.py"), **found("b.py")}
    assert [b.index for b in read.batches] == [0]
