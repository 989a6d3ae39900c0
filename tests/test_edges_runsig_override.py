"""`dd-build override` is atomic: a kill at any step leaves the old review fully in force or
the new one, never none; files the record does not list are removed by the next override or
build (issue 7: "Hard edges").

The override runs under the crash probe of tests/crash_support.py, which SIGKILLs the process
at a named step (CRASH_KILL_AT=STAGE:LABEL#K): deterministic, whatever the machine's speed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import crash_support as cs
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Project

from buildtool.fingerprint import digest_bytes


def reviewed(project: Project, name: str, tag: str) -> list[dict[str, Any]]:
    """A reviewed copy of b's output: every row tagged `tag`, the last one dropped."""
    table = pq.read_table(project.root / "b.parquet")
    rows = [{**r, "tag": tag} for r in table.to_pylist()][:-1]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), project.root / name)
    return rows


def shown(project: Project) -> list[dict[str, Any]]:
    result = project.run("show", "b", "--json", "-n", "1000")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)["data"]


def override_files(project: Project) -> list[str]:
    folder = project.artifacts / "b" / "override"
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def listed_override(project: Project) -> list[str]:
    """The override files b's record lists (relative to its override folder), checked intact."""
    output = project.record("b")["output"]
    if output["kind"] != "override":
        return []
    folder = project.artifacts / "b" / "override"
    names = []
    for f in output["files"]:
        path = project.root / f["path"]
        assert digest_bytes(path.read_bytes()) == f["digest"], f"{f['path']} differs"
        names.append(path.relative_to(folder).as_posix())
    return names


def probed_override(project: Project, source: str, target: str) -> subprocess.CompletedProcess:
    """`dd-build override b SOURCE` under the probe, SIGKILLed at `target`."""
    env = project.env(CRASH_KILL_AT=target,
                      CRASH_PHASE_FILE=str(project.root.parent / "phase"))
    return subprocess.run([sys.executable, str(cs.THIS), "--dd-build", "override", "b", source],
                          cwd=project.root, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def reviewed_once(project: Project) -> list[dict[str, Any]]:
    """A built project whose stage b has a first review in force, consumed by c."""
    assert project.run().code == 0
    assert project.run("export", "b", "b.parquet").code == 0
    first = reviewed(project, "first.parquet", "first")
    assert project.run("override", "b", "first.parquet").code == 0
    assert project.run().code == 0
    project.clear_calls()
    return first


def test_an_override_replaces_the_previous_one_and_keeps_one_file(project, reviewed_once):
    assert len(override_files(project)) == 1
    second = reviewed(project, "second.parquet", "second")
    assert project.run("override", "b", "second.parquet").code == 0
    assert shown(project) == second
    assert override_files(project) == listed_override(project)
    assert len(override_files(project)) == 1
    assert override_files(project)[0].endswith("/second.parquet")


# (probe target, which review is in force after the kill)
WINDOWS = [
    ("-:override-write>fsync#2", "first"),  # the new file: temp written, not renamed
    ("-:record-write", "first"),  # the new file in place, the record not yet written
    ("-:record-write>fsync#1", "first"),  # the new record: temp written, not renamed
    ("-:record-write>fsync#2", "second"),  # the new record renamed, its folder not synced
    ("-:override-cleanup", "second"),  # recorded; the old review's file still there
]


@pytest.mark.parametrize(("target", "in_force"), WINDOWS)
def test_a_killed_override_leaves_the_old_review_or_the_new_one(project, reviewed_once, target,
                                                                 in_force):
    second = reviewed(project, "second.parquet", "second")
    before = project.run("-n", "--json")
    killed = probed_override(project, "second.parquet", target)
    assert killed.returncode == -signal.SIGKILL, f"not killed at {target}: {killed.stderr}"

    # One review is in force, whole: the record lists it and its file is intact.
    assert project.record("b")["output"]["kind"] == "override"
    assert len(listed_override(project)) == 1
    rows = shown(project)
    assert rows == (reviewed_once if in_force == "first" else second)
    plan = project.run("-n", "--json")
    if in_force == "first":  # nothing changed for the stages after it
        assert plan.stdout == before.stdout
    else:
        c = plan.stage("c")
        assert c["action"] == "run" and [r["code"] for r in c["reasons"]] == ["overridden"]
    assert len(override_files(project)) >= 1

    # The next build removes what the record does not list and keeps the review in force.
    result = project.run("--json")
    assert result.code == 0, result.stderr
    assert result.stage("b")["result"] == "up_to_date"
    assert override_files(project) == listed_override(project)
    assert shown(project) == rows
    assert not [p for p in project.artifacts.rglob("*") if ".tmp." in p.name]


def test_a_killed_override_is_cleaned_up_by_the_next_override(project, reviewed_once):
    reviewed(project, "second.parquet", "second")
    killed = probed_override(project, "second.parquet", "-:record-write")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(override_files(project)) == 2  # the first review's file and the unlisted new one

    third = reviewed(project, "third.parquet", "third")
    assert project.run("override", "b", "third.parquet").code == 0
    assert shown(project) == third
    assert override_files(project) == listed_override(project)
    assert len(override_files(project)) == 1

