"""The Literal types of record statuses, actions, results, steps and reason codes (issue 8):
every value the CLI writes is one of them, and every one of them is documented."""

from __future__ import annotations

import json
from typing import get_args

import pytest
from conftest import REPO, Project

from buildtool.plan import Action
from buildtool.reasons import REASON_CODES
from buildtool.records import RECORD_NAME, RECORD_STATUSES
from buildtool.report import RESULTS
from buildtool.steps import BOUNDARY, MAIN, STEP_NAMES, chain, step_name

README = (REPO / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:] if end < 0 else README[start:end]


@pytest.mark.parametrize("code", REASON_CODES)
def test_every_reason_code_is_in_the_readme_table(code: str) -> None:
    assert f"`{code}`" in _section("When a stage runs, and why")


@pytest.mark.parametrize("value", get_args(Action) + RESULTS)
def test_every_action_and_result_is_documented(value: str) -> None:
    assert f"`{value}`" in README


def test_step_names_are_the_chains_steps() -> None:
    assert set(STEP_NAMES) == {s for kind in MAIN for s in chain(kind)}
    assert chain("generate") == ("batches", *BOUNDARY)
    assert BOUNDARY == ("processors", "on_success", "allow_empty", "outputs")  # the order runs


@pytest.mark.parametrize("value", [None, "", "main", "Outputs", 3, ["outputs"]])
def test_step_name_refuses_what_is_not_a_step(value: object) -> None:
    assert step_name(value) is None


def test_step_name_accepts_every_step() -> None:
    assert [step_name(s) for s in STEP_NAMES] == list(STEP_NAMES)


def _check_document(doc: dict) -> None:
    for stage in doc["stages"]:
        assert stage["action"] in get_args(Action), stage
        assert stage.get("result", "up_to_date") in RESULTS, stage
        assert stage["step"] is None or stage["step"] in STEP_NAMES, stage
        for reason in stage["reasons"]:
            assert reason["code"] in REASON_CODES, reason
            assert reason["step"] in STEP_NAMES, reason


def _check_records(project: Project) -> set[str]:
    statuses = set()
    for path in project.artifacts.rglob(RECORD_NAME):
        status = json.loads(path.read_text())["status"]
        assert status in RECORD_STATUSES, path
        statuses.add(status)
    return statuses


def test_what_the_cli_writes_is_one_of_the_typed_values(project: Project) -> None:
    """A failed build, the resume after it, a change and a null build: every action, result,
    step, reason code and record status written is a member of its type."""
    failed = project.run("build", "--json", FAIL_AT="b:2")
    assert failed.code != 0
    _check_document(failed.json())
    assert {s["result"] for s in failed.json()["stages"]} == {"completed", "failed", "not_run"}
    assert "failed" in _check_records(project)

    resumed = project.run("build", "--json")
    assert resumed.code == 0, resumed.stderr
    _check_document(resumed.json())
    assert resumed.stage("b")["action"] == "resume"

    project.write("Workflowfile", project.root.joinpath("Workflowfile").read_text()
                  .replace("params: {tag: x}", "params: {tag: y}"))
    changed = project.run("build", "--json", "--dry-run")
    _check_document(changed.json())
    assert "spec_changed" in {r["code"] for r in changed.stage("a")["reasons"]}

    again = project.run("build", "--json")
    _check_document(again.json())
    assert _check_records(project) == {"completed"}
    null = project.run("build", "--json")
    _check_document(null.json())
    assert {s["result"] for s in null.json()["stages"]} == {"up_to_date"}
