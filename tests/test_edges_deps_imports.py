"""Project modules a stage's code imports are code dependencies, discovered while it runs.

Editing `helpers/text.py`, which `stages/make.py` imports, reruns the stage (reason
`code_changed` with `file` and `imported_by`), however the import is written, and in every
stage of one build process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project, find_reason, reason_codes

ONE_STAGE = """
workflow: demo
stages:
  make:
    generate: stages/make.py:rows
    num_records: 4
    batch_size: 2
"""

WORD_ROWS = '''
def rows(ctx):
    return [{"i": ctx.offset + i, "w": word()} for i in range(ctx.size)]
'''

# import style -> (stage code, the file whose edit must rerun the stage, its importer)
STYLES = {
    "from-import": ("from helpers.text import word\n" + WORD_ROWS,
                    "helpers/text.py", "stages/make.py"),
    "import-module": ("import helpers.text\n\ndef word():\n    return helpers.text.word()\n"
                      + WORD_ROWS, "helpers/text.py", "stages/make.py"),
    "lazy-import": ('''
def rows(ctx):
    from helpers.text import word
    return [{"i": ctx.offset + i, "w": word()} for i in range(ctx.size)]
''', "helpers/text.py", "stages/make.py"),
    "imported-by-a-module": ("from helpers.text import word\n" + WORD_ROWS,
                             "helpers/deep.py", "helpers/text.py"),
}


def _helpers(project: Project, deep: str = "1") -> None:
    project.write("helpers/__init__.py", "")
    project.write("helpers/text.py", "from helpers.deep import SUFFIX\n\n"
                                     "def word():\n    return 'w' + SUFFIX\n")
    project.write("helpers/deep.py", f"SUFFIX = {deep!r}\n")


def _words(project: Project, stage: str = "make") -> set[str]:
    return set(project.table(stage).column("w").to_pylist())


@pytest.mark.parametrize("style", list(STYLES))
def test_editing_an_imported_module_reruns_the_stage(project: Project, style: str) -> None:
    code, edited, importer = STYLES[style]
    project.write("Workflowfile", ONE_STAGE)
    project.write("stages/make.py", code)
    _helpers(project)
    assert project.run().code == 0
    assert _words(project) == {"w1"}
    listed = project.record("make")["discovered"]
    assert listed[edited]["by"] == importer
    assert all(not Path(p).is_absolute() for p in listed), listed
    assert project.run("--json").stage("make")["action"] == "up_to_date"

    if edited == "helpers/deep.py":
        project.write("helpers/deep.py", "SUFFIX = '2'\n")
    else:
        project.write("helpers/text.py", "from helpers.deep import SUFFIX\n\n"
                                         "def word():\n    return 'v' + SUFFIX\n")
    explain = project.run("--explain", "-n")
    assert f"code file {edited} changed (imported by {importer})" in explain.stdout, \
        explain.stdout
    built = project.run("--json")
    assert built.code == 0, built.stderr
    st = built.stage("make")
    assert reason_codes(st) == ["code_changed"]
    reason = find_reason(st, "code_changed")
    assert (reason["file"], reason["imported_by"]) == (edited, importer)
    assert st["result"] == "completed" and st["batches_run"] == 2
    assert _words(project) == ({"w2"} if edited == "helpers/deep.py" else {"v1"})
    assert project.run("--json").stage("make")["action"] == "up_to_date"


TWO_STAGES = """
workflow: demo
stages:
  first:
    generate: stages/make.py:rows
    num_records: 2
  second:
    generate: stages/other.py:rows
    num_records: 2
"""


def test_every_stage_of_one_build_sees_and_records_a_shared_module(project: Project) -> None:
    """dd-build runs the stages in one process: the second stage must execute the helper
    again (current source) and record it, not reuse the first stage's cached module."""
    project.write("Workflowfile", TWO_STAGES)
    project.write("stages/make.py", STYLES["from-import"][0])
    project.write("stages/other.py", STYLES["lazy-import"][0])
    _helpers(project)
    assert project.run().code == 0
    for stage in ("first", "second"):
        assert set(project.record(stage)["discovered"]) == \
            {"helpers/__init__.py", "helpers/text.py", "helpers/deep.py"}
    project.write("helpers/deep.py", "SUFFIX = '9'\n")
    built = project.run("--json")
    assert built.code == 0, built.stderr
    for stage in ("first", "second"):
        assert built.stage(stage)["result"] == "completed"
        assert _words(project, stage) == {"w9"}


def test_a_module_no_longer_imported_and_deleted(project: Project) -> None:
    project.write("Workflowfile", ONE_STAGE)
    project.write("stages/make.py", STYLES["from-import"][0])
    _helpers(project)
    assert project.run().code == 0
    # text.py stops importing deep.py, and deep.py is deleted: both are reasons
    project.write("helpers/text.py", "def word():\n    return 'plain'\n")
    (project.root / "helpers/deep.py").unlink()
    built = project.run("--json")
    assert built.code == 0, built.stderr
    st = built.stage("make")
    messages = [r["message"] for r in st["reasons"]]
    assert "code file helpers/deep.py is gone (imported by helpers/text.py)" in messages
    assert "code file helpers/text.py changed (imported by stages/make.py)" in messages
    # the rerun discovers again: deep.py is no longer listed, and the stage is up to date
    assert "helpers/deep.py" not in project.record("make")["discovered"]
    assert project.run("--json").stage("make")["action"] == "up_to_date"


def test_a_deleted_module_still_imported_fails_clearly(project: Project) -> None:
    project.write("Workflowfile", ONE_STAGE)
    project.write("stages/make.py", STYLES["from-import"][0])
    _helpers(project)
    assert project.run().code == 0
    (project.root / "helpers/deep.py").unlink()
    built = project.run()
    assert built.code == 1
    assert "code file helpers/deep.py is gone" in built.stderr + built.stdout
    assert "helpers.deep" in built.stdout + built.stderr
    assert "Traceback" not in built.stderr
    # it failed loading its code, before touching anything: the last good record stands
    assert project.record("make")["status"] == "completed"


CALLBACK_FLOW = """
workflow: demo
stages:
  make:
    generate: stages/make.py:rows
    num_records: 4
    batch_size: 2
    on_success: stages/cb.py:done
"""

CALLBACK = '''
from helpers.report import NOTE

def done(ctx):
    (__import__("pathlib").Path(ctx.out_dir).parent / "note.txt").write_text(NOTE)
'''


def _callback_project(project: Project, make: str) -> None:
    project.write("Workflowfile", CALLBACK_FLOW)
    project.write("stages/make.py", make)
    project.write("stages/cb.py", CALLBACK)
    project.write("helpers/__init__.py", "")
    project.write("helpers/report.py", "NOTE = 'one'\n")
    project.write("helpers/text.py", "def word():\n    return 'w'\n")


def test_a_module_only_the_callback_imports_reruns_the_whole_stage(project: Project) -> None:
    _callback_project(project, STYLES["from-import"][0])
    assert project.run().code == 0
    assert project.record("make")["discovered"]["helpers/report.py"]["by"] == "stages/cb.py"
    project.write("helpers/report.py", "NOTE = 'two'\n")
    st = project.run("--json").stage("make")
    assert reason_codes(st) == ["code_changed"]
    assert find_reason(st, "code_changed")["imported_by"] == "stages/cb.py"
    assert st["action"] == "run" and st["batches_run"] == 2  # safe: the whole stage reruns
    assert (project.artifacts / "make" / "note.txt").read_text() == "two"


def test_callback_file_imported_by_the_stage_code_is_not_callback_only(project: Project) -> None:
    """The callback's own file reruns only the callback, unless the stage's code imports it:
    then its change changes the batches too, and the stage must run fresh."""
    make = "from cb import FACTOR\n\ndef rows(ctx):\n" \
           "    return [{'i': ctx.offset + i, 'w': str(FACTOR)} for i in range(ctx.size)]\n"
    _callback_project(project, make)
    project.write("stages/cb.py", "FACTOR = 1\n" + CALLBACK)
    project.write("Workflowfile", CALLBACK_FLOW.replace("stages/make.py", "make.py")
                  .replace("stages/cb.py", "cb.py"))
    project.write("make.py", make)
    project.write("cb.py", "FACTOR = 1\n" + CALLBACK)
    assert project.run().code == 0
    assert project.record("make")["discovered"]["cb.py"]["by"] == "make.py"
    project.write("cb.py", "FACTOR = 2\n" + CALLBACK)
    st = project.run("--json").stage("make")
    assert st["action"] == "run", st["reasons"]
    assert st["batches_run"] == 2
    assert _words(project) == {"2"}


def test_callback_only_file_still_reruns_only_the_callback(project: Project) -> None:
    _callback_project(project, STYLES["from-import"][0])
    assert project.run().code == 0
    project.write("stages/cb.py", CALLBACK + "\n# an edit\n")
    st = project.run("--json").stage("make")
    assert st["action"] == "resume" and st["batches_run"] == 0, st


def test_a_resume_keeps_the_modules_the_last_run_discovered(project: Project) -> None:
    """A boundary-only rerun does not call the stage's function, so its lazy imports do not
    execute: the record must still list them."""
    lazy = STYLES["lazy-import"][0]
    _callback_project(project, lazy)
    assert project.run().code == 0
    assert "helpers/text.py" in project.record("make")["discovered"]
    project.write("stages/cb.py", CALLBACK + "\n# an edit\n")
    st = project.run("--json").stage("make")
    assert st["action"] == "resume" and st["batches_run"] == 0
    assert "helpers/text.py" in project.record("make")["discovered"]
    project.write("helpers/text.py", "def word():\n    return 'changed'\n")
    st = project.run("--json").stage("make")
    assert find_reason(st, "code_changed")["file"] == "helpers/text.py"
    assert _words(project) == {"changed"}


def test_failed_stage_records_what_it_imported(project: Project) -> None:
    project.write("Workflowfile", ONE_STAGE)
    project.write("stages/make.py", STYLES["from-import"][0])
    _helpers(project)
    project.write("helpers/deep.py", "raise RuntimeError('broken helper')\n")
    failed = project.run()
    assert failed.code == 1
    assert "helpers/deep.py" in project.record("make")["discovered"]
    project.write("helpers/deep.py", "SUFFIX = '3'\n")
    st = project.run("--json").stage("make")
    assert st["result"] == "completed"
    assert "code_changed" in reason_codes(st)
    assert _words(project) == {"w3"}


def test_record_from_before_discovery_runs_again(project: Project) -> None:
    project.write("Workflowfile", ONE_STAGE)
    project.write("stages/make.py", STYLES["from-import"][0])
    _helpers(project)
    assert project.run().code == 0
    path = project.artifacts / "make" / "stage.json"
    rec = json.loads(path.read_text())
    del rec["discovered"]
    path.write_text(json.dumps(rec))
    st = project.run("--json").stage("make")
    assert reason_codes(st) == ["format_changed"]
    assert "imports" in st["reasons"][0]["message"]
    assert project.run("--json").stage("make")["action"] == "up_to_date"


def test_a_virtual_environment_inside_the_project_is_not_project_code(project: Project) -> None:
    """Installed packages of a venv kept in the project folder are not project files (they
    are fingerprinted as modules outside the project), and execute once."""
    venv = project.root / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    log = project.root / "venvlib-imported.log"
    (Path(site) / "venvlib.py").write_text(
        f"with open({str(log)!r}, 'a') as fh:\n    fh.write('imported\\n')\n\n"
        "def word():\n    return 'venv'\n")
    project.write("Workflowfile", TWO_STAGES)
    project.write("stages/make.py", "from venvlib import word\n" + WORD_ROWS)
    project.write("stages/other.py", "from venvlib import word\n" + WORD_ROWS)
    proc = subprocess.run([str(python), "-m", "buildtool"], cwd=project.root,
                          env=project.env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for stage in ("first", "second"):  # outside the project: fingerprinted, no project file
        assert list(project.record(stage)["discovered"]) == ["module:venvlib"]
    assert log.read_text().splitlines() == ["imported"]  # not dropped and run again
