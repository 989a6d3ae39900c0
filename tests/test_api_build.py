"""The Python API as a user calls it: `buildtool.build`, `status`, `read_output`.

Most tests call the API in this process, as a notebook does: twice in one process, after
editing a param or the stage code between calls, from another working folder. Each result is
compared with what the CLI (a subprocess) says of the same project.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Project

import buildtool


def _results(report: buildtool.BuildReport) -> dict[str, str | None]:
    return {s.stage: s.result for s in report.stages}


def _stage_json(project: Project, stage: str) -> bytes:
    return (project.artifacts / stage / "stage.json").read_bytes()


def test_fresh_interpreter_builds_and_reports_what_the_cli_reports(project: Project,
                                                                   tmp_path: Path) -> None:
    code = ("import json, buildtool; r = buildtool.build(); "
            "print(json.dumps({'ok': r.ok, 'doc': r.to_json()}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=project.root, env=project.env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    api = json.loads(proc.stdout)
    assert api["ok"] is True
    # the same project, built by the CLI: the same document but for durations
    twin = Project(tmp_path / "twin")
    twin.write("code/stages.py", (project.root / "code/stages.py").read_text())
    twin.write("Workflowfile", (project.root / "Workflowfile").read_text())
    cli = twin.run("--json").json()
    assert api["doc"] == cli
    assert [s["result"] for s in cli["stages"]] == ["completed"] * 3


def test_import_is_light_and_names_are_typed() -> None:
    code = ("import sys, buildtool; heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pyarrow', 'networkx', 'yaml', 'pandas')); "
            "mods = sorted(m for m in sys.modules if m.startswith('buildtool')); "
            "print(heavy, mods, buildtool.__version__)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split(" ", 2)
    assert out[0] == "[]" and out[1] == "['buildtool']"
    for name in buildtool.__all__:
        assert getattr(buildtool, name) is not None
    assert set(buildtool.__all__) <= set(dir(buildtool))
    assert (REPO / "buildtool" / "py.typed").is_file()
    with pytest.raises(AttributeError):
        buildtool.no_such_name  # noqa: B018


def test_twice_in_one_process_reruns_a_changed_param(project: Project) -> None:
    first = buildtool.build(project.root)
    assert first.ok and _results(first) == {"a": "completed", "b": "completed", "c": "completed"}
    again = buildtool.build(project.root)
    assert _results(again) == {"a": "up_to_date", "b": "up_to_date", "c": "up_to_date"}
    assert all(s.batches_run == 0 for s in again.stages)
    project.write("Workflowfile", (project.root / "Workflowfile").read_text()
                  .replace("params: {tag: x}", "params: {tag: y}"))
    third = buildtool.build(project.root)
    a = third.stage("a")
    assert a.action == "run" and a.result == "completed" and a.batches_run == 4
    assert [r.code for r in a.reasons] == ["spec_changed"]
    assert a.reasons[0].to_json()["code"] == "spec_changed" and "tag" in a.reasons[0].message
    assert set(project.table("a").column("tag").to_pylist()) == {"y"}


EDITABLE = '''
from helpers import WORD

def make(ctx):
    return [{"id": ctx.offset + i, "word": WORD, "v": VERSION} for i in range(ctx.size)]

VERSION = 1
'''

EDITABLE_FLOW = """
workflow: demo
stages:
  words:
    generate: code/words.py:make
    num_records: 4
    batch_size: 2
"""


def test_twice_in_one_process_runs_code_edited_between_calls(project: Project) -> None:
    project.write("code/words.py", EDITABLE)
    project.write("helpers.py", "WORD = 'old'\n")
    project.write("Workflowfile", EDITABLE_FLOW)
    assert buildtool.build(project.root).ok
    assert buildtool.read_output(project.root, "words").column("v").to_pylist() == [1] * 4
    project.write("code/words.py", EDITABLE.replace("VERSION = 1", "VERSION = 2"))
    second = buildtool.build(project.root)
    assert [r.code for r in second.stage("words").reasons] == ["code_changed"]
    assert buildtool.read_output(project.root, "words").column("v").to_pylist() == [2] * 4
    # a module the stage imports (found on sys.path by the project folder) is new code too
    project.write("helpers.py", "WORD = 'new'\n")
    third = buildtool.build(project.root)
    assert third.stage("words").result == "completed"
    assert set(buildtool.read_output(project.root, "words").column("word").to_pylist()) == \
        {"new"}
    assert "helpers" not in sys.modules  # the build's modules went with it


def test_from_another_working_folder(project: Project, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    project.write("code/where.py", '''
        import os

        def make(ctx):
            rows = open("data/words.txt").read().split()  # relative to the project folder
            return [{"word": w, "cwd": os.getcwd()} for w in rows]
        ''')
    project.write("data/words.txt", "alpha beta\n")
    project.write("Workflowfile", """
        workflow: demo
        stages:
          where:
            generate: code/where.py:make
            num_records: 2
            inputs: [data/words.txt]
        """)
    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    report = buildtool.build("../proj")
    assert report.ok, report.stage("where").error
    assert Path.cwd() == elsewhere
    table = buildtool.read_output("../proj/Workflowfile", "where")
    assert table.column("cwd").to_pylist() == [str(project.root)] * 2
    assert buildtool.status("../proj").up_to_date
    with pytest.raises(buildtool.WorkflowError):
        buildtool.read_output("../proj", "nope")
    assert Path.cwd() == elsewhere


def test_a_raising_stage_is_reported_not_raised(project: Project,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    project.write("Workflowfile", (project.root / "Workflowfile").read_text() + """
  lone:
    generate: code/stages.py:rows
    num_records: 3
""")
    monkeypatch.setenv("FAIL_AT", "b:2")
    report = buildtool.build(project.root)
    assert not report.ok
    assert _results(report) == {"a": "completed", "b": "failed", "c": "not_run",
                                "lone": "not_run"}
    b = report.stage("b")
    assert "boom at b:2" in (b.error or "") and b.batches_run == 2
    assert report.to_json()["ok"] is False
    kept = buildtool.build(project.root, keep_going=True)
    assert _results(kept) == {"a": "up_to_date", "b": "failed", "c": "not_run",
                              "lone": "completed"}
    monkeypatch.delenv("FAIL_AT")
    resumed = buildtool.build(project.root, "c")  # one name is one target
    assert resumed.ok and [s.stage for s in resumed.stages] == ["a", "b", "c"]
    assert resumed.stage("b").action == "resume" and resumed.stage("b").batches_run == 4


def test_dry_run_changes_nothing(project: Project) -> None:
    plan = buildtool.build(project.root, dry_run=True)
    assert plan.dry_run and plan.ok
    assert [(s.action, s.result) for s in plan.stages] == [("run", None)] * 3
    assert not (project.root / "artifacts").exists()
    buildtool.build(project.root)
    before = {s: _stage_json(project, s) for s in "abc"}
    project.write("Workflowfile", (project.root / "Workflowfile").read_text()
                  .replace("num_records: 60", "num_records: 70"))
    plan = buildtool.build(project.root, ["b"], dry_run=True)
    # only num_records changed: b grows (issue 11), keeping its batches
    assert [(s.stage, s.action) for s in plan.stages] == [("a", "up_to_date"), ("b", "grow")]
    assert plan.stage("b").reasons[0].code == "spec_changed"
    assert {s: _stage_json(project, s) for s in "abc"} == before
    assert plan.to_json() == project.run("--json", "-n", "b").json()


def test_read_output_is_what_export_writes(project: Project) -> None:
    import pyarrow.parquet as pq

    buildtool.build(project.root, force="b")
    for stage in ("b", "c"):
        out = project.root / f"{stage}.parquet"
        assert project.run("export", stage, str(out)).code == 0
        assert buildtool.read_output(project.root, stage).equals(pq.read_table(out))


def test_status_is_status_json(project: Project) -> None:
    buildtool.build(project.root)
    project.write("Workflowfile", (project.root / "Workflowfile").read_text()
                  .replace("params: {tag: x}", "params: {tag: z}"))
    st = buildtool.status(project.root)
    assert not st.up_to_date
    a = st.stage("a")
    assert (a.up_to_date, a.action, a.status, a.rows) == (False, "run", "completed", 20)
    assert [r.code for r in st.stage("b").reasons] == ["upstream_will_run"]
    assert st.to_json() == project.run("status", "--json").json()


def test_progress_goes_to_the_buildtool_logger(project: Project, caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="buildtool"):
        buildtool.build(project.root, "a")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "buildtool"]
    assert any(level == logging.INFO and text.startswith("a: run") for level, text in lines)
    assert any(level == logging.INFO and "a: completed" in text for level, text in lines)
    caplog.clear()
    monkeypatch.setenv("FAIL_AT", "b:0")
    with caplog.at_level(logging.WARNING, logger="buildtool"):
        buildtool.build(project.root)
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failed) == 1 and "b: failed" in failed[0] and "boom at b:0" in failed[0]
