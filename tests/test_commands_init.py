"""`dd-build init [DIR]`: a minimal project that builds offline at once, and a refusal that
touches nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Project, Result

from buildtool.initproject import FILES, GITIGNORE


def _run_in(cwd: Path, *args: str) -> Result:
    env = Project(cwd).env()
    proc = subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_init_then_build_twice_then_status(tmp_path: Path) -> None:
    res = _run_in(tmp_path, "init", "my-project")
    assert res.code == 0, res.stderr
    project = tmp_path / "my-project"
    for _, target in (*FILES, GITIGNORE):
        assert (project / target).is_file(), target
        assert f"my-project/{target}" in res.stdout
    assert "dd-build -C my-project" in res.stdout  # the next command
    assert (project / ".gitignore").read_text().splitlines().count("/artifacts/") == 1

    first = _run_in(tmp_path, "-C", "my-project", "--json")
    assert first.code == 0, first.stderr
    stages = first.json()["stages"]
    assert len(stages) == 3 and {s["result"] for s in stages} == {"completed"}
    kinds = _run_in(project, "dag", "--json").json()["stages"]
    assert [s["kind"] for s in kinds] == ["generate", "generate", "transform"]
    assert kinds[1]["inputs"] == [kinds[0]["stage"]]  # the seeded stage
    assert first.json()["workflow"] == "my-project"

    second = _run_in(project, "--json")
    assert second.code == 0, second.stderr
    assert {s["result"] for s in second.json()["stages"]} == {"up_to_date"}

    status = _run_in(project, "status", "--json")
    assert status.code == 0
    assert all(s["up_to_date"] for s in status.json()["stages"])
    text = _run_in(project, "status")
    assert text.stdout.count("up to date") == 3
    shown = _run_in(project, "show", stages[-1]["stage"])
    assert shown.code == 0 and "rows)" in shown.stdout


def test_init_builds_the_same_rows_every_time(tmp_path: Path) -> None:
    tables = []
    for name in ("one", "two"):
        assert _run_in(tmp_path, "init", name).code == 0
        folder = tmp_path / name
        (folder / "Workflowfile").write_text(
            (folder / "Workflowfile").read_text().replace(f"workflow: {name}", "workflow: same"))
        assert _run_in(folder).code == 0
        tables.append([_run_in(folder, "show", s, "--json", "-n", "100").json()
                       for s in ("topics", "questions", "summary")])
    assert tables[0] == tables[1]


def test_init_in_the_working_folder_says_dd_build(tmp_path: Path) -> None:
    res = _run_in(tmp_path, "init", "--json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["ok"] is True and doc["next"] == "dd-build"
    assert doc["folder"] == str(tmp_path)
    assert (tmp_path / "Workflowfile").is_file()
    built = _run_in(tmp_path)
    assert built.code == 0, built.stderr


def test_init_refuses_a_folder_with_a_workflowfile_and_touches_nothing(tmp_path: Path) -> None:
    (tmp_path / "Workflowfile").write_text("workflow: mine\nstages: {}\n")
    (tmp_path / ".gitignore").write_text("*.log\n")
    before = _snapshot(tmp_path)
    for args in (("init",), ("init", "."), ("init", str(tmp_path)), ("init", "--json")):
        res = _run_in(tmp_path, *args)
        assert res.code == 2, args
        assert "Workflowfile" in res.stderr and "already exists" in res.stderr
        assert _snapshot(tmp_path) == before
    assert not (tmp_path / "stages").exists()


def test_init_refuses_to_overwrite_stage_code(tmp_path: Path) -> None:
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "topics.py").write_text("# mine\n")
    before = _snapshot(tmp_path)
    res = _run_in(tmp_path, "init")
    assert res.code == 2
    assert "stages/topics.py" in res.stderr
    assert _snapshot(tmp_path) == before


def test_init_keeps_an_existing_gitignore_and_adds_what_it_lacks(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("*.log\n__pycache__/")  # no newline at the end
    res = _run_in(tmp_path, "init")
    assert res.code == 0, res.stderr
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert lines == ["*.log", "__pycache__/", "/artifacts/"]
    assert "/artifacts/" in res.stdout


def test_init_of_a_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    res = _run_in(tmp_path, "init", "taken")
    assert res.code == 2 and "taken" in res.stderr
    assert (tmp_path / "taken").read_text() == "x"


@pytest.mark.parametrize("folder, name", [("my proj", "starter"), ("status", "starter"),
                                          ("v1.2_x", "v1.2_x")])
def test_the_workflow_is_named_for_the_folder_when_it_can_be(tmp_path: Path, folder: str,
                                                              name: str) -> None:
    assert _run_in(tmp_path, "init", folder).code == 0
    res = _run_in(tmp_path / folder, "--json")
    assert res.code == 0, res.stderr
    assert res.json()["workflow"] == name


def test_a_non_editable_install_ships_the_starter_files(tmp_path: Path) -> None:
    """What setuptools puts in a wheel (its build_py step), from a copy of the source."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(REPO / "buildtool", src / "buildtool",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    proc = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
                           "build_py", "-d", str(tmp_path / "lib")], cwd=src,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    starter = tmp_path / "lib" / "buildtool" / "starter"
    for source, _ in (*FILES, GITIGNORE):
        assert (starter / source).is_file(), source
