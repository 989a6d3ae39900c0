"""Issue 11 item 3: `dd-build touch STAGE... [-n]`. Real CLI on temp projects."""

from __future__ import annotations

from pathlib import Path

import pytest
from c11grow_support import CODE, ran
from conftest import Project

FLOW = """
workflow: demo
stages:
  gen:
    generate: code/stages.py:plain
    num_records: 40
    batch_size: 10
    params: {{t: {t}}}
  after:
    generate: code/stages.py:seeded
    seed: gen
    batch_size: 10
"""

SEEDED_X = '''

def seeded_x(ctx):
    return [{"x": row["i"]} for row in ctx.seed_rows.to_pylist()]
'''


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    p = Project(tmp_path / "proj")
    p.write("code/stages.py", CODE + SEEDED_X)
    p.write("Workflowfile", FLOW.format(t=1).replace("code/stages.py:seeded",
                                                    "code/stages.py:seeded_x"))
    result = p.run("-q")
    assert result.code == 0, result.stderr
    p.clear_calls()
    return p


def _edit(proj: Project, t: int) -> None:
    proj.write("Workflowfile", FLOW.format(t=t).replace("code/stages.py:seeded",
                                                        "code/stages.py:seeded_x"))


def test_touch_dry_run_shows_what_it_accepts_and_changes_nothing(proj: Project) -> None:
    _edit(proj, 2)
    before = (proj.artifacts / "gen" / "stage.json").read_bytes()
    result = proj.run("touch", "gen", "-n")
    assert result.code == 0, result.stderr
    assert "would accept" in result.stdout and "params.t changed: 1 → 2" in result.stdout
    assert (proj.artifacts / "gen" / "stage.json").read_bytes() == before
    doc = proj.run("touch", "gen", "-n", "--json").json()
    assert doc["dry_run"] is True
    [entry] = doc["stages"]
    assert entry["stage"] == "gen" and entry["touched_at"] is None
    assert [r["code"] for r in entry["accepted"]] == ["spec_changed"]


def test_touch_records_the_change_and_nothing_runs_after(proj: Project) -> None:
    _edit(proj, 2)
    (proj.root / "code" / "stages.py").write_text(CODE + SEEDED_X + "\n# a comment\n")
    doc = proj.run("touch", "gen", "after", "--json").json()  # both use the edited file
    entry, other = doc["stages"]
    assert other["stage"] == "after"
    assert [r["code"] for r in other["accepted"]] == ["code_changed"]
    assert entry["touched"] is True and isinstance(entry["touched_at"], float)
    assert {r["code"] for r in entry["accepted"]} == {"spec_changed", "code_changed"}
    record = proj.record("gen")
    assert record["spec"]["params"] == {"t": 2}
    assert record["extra"]["touched_at"] == entry["touched_at"]
    assert "params.t changed: 1 → 2" in record["extra"]["touched"]
    plan = proj.run("-n", "--json").json()
    assert [s["action"] for s in plan["stages"]] == ["up_to_date", "up_to_date"]
    result = proj.run("-q")
    assert result.code == 0 and ran(proj, "gen") == [] and ran(proj, "after") == []
    status = proj.run("status")
    assert "touched " in status.stdout + status.stderr
    stage = proj.run("status", "--json").stage("gen")
    assert stage["up_to_date"] and stage["touched_at"] == entry["touched_at"]
    # a later real build of the stage drops the mark
    _edit(proj, 3)
    assert proj.run("-q").code == 0
    assert "touched_at" not in proj.record("gen")["extra"]


def test_touch_refuses_what_has_nothing_to_accept(proj: Project) -> None:
    proj.write("Workflowfile", FLOW.format(t=1).replace("code/stages.py:seeded",
                                                        "code/stages.py:seeded_x") +
               "  late:\n    generate: code/stages.py:plain\n    num_records: 5\n")
    never = proj.run("touch", "late")
    assert never.code == 2 and "never built" in never.stderr + never.stdout
    (proj.artifacts / "gen" / "batches" / "batch-000001.parquet").unlink()
    missing = proj.run("touch", "gen", "--json")
    assert missing.code == 2 and "missing" in missing.json()["error"]["message"]
    assert proj.run("touch", "nosuch").code == 2


def test_touch_refuses_a_modified_output_and_a_growth(proj: Project) -> None:
    path = proj.artifacts / "gen" / "batches" / "batch-000000.parquet"
    path.write_bytes(path.read_bytes() + b"x")
    modified = proj.run("touch", "gen")
    assert modified.code == 2 and "modified" in modified.stderr
    proj2 = proj
    path.unlink()
    assert proj2.run("-q").code == 0
    proj2.write("Workflowfile", FLOW.format(t=1).replace("num_records: 40", "num_records: 50")
                .replace("code/stages.py:seeded", "code/stages.py:seeded_x"))
    grown = proj2.run("touch", "gen")
    assert grown.code == 2 and "num_records" in grown.stderr


def test_touch_refuses_a_failed_stage(proj: Project) -> None:
    proj.write("code/bad.py", "def bad(ctx):\n    raise ValueError('no')\n")
    proj.write("Workflowfile", FLOW.format(t=1).replace("code/stages.py:seeded",
                                                        "code/bad.py:bad"))
    assert proj.run("-q").code == 1
    refused = proj.run("touch", "after")
    assert refused.code == 2 and "failed" in refused.stderr


def test_touch_of_an_upstream_keeps_dependants_and_both_can_be_touched(proj: Project) -> None:
    _edit(proj, 5)
    alone = proj.run("touch", "after")
    assert alone.code == 2 and "upstream stage 'gen' will run first" in alone.stderr
    both = proj.run("touch", "after", "gen", "--json")
    assert both.code == 0, both.stderr
    assert [s["stage"] for s in both.json()["stages"]] == ["gen", "after"]
    assert proj.run("-n", "--json").stage("after")["action"] == "up_to_date"


def test_touch_takes_the_workflow_lock(proj: Project) -> None:
    import fcntl
    import os

    _edit(proj, 2)
    lock = proj.artifacts / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held = proj.run("touch", "gen")
        assert held.code == 4
    finally:
        os.close(fd)
    assert proj.run("touch", "gen").code == 0


STEPS = """
workflow: demo
stages:
  gen:
    generate: code/stages.py:plain
    num_records: 20
    batch_size: 10
    processors:
    - {{filter: "{expr}"}}
{more}
  report:
    run: python3 -c "import sys; open(sys.argv[2], 'w').write(open(sys.argv[1]).read())" {{inputs[0]}} {{outputs[0]}}
    inputs: [data/in.txt]
    outputs: [out.txt]
    params: {{v: {v}}}
"""


def test_touch_accepts_a_later_step_and_a_run_stage_and_refuses_a_new_step(tmp_path: Path
                                                                           ) -> None:
    proj = Project(tmp_path / "proj")
    proj.write("code/stages.py", CODE)
    proj.write("data/in.txt", "x\n")
    proj.write("Workflowfile", STEPS.format(expr="i >= 0", more="", v=1))
    assert proj.run("-q").code == 0
    processed = proj.record("gen")["output"]["digest"]
    proj.write("Workflowfile", STEPS.format(expr="i >= 0 and i < 1000", more="", v=2))
    dry = proj.run("touch", "gen", "report", "-n", "--json")
    assert dry.code == 0, dry.stderr
    assert [s["stage"] for s in dry.json()["stages"]] == ["gen", "report"]
    assert proj.run("touch", "gen", "report").code == 0
    plan = proj.run("-n", "--json").json()
    assert [s["action"] for s in plan["stages"]] == ["up_to_date", "up_to_date"]
    assert proj.record("gen")["output"]["digest"] == processed
    proj.write("Workflowfile", STEPS.format(expr="i >= 0 and i < 1000",
                                            more="    on_success: code/stages.py:plain", v=2))
    added = proj.run("touch", "gen")
    assert added.code == 2 and "on_success added" in added.stderr
