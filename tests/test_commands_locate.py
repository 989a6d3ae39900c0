"""Finding the Workflowfile: from a subfolder by walking up (as git finds .git), -C first, -f
taken as given; what a missing one says; paths on the command line keep meaning the user's
folder; and did-you-mean for --force / --rerun-from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project, Result

from buildtool.errors import WorkflowError
from buildtool.locate import find_workflowfile, workflowfile_at


def _run_in(project: Project, cwd: Path, *args: str) -> Result:
    proc = subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=cwd,
                          env=project.env(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=300)
    return Result(proc.returncode, proc.stdout, proc.stderr)


# ---------------------------------------------------------------- find_workflowfile


def test_find_returns_the_nearest_workflowfile_above(tmp_path: Path) -> None:
    (tmp_path / "outer" / "inner" / "deep" / "deeper").mkdir(parents=True)
    (tmp_path / "outer" / "Workflowfile").write_text("x")
    (tmp_path / "outer" / "inner" / "Workflowfile").write_text("x")
    assert find_workflowfile(tmp_path / "outer" / "inner" / "deep" / "deeper") == \
        tmp_path / "outer" / "inner" / "Workflowfile"
    assert find_workflowfile(tmp_path / "outer" / "inner") == \
        tmp_path / "outer" / "inner" / "Workflowfile"
    assert find_workflowfile(tmp_path / "outer") == tmp_path / "outer" / "Workflowfile"
    (tmp_path / "outer" / "inner" / "deep" / "Other").write_text("x")
    assert find_workflowfile(tmp_path / "outer" / "inner" / "deep" / "deeper", "Other") == \
        tmp_path / "outer" / "inner" / "deep" / "Other"


def test_find_names_the_folder_it_started_from_when_there_is_none(tmp_path: Path) -> None:
    start = tmp_path / "empty" / "sub"
    start.mkdir(parents=True)
    with pytest.raises(WorkflowError) as info:
        find_workflowfile(start, "No-such-Workflowfile-name")
    assert str(start) in info.value.message and "any folder above" in info.value.message
    assert info.value.hint and "-f FILE" in info.value.hint and "-C DIR" in info.value.hint
    assert "dd-build init" in info.value.hint


def test_find_from_a_relative_start_gives_an_absolute_path(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p" / "sub").mkdir(parents=True)
    (tmp_path / "p" / "Workflowfile").write_text("x")
    monkeypatch.chdir(tmp_path / "p")
    found = find_workflowfile(Path("sub"))
    assert found.is_absolute() and found == tmp_path / "p" / "Workflowfile"


def test_the_nearest_workflowfile_being_a_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "Workflowfile").write_text("x")
    (tmp_path / "p" / "Workflowfile").mkdir(parents=True)
    with pytest.raises(WorkflowError, match="is a folder"):
        find_workflowfile(tmp_path / "p")


def test_workflowfile_at_takes_the_path_as_given(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "Workflowfile").write_text("x")
    monkeypatch.chdir(tmp_path / "sub")
    with pytest.raises(WorkflowError) as info:  # no search upwards for a named file
        workflowfile_at(Path("Workflowfile"))
    assert str(tmp_path / "sub" / "Workflowfile") in info.value.message
    assert workflowfile_at(Path("../Workflowfile")) == tmp_path / "sub" / ".." / "Workflowfile"


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def nested(project: Project) -> Project:
    """The CHAIN project with a subfolder two levels down, built."""
    (project.root / "notes" / "deep").mkdir(parents=True)
    assert project.run().code == 0
    return project


def test_a_build_from_a_subfolder_uses_the_workflowfile_above(nested: Project) -> None:
    deep = nested.root / "notes" / "deep"
    res = _run_in(nested, deep, "--json")
    assert res.code == 0, res.stderr
    assert {s["result"] for s in res.json()["stages"]} == {"up_to_date"}
    assert str(nested.root) in res.stderr  # where it went, said once
    assert not (deep / "artifacts").exists()  # the records are the project's, not the cwd's


def test_status_from_a_subfolder_matches_status_at_the_root(nested: Project) -> None:
    at_root = nested.run("status", "--json")
    below = _run_in(nested, nested.root / "notes" / "deep", "status", "--json")
    assert below.code == 0, below.stderr
    assert below.json() == at_root.json()


def test_stage_code_runs_in_the_project_folder_from_a_subfolder(project: Project) -> None:
    """Relative paths in stage code (and the Workflowfile) mean the project folder, wherever
    dd-build was started: the build is the one started at the root."""
    project.write("code/cwd.py", """
        import os
        def rows(ctx):
            return [{"cwd": os.getcwd(), "seen": open("data/word.txt").read()}]
    """)
    project.write("data/word.txt", "hello")
    project.write("Workflowfile", """
        workflow: demo
        stages:
          where:
            generate: code/cwd.py:rows
            num_records: 1
            inputs: [data/word.txt]
    """)
    (project.root / "data" / "sub").mkdir()
    res = _run_in(project, project.root / "data" / "sub")
    assert res.code == 0, res.stderr
    row = project.table("where").to_pylist()[0]
    assert row == {"cwd": str(project.root), "seen": "hello"}


def test_export_from_a_subfolder_writes_where_the_user_is(nested: Project) -> None:
    deep = nested.root / "notes" / "deep"
    res = _run_in(nested, deep, "export", "c", "out.jsonl")
    assert res.code == 0, res.stderr
    assert (deep / "out.jsonl").is_file()
    assert not (nested.root / "out.jsonl").exists()
    assert json.loads((deep / "out.jsonl").read_text().splitlines()[0])["n"] == 80
    up = _run_in(nested, deep, "export", "a", "../a.csv")
    assert up.code == 0, up.stderr
    assert (nested.root / "notes" / "a.csv").is_file()
    absolute = _run_in(nested, deep, "export", "a", str(nested.root / "abs.parquet"))
    assert absolute.code == 0 and (nested.root / "abs.parquet").is_file()


def test_export_from_a_subfolder_to_a_missing_folder_names_it(nested: Project) -> None:
    deep = nested.root / "notes" / "deep"
    res = _run_in(nested, deep, "export", "c", "nowhere/out.jsonl")
    assert res.code == 2
    assert "nowhere" in res.stderr
    assert not (nested.root / "nowhere").exists()


def test_override_from_a_subfolder_reads_the_file_where_the_user_is(nested: Project) -> None:
    deep = nested.root / "notes" / "deep"
    assert _run_in(nested, deep, "export", "a", "review.parquet").code == 0
    res = _run_in(nested, deep, "override", "a", "review.parquet", "--json")
    assert res.code == 0, res.stderr
    assert res.json()["rows"] == 20
    assert not (nested.root / "review.parquet").exists()


def test_targets_and_stage_names_are_the_workflowfiles_from_a_subfolder(nested: Project) -> None:
    deep = nested.root / "notes" / "deep"
    res = _run_in(nested, deep, "b", "--force", "b", "--json")
    assert res.code == 0, res.stderr
    assert [s["stage"] for s in res.json()["stages"]] == ["a", "b"]
    assert res.stage("b")["result"] == "completed"
    assert _run_in(nested, deep, "show", "a", "-n", "1").code == 0


def test_directory_option_wins_over_the_walk(nested: Project, tmp_path: Path) -> None:
    other = Project(tmp_path / "other")
    other.write("Workflowfile", "workflow: other\nstages:\n  z:\n    generate: s.py:rows\n"
                "    num_records: 2\n")
    other.write("s.py", "def rows(ctx):\n    return [{'i': i} for i in range(ctx.size)]\n")
    deep = nested.root / "notes" / "deep"
    res = _run_in(nested, deep, "-C", str(other.root), "--json")
    assert res.code == 0, res.stderr
    assert res.json()["workflow"] == "other"
    assert (other.root / "artifacts" / "other" / "z").is_dir()
    # -C into a subfolder walks up from there, as git -C does
    below = _run_in(nested, tmp_path, "-C", str(deep), "status", "--json")
    assert below.code == 0 and below.json()["workflow"] == "demo"


def test_file_option_is_taken_from_the_working_folder_without_a_walk(nested: Project) -> None:
    deep = nested.root / "notes" / "deep"
    res = _run_in(nested, deep, "-f", "Workflowfile", "status")
    assert res.code == 2
    assert str(deep / "Workflowfile") in res.stderr
    assert "-f" in res.stderr
    ok = _run_in(nested, deep, "-f", "../../Workflowfile", "status", "--json")
    assert ok.code == 0, ok.stderr
    assert {s["up_to_date"] for s in ok.json()["stages"]} == {True}
    with_c = _run_in(nested, nested.root.parent, "-C", str(deep), "-f", "../../Workflowfile",
                     "status")
    assert with_c.code == 0, with_c.stderr


def test_no_workflowfile_names_the_folder_and_the_ways_out(tmp_path: Path) -> None:
    empty = Project(tmp_path / "empty" / "sub")
    empty.root.mkdir(parents=True)
    for args in ((), ("status",), ("show", "x"), ("clean", "--all")):
        res = _run_in(empty, empty.root, *args)
        if res.code == 0:  # a Workflowfile above the temp folder: this machine's, not ours
            pytest.skip(f"a Workflowfile above {tmp_path}")
        assert res.code == 2, args
        assert f"no Workflowfile in {empty.root}" in res.stderr
        for way in ("-f FILE", "-C DIR", "dd-build init"):
            assert way in res.stderr
    doc = _run_in(empty, empty.root, "--json").json()
    assert doc["ok"] is False and "dd-build init" in doc["error"]["hint"]


# ---------------------------------------------------------------- did you mean


@pytest.mark.parametrize("args, right", [
    (("--force", "bb"), "b"),
    (("--rerun-from", "aa"), "a"),
    (("c", "--force", "cc"), "c"),
    (("-n", "--force", "a", "--force", "cc"), "c"),
])
def test_a_misspelt_force_or_rerun_from_gets_a_did_you_mean(project: Project,
                                                            args: tuple[str, ...],
                                                            right: str) -> None:
    res = project.run(*args)
    assert res.code == 2
    assert f"did you mean `{right}`?" in res.stderr
    assert not (project.root / "artifacts").exists()
    doc = project.run(*args, "--json").json()
    assert doc["error"]["hint"] == f"did you mean `{right}`?"
