"""The README's example pipeline builds offline, then null-builds, from a copy of the repo's files."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import REPO, Project


def _example(tmp_path: Path) -> Project:
    proj = Project(tmp_path / "example")
    shutil.copytree(REPO / "examples", proj.root / "examples")
    shutil.copy(REPO / "Workflowfile.example", proj.root / "Workflowfile")
    return proj


def test_example_builds_then_is_up_to_date(tmp_path: Path) -> None:
    proj = _example(tmp_path)
    first = proj.run("--json")
    assert first.code == 0, first.stderr
    results = {s["stage"]: (s["result"], s["rows"]) for s in first.json()["stages"]}
    assert results["personas"] == ("completed", 20)
    assert results["conversations"] == ("completed", 200)  # 20 personas explode into 200
    assert results["judged"] == ("completed", 200)  # no num_records: the seed's row count
    assert results["joined"] == ("completed", 200)
    assert results["report"][0] == "completed"
    assert "rows: 200" in (proj.root / "reports" / "summary.md").read_text()
    second = proj.run("--json")
    assert second.code == 0
    assert {s["result"] for s in second.json()["stages"]} == {"up_to_date"}


def test_example_threshold_change_reruns_judge_and_after(tmp_path: Path) -> None:
    proj = _example(tmp_path)
    assert proj.run().code == 0
    wf = proj.root / "Workflowfile"
    wf.write_text(wf.read_text().replace("threshold: 0.6", "threshold: 0.7"))
    plan = proj.run("-n", "--json").json()["stages"]
    actions = {s["stage"]: s["action"] for s in plan}
    assert actions == {"personas": "up_to_date", "conversations": "up_to_date",
                       "judged": "run", "joined": "run", "report": "run"}
    judged = next(s for s in plan if s["stage"] == "judged")
    assert judged["reasons"][0]["key"] == "params.threshold"
