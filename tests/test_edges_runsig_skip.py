"""A stage skipped for an empty upstream leaves no output that claims to be current, and
`show`/`export` say it was skipped (issue 7: "Hard edges")."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Project


@pytest.fixture(autouse=True)
def _no_build_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests pin what reruns on its own; with the build cache (issue 11) a revert
    among them is restored instead (tests/test_c11cache_*.py)."""
    monkeypatch.setenv("DD_BUILD_CACHE", "off")

CODE = '''
from pathlib import Path

def upto(ctx):
    n = int(Path(ctx.inputs["data/n.txt"]).read_text())
    return [{"id": ctx.offset + i, "tag": "t"} for i in range(ctx.size) if ctx.offset + i < n]

def copy(ctx):
    return [{"id": r["id"], "tag": "g", "twice": 2 * r["id"]} for r in ctx.seed_rows.to_pylist()]

def split(ctx):
    import pyarrow.parquet as pq
    table = pq.read_table(ctx.stage_output)
    pq.write_table(table, Path(ctx.out_dir) / "part-0.parquet")
    return ctx.out_dir

def count(ctx):
    return {"rows": [ctx.inputs["src"].num_rows]}
'''

REPORT = '''
import sys
from pathlib import Path

batches, summary, parts = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
files = sorted(p.name for p in batches.iterdir())
summary.parent.mkdir(parents=True, exist_ok=True)
summary.write_text(f"{len(files)} batch files\\n")
parts.mkdir(parents=True)
for name in files:
    (parts / name).write_text("seen\\n")
'''

WORKFLOW = """
workflow: demo
stages:
  src:
    generate: code/gen.py:upto
    inputs: [data/n.txt]
    num_records: 6
    batch_size: 3
    allow_empty: true
  gen:
    generate: code/gen.py:copy
    seed: src
    processors: [{drop: [tag]}]
    on_success: code/gen.py:split
    outputs: [exports/gen.parquet, exports/gen.jsonl]
  tr:
    transform: code/gen.py:count
    inputs: [src]
    outputs: [exports/tr.csv]
  report:
    run: python3 code/report.py {inputs} {outputs}
    inputs: [src]
    outputs: [reports/summary.txt, reports/parts]
"""

OUTPUTS = ["exports/gen.parquet", "exports/gen.jsonl", "exports/tr.csv",
           "reports/summary.txt", "reports/parts"]
SKIPPED = ("gen", "tr", "report")


def setup(project: Project, n: int) -> None:
    project.write("code/gen.py", CODE)
    project.write("code/report.py", REPORT)
    project.write("Workflowfile", WORKFLOW)
    project.write("data/n.txt", str(n))


def results(project: Project) -> dict[str, str]:
    result = project.run("--json")
    assert result.code == 0, result.stderr
    return {s["stage"]: s["result"] for s in result.json()["stages"]}


def stage_files(project: Project, stage: str) -> list[str]:
    folder = project.artifacts / stage
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_skipped_stage_removes_its_old_outputs(project: Project) -> None:
    setup(project, 4)
    assert set(results(project).values()) == {"completed"}
    assert all((project.root / rel).exists() for rel in OUTPUTS)
    assert (project.artifacts / "gen" / "callback" / "part-0.parquet").is_file()

    project.write("data/n.txt", "0")
    skipped = dict.fromkeys(SKIPPED, "skipped_empty_upstream")
    assert results(project) == {"src": "completed_empty", **skipped}
    # No run output, export copy, batch, processed or callback file of the earlier run is left.
    assert [rel for rel in OUTPUTS if (project.root / rel).exists()] == []
    assert (project.root / "reports").is_dir()  # only the declared outputs go, not their folders
    assert stage_files(project, "gen") == ["stage.json"]
    assert stage_files(project, "tr") == ["stage.json"]
    assert "stage.json" in stage_files(project, "report")
    for name in SKIPPED:
        record = project.record(name)
        assert record["status"] == "skipped_empty_upstream"
        assert record["output"] is None and record["batches"] == [] and record["steps"] == {}

    # Kept as it is while the upstream stays empty; then everything comes back.
    records = {n: (project.artifacts / n / "stage.json").read_bytes() for n in SKIPPED}
    assert results(project) == {"src": "up_to_date", **skipped}
    assert {n: (project.artifacts / n / "stage.json").read_bytes() for n in SKIPPED} == records
    project.write("data/n.txt", "4")
    assert set(results(project).values()) == {"completed"}
    assert all((project.root / rel).exists() for rel in OUTPUTS)


def test_show_and_export_of_a_skipped_stage_say_it_was_skipped(project: Project,
                                                                tmp_path: Path) -> None:
    setup(project, 4)
    assert project.run().code == 0
    project.write("data/n.txt", "0")
    assert project.run().code == 0

    for args in (("show", "gen"), ("show", "report"), ("export", "tr", str(tmp_path / "t.csv")),
                 ("override", "gen", "anything.parquet")):
        result = project.run(*args)
        assert result.code == 2, result
        assert "it was skipped in the last build" in result.stderr, result.stderr
        assert "upstream stage 'src' had no rows" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "t.csv").exists()
    shown = project.run("show", "src")  # the empty stage itself shows its (no) rows
    assert shown.code == 0, shown.stderr
