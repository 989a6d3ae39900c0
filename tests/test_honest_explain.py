"""Honest explanations (issue 9): values spelt as YAML spells them, long strings shown as a
compact diff, `show`/`export` of an out-of-date stage said on stderr and in `--json`, and a
never-built stage that points at the artifacts a rename left behind. Real CLI, temp projects.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Project

PROMPT = [f"Line {i} of the judge's instructions." for i in range(1, 13)]

WORKFLOW = """
workflow: demo
stages:
  a:
    generate: code/stages.py:rows
    num_records: 4
    batch_size: 2
    params:
      tag: x
      flag: true
      n: 5
      maybe: null
      items: [a, b]
      system: {system}
      prompt: |
{prompt}
  c:
    transform: code/stages.py:join
    inputs: [a]
"""

SYSTEM = "You are a careful assistant who reads every conversation twice, " \
         "weighs the arguments of both sides, and then answers in one short paragraph."


def workflow(prompt: list[str] = PROMPT, system: str = SYSTEM, **params: str) -> str:
    text = WORKFLOW.format(prompt="\n".join(f"        {line}" for line in prompt),
                           system=system)
    for key, value in params.items():
        old = next(line for line in text.splitlines() if line.startswith(f"      {key}:"))
        text = text.replace(old, f"      {key}: {value}")
    return text


@pytest.fixture
def built(project: Project) -> Project:
    project.write("Workflowfile", workflow())
    result = project.run()
    assert result.code == 0, result.stderr
    return project


def reasons(project: Project, stage: str, *args: str) -> list[dict[str, Any]]:
    result = project.run("-n", "--json", *args)
    assert result.code == 0, result.stderr
    return result.stage(stage)["reasons"]


# ---------------------------------------------------------------- 3. diffs and YAML spelling


def test_a_changed_line_of_a_long_prompt_is_shown_as_a_diff(built: Project) -> None:
    prompt = [*PROMPT]
    prompt[5] = "Line 6 of the judge's instructions, rewritten."
    built.write("Workflowfile", workflow(prompt))
    for out in (built.run("-n", "--explain").stdout, built.run("status").stdout):
        lines = out.splitlines()
        head = next(i for i, line in enumerate(lines) if "params.prompt changed" in line)
        assert lines[head].endswith("params.prompt changed: 1 line changed")
        shown = [line.strip() for line in lines[head + 1:] if line.startswith("         ")]
        assert "-Line 6 of the judge's instructions." in shown
        assert "+Line 6 of the judge's instructions, rewritten." in shown
        assert "Line 4 of the judge's instructions." in shown  # context
        assert not any("Line 1 of" in line or "Line 12 of" in line for line in shown)
        assert "\\n" not in out  # never the whole value as one quoted string
    reason = next(r for r in reasons(built, "a") if r.get("key") == "params.prompt")
    assert reason["old"] == "\n".join(PROMPT) + "\n" and reason["new"] == "\n".join(prompt) + "\n"
    assert "+Line 6 of the judge's instructions, rewritten." in reason["diff"].splitlines()


def test_a_long_diff_is_capped(built: Project) -> None:
    built.write("Workflowfile", workflow([f"Another line {i}." for i in range(60)]))
    out = built.run("-n", "--explain").stdout
    assert "params.prompt changed: 12 lines changed, 48 added" in out
    assert "more diff lines" in out
    assert len(out.splitlines()) < 40


def test_a_long_one_line_string_is_shown_around_its_change(built: Project) -> None:
    built.write("Workflowfile", workflow(system=SYSTEM.replace("twice", "three times")))
    message = next(r["message"] for r in reasons(built, "a") if r.get("key") == "params.system")
    assert message.startswith("params.system changed: …")
    old, new = message.removeprefix("params.system changed: ").split(" → ")
    assert "twice" in old and "three times" in new
    assert "…" in old and len(old) < len(SYSTEM) // 2


@pytest.mark.parametrize(("key", "value", "expected", "old", "new"), [
    ("flag", "false", "params.flag changed: true → false", True, False),
    ("n", '"5"', 'params.n changed: 5 → "5" (int → str)', 5, "5"),
    ("n", "5.0", "params.n changed: 5 → 5.0 (int → float)", 5, 5.0),
    ("maybe", "hello world", "params.maybe changed: null → hello world", None, "hello world"),
    ("items", "[a, c]", "params.items changed: [a, b] → [a, c]", ["a", "b"], ["a", "c"]),
    ("items", "[{k: v}]", "params.items changed: [a, b] → [{k: v}] (at [0]: str → dict)",
     ["a", "b"], [{"k": "v"}]),
    ("tag", '"yes"', 'params.tag changed: x → "yes"', "x", "yes"),
    ("tag", '"a: b"', 'params.tag changed: x → "a: b"', "x", "a: b"),
])
def test_values_are_spelt_as_yaml_and_kept_typed_in_json(built: Project, key: str, value: str,
                                                         expected: str, old: Any,
                                                         new: Any) -> None:
    built.write("Workflowfile", workflow(**{key: value}))
    assert f"- {expected}\n" in built.run("-n", "--explain").stdout
    reason = next(r for r in reasons(built, "a") if r.get("key") == f"params.{key}")
    assert reason["message"] == expected
    assert json.dumps([reason["old"], reason["new"]]) == json.dumps([old, new])  # types too


# ---------------------------------------------------------------- 4. show and export


def test_show_and_export_of_an_out_of_date_stage_say_so(built: Project) -> None:
    before = built.run("show", "a", "--json").json()
    assert before["up_to_date"] is True and before["reasons"] == []
    assert built.run("show", "a").stderr == ""

    built.write("Workflowfile", workflow(tag="y"))
    shown = built.run("show", "a")
    assert shown.code == 0
    assert shown.stderr == ("warning: 'a' is out of date (params.tag changed); this is its last "
                            "built output\n")
    assert "(4 of 4 rows)" in shown.stdout  # still the last built output
    doc = built.run("show", "a", "--json").json()
    assert doc["up_to_date"] is False and doc["rows"] == 4 and len(doc["data"]) == 4
    assert [r["code"] for r in doc["reasons"]] == ["spec_changed"]

    downstream = built.run("show", "c")
    assert "warning: 'c' is out of date (upstream stage 'a' will run first: params.tag " \
           "changed)" in downstream.stderr

    exported = built.run("export", "a", "a.csv", "--json")
    assert exported.code == 0 and (built.root / "a.csv").is_file()
    assert "warning: 'a' is out of date" in exported.stderr
    assert exported.json()["up_to_date"] is False
    assert exported.json()["reasons"][0]["key"] == "params.tag"

    assert built.run("-q").code == 0
    again = built.run("export", "a", "a.csv", "--json")
    assert "warning" not in again.stderr and again.json()["up_to_date"] is True


def test_show_plans_only_the_stage_and_what_it_needs(built: Project) -> None:
    """c is out of date; a, which c does not feed, is still shown as up to date."""
    built.write("Workflowfile", workflow() + "    params: {tag: other}\n")
    assert built.run("-n", "--json").stage("c")["action"] == "run"
    shown = built.run("show", "a")
    assert shown.code == 0 and shown.stderr == ""


def test_only_export_copies_to_write_is_not_out_of_date(built: Project) -> None:
    """Its selected output stays what it is: nothing to warn about."""
    built.write("Workflowfile", workflow().replace("    batch_size: 2\n",
                                                   "    batch_size: 2\n    outputs: [a.csv]\n"))
    assert built.run("-n", "--json").stage("a")["step"] == "outputs"
    assert built.run("show", "a").stderr == ""


# ---------------------------------------------------------------- 5. renamed stage or workflow


def test_a_renamed_stage_points_at_the_artifacts_it_left(built: Project) -> None:
    built.write("Workflowfile", workflow().replace("  a:\n", "  first:\n")
                .replace("inputs: [a]", "inputs: [first]"))
    for out in (built.run("-n", "--explain").stdout, built.run("status").stdout):
        lines = out.splitlines()
        i = next(i for i, line in enumerate(lines) if line.strip() == "- never built: no record")
        assert lines[i + 1].strip().startswith(
            "artifacts of a stage no longer in the Workflowfile exist: a (generate stage, 4 rows")
        assert "`dd-build clean --orphans`" in lines[i + 2]
    reason = reasons(built, "first")[0]
    assert reason["code"] == "no_record" and "a (generate stage" in reason["notes"][0]

    assert built.run("clean", "--orphans").code == 0
    out = built.run("-n", "--explain").stdout
    assert "no longer in the Workflowfile" not in out


def test_a_renamed_workflow_points_at_its_old_records(built: Project) -> None:
    built.write("Workflowfile", workflow().replace("workflow: demo", "workflow: demo2"))
    out = built.run("-n", "--explain").stdout
    assert "artifacts/demo/a holds records of a stage 'a' of workflow 'demo': if this " \
           "workflow was renamed, set `workflow: demo` again to use them" in out


def test_a_fresh_project_has_no_rename_note(project: Project) -> None:
    out = project.run("-n", "--explain").stdout
    assert "never built: no record" in out and "artifacts" not in out
