"""What the new-user trial of issue 9 found: each a small fix, each tested as the user met it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import Project

import buildtool

HELPER_RAISING = "import json\nCONFIG = json.loads('{bad json')\n"
ANSWERS = "from stages.helper import CONFIG\n\n\ndef make(ctx):\n    return [{'i': 1}]\n"
WORKFLOW = """\
workflow: w
stages:
  answers:
    generate: stages/answers.py:make
    num_records: 2
"""


@pytest.fixture
def importing(tmp_path: Path) -> Project:
    project = Project(tmp_path / "proj")
    project.write("stages/__init__.py", "")
    project.write("stages/helper.py", HELPER_RAISING)
    project.write("stages/answers.py", ANSWERS)
    project.write("Workflowfile", WORKFLOW)
    return project


def test_an_import_error_in_a_helper_is_not_blamed_on_the_stage_file(importing: Project) -> None:
    result = importing.run("--json")
    assert result.code == 1, result.stderr
    error = result.stage("answers")["error"]
    assert "stages/helper.py:2" in error, error
    assert "fix stages/answers.py" not in error and "fix stages/answers.py" not in result.stderr


def test_init_json_lists_the_paths_it_wrote(tmp_path: Path) -> None:
    project = Project(tmp_path)
    result = project.run("init", "--json", "fresh")
    assert result.code == 0, result.stderr
    wrote = result.json()["wrote"]
    assert wrote and all((tmp_path / path).is_file() for path in wrote), wrote
    assert {Path(path).name for path in wrote} >= {"Workflowfile", ".gitignore"}


def test_a_misspelt_named_input_placeholder_is_suggested_whole(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write("data.txt", "x\n")
    project.write("Workflowfile", "workflow: w\nstages:\n  r:\n    run: cat {input[data.txt]} > o\n"
                                  "    inputs: [data.txt]\n    outputs: [o]\n")
    result = project.run("--json")
    assert result.code == 2
    assert "{inputs[data.txt]}" in result.json()["error"]["message"]


def test_the_schema_says_retries_count_retries_not_attempts(tmp_path: Path) -> None:
    result = Project(tmp_path).run("schema")
    stage = json.loads(result.stdout)
    text = json.dumps(stage)
    assert "Attempts per batch" not in text and "Retries per batch" in text


FLAKY = """\
import os
from pathlib import Path

def make(ctx):
    marker = Path(os.environ["MARK"])
    if not marker.exists():
        marker.write_text("failed once")
        raise ConnectionError("upstream hiccup")
    return [{"i": ctx.batch_index}]
"""


def test_the_api_logs_a_retry_as_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    project = Project(tmp_path / "proj")
    project.write("stages/flaky.py", FLAKY)
    project.write("Workflowfile", "workflow: w\nstages:\n  a:\n    generate: stages/flaky.py:make\n"
                                  "    num_records: 1\n    retries: 1\n")
    monkeypatch.setenv("MARK", str(tmp_path / "mark"))
    monkeypatch.setattr("random.random", lambda: 0.0)  # the backoff's jitter: no wait to speak of
    with caplog.at_level(logging.WARNING, logger="buildtool"):
        report = buildtool.build(project.root)
    assert report.ok, report.to_json()
    retries = [r for r in caplog.records if "attempt 1 of 2" in r.getMessage()]
    assert retries and retries[0].levelno == logging.WARNING, caplog.text


def test_show_of_a_stage_whose_last_build_failed_says_so(project: Project) -> None:
    assert project.run().code == 0
    failed = project.run("--force", "b", FAIL_AT="b:1")
    assert failed.code == 1
    shown = project.run("show", "b")
    assert shown.code == 2
    assert "last build failed" in shown.stderr and "no completed build" not in shown.stderr


def test_batches_discarded_names_every_change_that_discards_them(project: Project) -> None:
    assert project.run("b", FAIL_AT="b:3").code == 1
    text = (project.root / "Workflowfile").read_text()
    project.write("Workflowfile", text.replace("    seed: a\n", "    seed: a\n    params: {p: 1, q: 2}\n"))
    plan = project.run("-n", "--json", "b").stage("b")
    (failed,) = [r for r in plan["reasons"] if r["code"] == "failed_before"]
    assert failed["batches_discarded"] == 3, failed
    assert "(and 1 other change)" in failed["message"], failed["message"]
