"""End to end: the real `python -m buildtool` CLI on real temp project folders.

Covers builds, null builds, why a stage reruns (params, code, file inputs, globs), early cutoff,
targets, forcing, dry runs, -f/-C, the read-only commands, moved projects, `run` stages and
failing stages. Resume, kill, strict resume and locking are covered elsewhere.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
from conftest import CHAIN, STAGE_CODE, Project, Result, find_reason, reason_codes

# ----------------------------------------------------------------------------- helpers


def _ok(result: Result) -> dict[str, Any]:
    """The JSON document of a successful run, with its stderr in the failure message."""
    assert result.code == 0, f"exit {result.code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.json()


def _names(doc: dict[str, Any]) -> list[str]:
    return [s["stage"] for s in doc["stages"]]


def _by_stage(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["stage"]: s for s in doc["stages"]}


def _called_stages(project: Project) -> set[str]:
    return {line.split()[0] for line in project.calls()}


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root` with its size and mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        out[path.relative_to(root).as_posix()] = (st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return out


def _no_traceback(result: Result) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


def _build(project: Project, *args: str, **env: str) -> dict[str, Any]:
    return _ok(project.run("--json", *args, **env))


def _built_chain(project: Project) -> Project:
    _build(project)
    project.clear_calls()
    return project


PY = shlex.quote(sys.executable)

# A `run` stage's script: reads every parquet file under each input folder, writes a summary.
REPORT_SCRIPT = """
import sys
from pathlib import Path
import pyarrow.parquet as pq

*inputs, output = sys.argv[1:]
lines = []
for folder in inputs:
    files = sorted(Path(folder).glob("*.parquet"))
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    lines.append(f"{folder} files={len(files)} rows={rows}")
Path(output).parent.mkdir(parents=True, exist_ok=True)
Path(output).write_text("\\n".join(lines) + "\\n")
print("report-stdout")
print("report-stderr", file=sys.stderr)
"""

# CHAIN plus a `run` stage over b's batches folder.
RUN_WF = CHAIN + """
  report:
    run: PYTHON scripts/report.py {inputs} {outputs}
    inputs: [b]
    code: [scripts/report.py]
    outputs: [out/report.txt]
""".replace("PYTHON", PY)

FAIL_SCRIPT = """
import sys
print("about to fail on stdout")
print("about to fail on stderr", file=sys.stderr)
sys.exit(3)
"""


# ----------------------------------------------------------------------------- 1. chain


def test_chain_build_then_null_build(project: Project) -> None:
    doc = _build(project)
    assert doc["dry_run"] is False and doc["ok"] is True and doc["workflow"] == "demo"
    assert _names(doc) == ["a", "b", "c"]
    st = _by_stage(doc)
    for name in "abc":
        assert st[name]["result"] == "completed", st[name]
        assert st[name]["action"] == "run"
        assert reason_codes(st[name]) == ["no_record"]
    assert (st["a"]["rows"], st["a"]["batches_total"], st["a"]["batches_run"]) == (20, 4, 4)
    assert (st["b"]["rows"], st["b"]["batches_total"], st["b"]["batches_run"]) == (60, 6, 6)
    assert st["c"]["rows"] == 1
    batches = sorted(p.name for p in (project.artifacts / "b" / "batches").iterdir())
    assert batches == [f"batch-{i:06d}.parquet" for i in range(6)]
    assert len(list((project.artifacts / "a" / "batches").glob("*.parquet"))) == 4
    assert pq.read_table(project.artifacts / "b" / "batches" / "batch-000005.parquet").num_rows == 10
    assert project.table("b").num_rows == 60
    assert project.table("c").to_pylist() == [{"n": 80, "tag": "j"}]
    assert all(project.record(n)["status"] == "completed" for n in "abc")
    assert (project.artifacts / "workflow.json").is_file()
    assert sorted(project.calls()) == sorted(
        [f"a {i}" for i in range(4)] + [f"b {i}" for i in range(6)] + ["c all"])

    project.clear_calls()
    doc = _build(project)
    assert doc["ok"] is True
    for s in doc["stages"]:
        assert s["action"] == "up_to_date" and s["result"] == "up_to_date", s
        assert s["batches_run"] == 0 and s["reasons"] == []
    assert [s["rows"] for s in doc["stages"]] == [20, 60, 1]
    assert project.calls() == []


def test_text_output_without_json(project: Project) -> None:
    first = project.run()
    assert first.code == 0, first.stderr
    assert "completed" in first.stdout + first.stderr
    second = project.run()
    assert second.code == 0
    assert "up to date" in second.stdout
    quiet = project.run("-q")
    assert quiet.code == 0 and quiet.stdout == "" and quiet.stderr == ""


# ----------------------------------------------------------------------------- 2. seeds


def test_explode_and_default_num_records(project: Project) -> None:
    project.write("Workflowfile", CHAIN + """
  exploded:
    generate: code/stages.py:rows
    seed: a
    num_records: 60
    batch_size: 7
  same_size:
    generate: code/stages.py:rows
    seed: a
    batch_size: 6
""")
    st = _by_stage(_build(project, "exploded", "same_size"))
    assert _names({"stages": list(st.values())}) == ["a", "exploded", "same_size"]
    assert st["exploded"]["rows"] == 60 and st["exploded"]["batches_total"] == 9
    rows = project.table("exploded").to_pylist()
    assert [r["id"] for r in rows] == list(range(60))
    assert [r["seed_id"] for r in rows] == [i % 20 for i in range(60)]
    assert st["same_size"]["rows"] == 20 and st["same_size"]["batches_total"] == 4
    same = project.table("same_size").to_pylist()
    assert [r["seed_id"] for r in same] == list(range(20))
    assert project.record("same_size")["num_records"] == 20


# ----------------------------------------------------------------------------- 3. params


def test_params_change_reruns_stage_and_dependants(project: Project) -> None:
    project.write("Workflowfile", CHAIN.replace("    batch_size: 10\n",
                                                "    batch_size: 10\n    params: {tag: x}\n"))
    _built_chain(project)
    before_b = project.table("b").to_pylist()
    project.write("Workflowfile", CHAIN.replace("    batch_size: 10\n",
                                                "    batch_size: 10\n    params: {tag: y}\n"))

    explain = project.run("--explain", "-n")
    assert explain.code == 0, explain.stderr
    assert 'params.tag changed: x → y' in explain.stdout
    assert "upstream stage 'b' will run first" in explain.stdout
    lines = explain.stdout.splitlines()
    assert any(line.startswith("a") and "up to date" in line for line in lines), lines

    plan = _ok(project.run("-n", "--json"))
    assert plan["dry_run"] is True
    st = _by_stage(plan)
    assert st["a"]["action"] == "up_to_date" and st["a"]["reasons"] == []
    assert st["b"]["action"] == "run"
    spec = find_reason(st["b"], "spec_changed")
    assert (spec["key"], spec["old"], spec["new"]) == ("params.tag", "x", "y")
    assert spec["message"]
    assert reason_codes(st["b"]) == ["spec_changed"]
    assert reason_codes(st["c"]) == ["upstream_will_run"]
    assert find_reason(st["c"], "upstream_will_run")["input"] == "b"
    assert project.calls() == []

    st = _by_stage(_build(project))
    assert st["a"]["result"] == "up_to_date"
    assert st["b"]["result"] == "completed" and st["b"]["batches_run"] == 6
    assert st["c"]["result"] == "completed"
    assert _called_stages(project) == {"b", "c"}
    after_b = project.table("b").to_pylist()
    assert {r["tag"] for r in after_b} == {"y"} and {r["tag"] for r in before_b} == {"x"}


def test_params_key_added_reports_unset_old_value(project: Project) -> None:
    _built_chain(project)
    project.write("Workflowfile", CHAIN.replace("params: {tag: x}", "params: {tag: x, lang: en}"))
    st = _by_stage(_ok(project.run("-n", "--json")))
    spec = find_reason(st["a"], "spec_changed")
    assert (spec["key"], spec["old"], spec["new"]) == ("params.lang", None, "en")
    assert reason_codes(st["b"]) == ["upstream_will_run"]


# ----------------------------------------------------------------------------- 4. code, inputs

INPUTS_WF = """
workflow: demo
stages:
  a:
    generate: code/stages.py:rows
    num_records: 20
    batch_size: 5
    inputs: [data/prompt.txt]
  b:
    generate: code/b_code.py:rows
    seed: a
    num_records: 30
    batch_size: 10
  c:
    transform: code/stages.py:join
    inputs: [b]
  g:
    generate: code/stages.py:rows
    num_records: 3
    batch_size: 3
    inputs: ["notes/*.txt"]
"""


def _inputs_project(project: Project) -> Project:
    project.write("Workflowfile", INPUTS_WF)
    project.write("code/b_code.py", STAGE_CODE)
    project.write("data/prompt.txt", "Write a persona.\n")
    project.write("notes/one.txt", "one\n")
    return _built_chain(project)


def test_code_change_names_the_file(project: Project) -> None:
    _inputs_project(project)
    code = project.root / "code" / "b_code.py"
    code.write_text(code.read_text().replace('"tag": ctx.params.get("tag", "t")', '"tag": "new"'))

    st = _by_stage(_ok(project.run("-n", "--json")))
    assert st["a"]["action"] == "up_to_date" and st["g"]["action"] == "up_to_date"
    assert reason_codes(st["b"]) == ["code_changed"]
    assert find_reason(st["b"], "code_changed")["file"] == "code/b_code.py"
    assert reason_codes(st["c"]) == ["upstream_will_run"]

    st = _by_stage(_build(project))
    assert [st[n]["result"] for n in "abcg"] == ["up_to_date", "completed", "completed",
                                                "up_to_date"]
    assert _called_stages(project) == {"b", "c"}
    assert {r["tag"] for r in project.table("b").to_pylist()} == {"new"}


def test_file_input_change_names_the_input(project: Project) -> None:
    _inputs_project(project)
    project.write("data/prompt.txt", "Write a different persona.\n")
    st = _by_stage(_ok(project.run("-n", "--json")))
    assert reason_codes(st["a"]) == ["input_changed"]
    assert find_reason(st["a"], "input_changed")["input"] == "data/prompt.txt"
    assert st["g"]["action"] == "up_to_date"

    st = _by_stage(_build(project))
    assert st["a"]["result"] == "completed"
    # The prompt is not part of a's rows: a's output is the same, so b and c are cut off.
    assert st["b"]["result"] == "up_to_date" and st["c"]["result"] == "up_to_date"
    assert _called_stages(project) == {"a"}


def test_glob_input_new_file(project: Project) -> None:
    _inputs_project(project)
    # Same content, new mtime: not a change.
    os.utime(project.root / "notes" / "one.txt", ns=(2_000_000_000 * 10**9,) * 2)
    assert all(s["action"] == "up_to_date" for s in _ok(project.run("-n", "--json"))["stages"])

    project.write("notes/two.txt", "two\n")
    project.write("notes/ignored.md", "not matched\n")
    st = _by_stage(_ok(project.run("-n", "--json")))
    assert reason_codes(st["g"]) == ["input_changed"]
    assert find_reason(st["g"], "input_changed")["input"] == "notes/two.txt"
    assert all(st[n]["action"] == "up_to_date" for n in "abc")
    st = _by_stage(_build(project))
    assert st["g"]["result"] == "completed"
    assert _called_stages(project) == {"g"}
    assert sorted(project.record("g")["inputs"]["files"]) == ["notes/one.txt", "notes/two.txt"]


# ----------------------------------------------------------------------------- 5. early cutoff


def test_early_cutoff_when_rerun_output_is_identical(project: Project) -> None:
    project.write("code/a_code.py", STAGE_CODE)
    project.write("Workflowfile", CHAIN.replace("generate: code/stages.py:rows\n    num_records: 20",
                                                "generate: code/a_code.py:rows\n    num_records: 20"))
    _built_chain(project)
    before = {n: project.record(n)["output"]["digest"] for n in "abc"}
    code = project.root / "code" / "a_code.py"
    code.write_text(code.read_text() + "\n# a comment that changes nothing\n")

    plan = _by_stage(_ok(project.run("-n", "--json")))
    assert reason_codes(plan["a"]) == ["code_changed"]
    assert reason_codes(plan["b"]) == ["upstream_will_run"]

    st = _by_stage(_build(project))
    assert st["a"]["result"] == "completed" and st["a"]["batches_run"] == 4
    assert st["b"]["result"] == "up_to_date" and st["b"]["batches_run"] == 0
    assert st["c"]["result"] == "up_to_date"
    assert _called_stages(project) == {"a"}
    assert {n: project.record(n)["output"]["digest"] for n in "abc"} == before

    project.clear_calls()
    assert all(s["action"] == "up_to_date" for s in _build(project)["stages"])
    assert project.calls() == []


# ----------------------------------------------------------------------------- 6. targets


def test_target_builds_only_its_closure(project: Project) -> None:
    doc = _build(project, "b")
    assert _names(doc) == ["a", "b"]
    assert all(s["result"] == "completed" for s in doc["stages"])
    assert not (project.artifacts / "c").exists()
    assert _called_stages(project) == {"a", "b"}
    project.clear_calls()
    doc = _build(project, "build", "c")
    assert _names(doc) == ["a", "b", "c"]
    assert [s["result"] for s in doc["stages"]] == ["up_to_date", "up_to_date", "completed"]
    assert _called_stages(project) == {"c"}


def test_unknown_target_suggests_a_name(project: Project) -> None:
    result = project.run("bb")
    assert result.code == 2
    assert "did you mean `b`" in result.stderr
    _no_traceback(result)
    assert not (project.root / "artifacts").exists()


# ----------------------------------------------------------------------------- 7. forcing


def test_rerun_from_reruns_stage_and_descendants(project: Project) -> None:
    _built_chain(project)
    st = _by_stage(_build(project, "--rerun-from", "b"))
    assert st["a"]["result"] == "up_to_date" and st["a"]["reasons"] == []
    for name in "bc":
        assert st[name]["result"] == "completed"
        assert reason_codes(st[name])[0] == "forced"
    assert st["b"]["batches_run"] == 6
    assert _called_stages(project) == {"b", "c"}
    assert project.calls().count("c all") == 1


def test_force_reruns_one_stage_and_dependants_follow_early_cutoff(project: Project) -> None:
    _built_chain(project)
    b_before = project.record("b")
    st = _by_stage(_build(project, "--force", "b"))
    assert st["a"]["result"] == "up_to_date"
    assert st["b"]["result"] == "completed" and reason_codes(st["b"]) == ["forced"]
    assert st["b"]["batches_run"] == 6
    assert st["c"]["result"] == "up_to_date"
    assert _called_stages(project) == {"b"}
    b_after = project.record("b")
    assert b_after["run_id"] != b_before["run_id"]
    assert b_after["output"]["digest"] == b_before["output"]["digest"]


def test_force_outside_closure_is_a_usage_error(project: Project) -> None:
    _built_chain(project)
    for flag in ("--force", "--rerun-from"):
        result = project.run("b", flag, "c")
        assert result.code == 2, (flag, result.stderr)
        assert "c" in result.stderr
        _no_traceback(result)
        result = project.run(flag, "nope")
        assert result.code == 2, (flag, result.stderr)
    assert project.calls() == []


# ----------------------------------------------------------------------------- 8. dry run


def test_dry_run_changes_nothing(project: Project) -> None:
    before = _listing(project.root)
    plan = _ok(project.run("-n", "--json"))
    assert project.run("--dry-run", "--explain").code == 0
    assert _listing(project.root) == before
    assert not (project.root / "artifacts").exists()
    assert plan["dry_run"] is True
    assert _names(plan) == ["a", "b", "c"]
    for s in plan["stages"]:
        assert "result" not in s and s["action"] == "run" and reason_codes(s) == ["no_record"], s
    assert project.calls() == []


def test_dry_run_after_build_touches_nothing(project: Project) -> None:
    _built_chain(project)
    project.write("Workflowfile", CHAIN.replace("tag: x", "tag: z"))
    before = _listing(project.root)
    plan = _ok(project.run("-n", "--json"))
    assert _listing(project.root) == before
    assert [s["action"] for s in plan["stages"]] == ["run", "run", "run"]
    assert project.calls() == []


# ----------------------------------------------------------------------------- 9. -f, -C


def test_file_and_directory_options(project: Project) -> None:
    (project.root / "Workflowfile").rename(project.root / "other.yaml")
    missing = project.run()
    assert missing.code == 2
    assert "Workflowfile" in missing.stderr
    _no_traceback(missing)

    doc = _build(project, "-f", "other.yaml")
    assert _names(doc) == ["a", "b", "c"] and doc["ok"] is True
    assert (project.artifacts / "c" / "stage.json").is_file()

    nested = Project(project.root / "sub" / "proj2")
    nested.write("code/stages.py", STAGE_CODE)
    nested.write("Workflowfile", CHAIN)
    doc = _build(project, "-C", "sub/proj2")
    assert doc["ok"] is True and _names(doc) == ["a", "b", "c"]
    assert (nested.artifacts / "c" / "stage.json").is_file()
    assert nested.table("b").num_rows == 60
    doc = _build(project, "-C", "sub/proj2", "status")
    assert all(s["up_to_date"] for s in doc["stages"])

    gone = project.run("-f", "nope.yaml")
    assert gone.code == 2 and "nope.yaml" in gone.stderr
    _no_traceback(gone)
    for cmd in ("status", "dag"):
        result = project.run(cmd)
        assert result.code == 2, cmd
        _no_traceback(result)


# ----------------------------------------------------------------------------- 10. commands


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


def test_export_round_trips(project: Project) -> None:
    _built_chain(project)
    expected = _rows(project.table("b"))
    readers = {".parquet": pq.read_table, ".jsonl": pjson.read_json, ".csv": pcsv.read_csv}
    for suffix, read in readers.items():
        out = project.root / "exports" / f"b{suffix}"
        out.parent.mkdir(exist_ok=True)
        result = project.run("export", "b", f"exports/b{suffix}")
        assert result.code == 0, result.stderr
        assert _rows(read(out)) == expected, suffix
    c = project.run("export", "c", "c.jsonl")
    assert c.code == 0
    assert [json.loads(x) for x in (project.root / "c.jsonl").read_text().splitlines()] == [
        {"n": 80, "tag": "j"}]
    bad = project.run("export", "b", "b.xlsx")
    assert bad.code == 2
    _no_traceback(bad)
    assert project.calls() == []


def test_show(project: Project) -> None:
    unbuilt = project.run("show", "b")
    assert unbuilt.code == 2
    assert "b" in unbuilt.stderr
    _no_traceback(unbuilt)

    _built_chain(project)
    shown = project.run("show", "b", "-n", "3")
    assert shown.code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["id", "value", "tag", "seed_id"]
    assert "(3 of 60 rows)" in shown.stdout
    expected = project.table("b").slice(0, 3).to_pylist()
    body = [line.split() for line in lines[2:2 + 3]]
    assert body == [[str(r["id"]), str(r["value"]), r["tag"], str(r["seed_id"])] for r in expected]
    assert len(lines) == 6

    as_json = project.run("show", "b", "-n", "3", "--json")
    assert as_json.code == 0 and json.loads(as_json.stdout)["data"] == expected
    unknown = project.run("show", "zz")
    assert unknown.code == 2
    _no_traceback(unknown)


def test_dag_formats_mention_every_edge(project: Project) -> None:
    edges = {("a", "b"), ("a", "c"), ("b", "c")}

    text = project.run("dag")
    assert text.code == 0
    found = set()
    for line in text.stdout.splitlines():
        if "<-" in line:
            stage, ups = line.split("<-")
            found |= {(u.strip(), stage.strip()) for u in ups.split(",")}
    assert found == edges

    mermaid = project.run("dag", "--format", "mermaid")
    assert mermaid.code == 0
    ids = {}
    found = set()
    for line in mermaid.stdout.splitlines():
        line = line.strip()
        if '["' in line:
            node, label = line.split('["')
            ids[node] = label.rstrip('"]')
        elif "-->" in line:
            src, dst = (x.strip() for x in line.split("-->"))
            found.add((ids[src], ids[dst]))
    assert mermaid.stdout.startswith("flowchart")
    assert found == edges

    dot = project.run("dag", "--format", "dot")
    assert dot.code == 0 and dot.stdout.startswith("digraph")
    for src, dst in edges:
        assert f'"{src}" -> "{dst}"' in dot.stdout
    assert dot.stdout.count("->") == len(edges)
    assert not (project.root / "artifacts").exists()


def test_schema_is_json(project: Project) -> None:
    result = project.run("schema")
    assert result.code == 0
    schema = json.loads(result.stdout)
    assert "$schema" in schema
    assert "stages" in json.dumps(schema)


def test_status_before_and_after_an_edit(project: Project) -> None:
    fresh = project.run("status")
    assert fresh.code == 0
    assert fresh.stdout.count("out of date") == 3
    assert "never built" in fresh.stdout

    _built_chain(project)
    status = project.run("status")
    assert status.code == 0
    lines = status.stdout.splitlines()
    for name in "abc":
        assert any(line.startswith(name) and "up to date" in line and "out of date" not in line
                   for line in lines), lines
    assert "60 rows" in status.stdout

    project.write("Workflowfile", CHAIN.replace("tag: x", "tag: w"))
    status = project.run("status")
    assert status.code == 0
    assert status.stdout.count("out of date") == 3
    assert 'params.tag changed: x → w' in status.stdout
    doc = _ok(project.run("status", "--json"))
    st = _by_stage(doc)
    assert [st[n]["up_to_date"] for n in "abc"] == [False, False, False]
    assert find_reason(st["a"], "spec_changed")["key"] == "params.tag"
    assert st["b"]["rows"] == 60 and st["b"]["status"] == "completed"
    assert project.calls() == []


# ----------------------------------------------------------------------------- 11. moving


def test_moved_and_copied_project_stays_up_to_date(project: Project, tmp_path: Path) -> None:
    project.write("Workflowfile", RUN_WF)
    project.write("scripts/report.py", REPORT_SCRIPT)
    _built_chain(project)
    for path in project.artifacts.rglob("*.json"):
        text = path.read_text()
        assert str(project.root) not in text and str(tmp_path) not in text, path

    copied = Project(tmp_path / "elsewhere" / "copy")
    shutil.copytree(project.root, copied.root)
    moved = Project(tmp_path / "moved")
    shutil.move(project.root, moved.root)
    later = 2_100_000_000 * 10**9
    for proj in (copied, moved):
        for path in proj.root.rglob("*"):
            os.utime(path, ns=(later, later))
        proj.clear_calls()
        doc = _build(proj)
        assert _names(doc) == ["a", "b", "c", "report"]
        for s in doc["stages"]:
            assert s["result"] == "up_to_date", s
        assert proj.calls() == []
        doc = _build(proj)
        assert all(s["result"] == "up_to_date" for s in doc["stages"])
        assert proj.calls() == []


# ----------------------------------------------------------------------------- 12. run stages

def test_run_stage_builds_and_tracks_its_output(project: Project) -> None:
    project.write("Workflowfile", RUN_WF)
    project.write("scripts/report.py", REPORT_SCRIPT)
    st = _by_stage(_build(project))
    assert st["report"]["result"] == "completed"
    report = project.root / "out" / "report.txt"
    assert report.read_text() == "artifacts/demo/b/batches files=6 rows=60\n"
    log = (project.artifacts / "report" / "log.txt").read_text()
    assert "report-stdout" in log and "report-stderr" in log

    project.clear_calls()
    assert _by_stage(_build(project))["report"]["result"] == "up_to_date"

    report.write_text("edited by hand\n")
    st = _by_stage(_build(project))
    assert reason_codes(st["report"]) == ["output_modified"]
    assert find_reason(st["report"], "output_modified")["file"] == "out/report.txt"
    assert st["report"]["result"] == "completed"
    assert report.read_text() == "artifacts/demo/b/batches files=6 rows=60\n"
    assert [st[n]["result"] for n in "abc"] == ["up_to_date"] * 3

    report.unlink()
    st = _by_stage(_build(project))
    assert reason_codes(st["report"]) == ["output_missing"]
    assert st["report"]["result"] == "completed" and report.is_file()

    # The script is part of the stage's code.
    script = project.root / "scripts" / "report.py"
    script.write_text(script.read_text() + "\n# tweak\n")
    st = _by_stage(_build(project))
    assert find_reason(st["report"], "code_changed")["file"] == "scripts/report.py"
    assert st["report"]["result"] == "completed"
    assert project.calls() == []


def test_run_stage_sees_upstream_changes(project: Project) -> None:
    project.write("Workflowfile", RUN_WF)
    project.write("scripts/report.py", REPORT_SCRIPT)
    _built_chain(project)
    project.write("Workflowfile", RUN_WF.replace("num_records: 60", "num_records: 40"))
    st = _by_stage(_build(project))
    assert st["b"]["result"] == "completed"
    assert st["report"]["result"] == "completed"
    assert (project.root / "out" / "report.txt").read_text() == \
        "artifacts/demo/b/batches files=4 rows=40\n"


def test_run_stage_failing_command(project: Project) -> None:
    project.write("Workflowfile", CHAIN + """
  bad:
    run: PYTHON scripts/fail.py {inputs} {outputs}
    inputs: [a]
    outputs: [out/bad.txt]
""".replace("PYTHON", PY))
    project.write("scripts/fail.py", FAIL_SCRIPT)
    result = project.run("--json", "a", "bad")
    assert result.code == 1, result.stderr
    _no_traceback(result)
    doc = result.json()
    assert doc["ok"] is False
    st = _by_stage(doc)
    assert st["a"]["result"] == "completed"
    assert st["bad"]["result"] == "failed"
    assert "status 3" in st["bad"]["error"]
    log = (project.artifacts / "bad" / "log.txt").read_text()
    assert "about to fail on stdout" in log and "about to fail on stderr" in log
    assert project.record("bad")["status"] == "failed"
    assert not (project.root / "out" / "bad.txt").exists()

    again = project.run("--json", "a", "bad")
    assert again.code == 1
    st = _by_stage(again.json())
    assert st["a"]["result"] == "up_to_date"
    assert "failed_before" in reason_codes(st["bad"])


# ----------------------------------------------------------------------------- 13. failures


def test_stage_raising_fails_only_itself(project: Project) -> None:
    result = project.run("--json", FAIL_AT="c:0")
    assert result.code == 1, result.stderr
    _no_traceback(result)
    doc = result.json()
    assert doc["ok"] is False
    st = _by_stage(doc)
    assert st["a"]["result"] == "completed" and st["b"]["result"] == "completed"
    assert st["c"]["result"] == "failed"
    assert "boom at c:0" in st["c"]["error"] and "RuntimeError" in st["c"]["error"]
    record = project.record("c")
    assert record["status"] == "failed" and "boom at c:0" in record["error"]
    assert project.record("b")["status"] == "completed"

    project.clear_calls()
    st = _by_stage(_build(project))
    assert st["a"]["result"] == "up_to_date" and st["b"]["result"] == "up_to_date"
    assert reason_codes(st["c"]) == ["failed_before"]
    assert st["c"]["result"] == "completed"
    assert _called_stages(project) == {"c"}


def test_failed_stage_stops_its_dependants(project: Project) -> None:
    result = project.run("--json", FAIL_AT="b:2")
    assert result.code == 1
    st = _by_stage(result.json())
    assert st["a"]["result"] == "completed"
    assert st["b"]["result"] == "failed" and "boom at b:2" in st["b"]["error"]
    assert st["c"]["result"] == "not_run"
    assert "c all" not in project.calls()
    assert not (project.artifacts / "c").exists()
