"""End to end: what happens at a stage's boundary, through the real `python -m buildtool` CLI.

Issue 3 / DESIGN.md §1–5: on_success callbacks (filter-then-enrich, a missing callback output,
callbacks that fail, paths stored relative), processors, empty outputs, review gates
(export → edit → override), seeds from data files, export copies (`outputs`), clean, strict
resume at a boundary, and retries. Each test writes its own small stage code into a real temp
project; `calls.log` beside the code lists every batch, transform and callback call.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from conftest import CHAIN, Project, Result, find_reason, reason_codes

# ----------------------------------------------------------------------------- stage code

GEN_CODE = '''
from pathlib import Path

import pyarrow as pa

HERE = Path(__file__).parent


def _log(line):
    with open(HERE / "calls.log", "a") as fh:
        fh.write(line + "\\n")


def scored(ctx):
    """Deterministic rows from ctx.rng: id, score in [0, 1), tag x/y/z, group 0-3, noise."""
    _log(f"{ctx.stage_name} {ctx.batch_index}")
    rows = []
    for i in range(ctx.size):
        n = ctx.offset + i
        rows.append({"id": n, "score": round(ctx.rng.random(), 4), "tag": "xyz"[n % 3],
                     "group": n % 4, "noise": ctx.rng.randint(0, 9)})
    return rows


def enrich(ctx):
    """One row per seed row."""
    _log(f"{ctx.stage_name} {ctx.batch_index}")
    return [{"seed_id": r["id"], "seed_score": r["score"], "n": ctx.offset + i}
            for i, r in enumerate(ctx.seed_rows.to_pylist())]


def echo(ctx):
    """The batch's seed rows as they are, plus the batch index."""
    _log(f"{ctx.stage_name} {ctx.batch_index}")
    t = ctx.seed_rows
    return t.append_column("batch", pa.array([ctx.batch_index] * t.num_rows, pa.int64()))


def upto(ctx):
    """Rows whose id is below the number in data/n.txt (a file input): maybe none."""
    _log(f"{ctx.stage_name} {ctx.batch_index}")
    n = int(Path(ctx.inputs["data/n.txt"]).read_text())
    return [{"id": ctx.offset + i} for i in range(ctx.size) if ctx.offset + i < n]


def mark(ctx):
    """Transform: the single input table with a `checked` column added."""
    _log(f"{ctx.stage_name} all")
    (table,) = [t for t in ctx.inputs.values() if isinstance(t, pa.Table)]
    return table.append_column("checked", pa.array([True] * table.num_rows))


def flaky(ctx):
    """Batch 1 raises on its first attempt only; attempts are counted in attempts-<batch>."""
    counter = HERE / f"attempts-{ctx.batch_index}"
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    if ctx.batch_index == 1 and n == 0:
        raise RuntimeError("transient upstream hiccup")
    return [{"id": ctx.offset + i} for i in range(ctx.size)]
'''

FILTERS_CODE = '''
import os
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

HERE = Path(__file__).parent


def _log(line):
    with open(HERE / "calls.log", "a") as fh:
        fh.write(line + "\\n")


def _good(ctx):
    table = ds.dataset(ctx.stage_output, format="parquet").to_table().sort_by("id")
    return table.filter(pc.greater(table["score"], 0.5))


def keep_good(ctx):
    _log(f"callback {ctx.stage_name}")
    path = os.path.join(ctx.out_dir, "good.parquet")
    pq.write_table(_good(ctx), path)
    return path


def keep_good_in_project(ctx):
    """Writes a folder of parquet files inside the project (not in out_dir); absolute path."""
    _log(f"callback {ctx.stage_name}")
    folder = HERE.parent / "data" / "filtered"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(_good(ctx), folder / "part-0.parquet")
    return str(folder.resolve())


def explodes(ctx):
    _log(f"callback {ctx.stage_name}")
    raise ValueError("judge quota exceeded")


def missing(ctx):
    _log(f"callback {ctx.stage_name}")
    return os.path.join(ctx.out_dir, "nothing-here.parquet")


def as_csv(ctx):
    _log(f"callback {ctx.stage_name}")
    path = os.path.join(ctx.out_dir, "good.csv")
    pcsv.write_csv(_good(ctx), path)
    return path
'''

# gen (40 rows, 4 batches) → on_success keeps score > 0.5 → enrich seeded by it, no num_records.
FILTER_ENRICH = """
workflow: demo
stages:
  gen:
    generate: code/gen.py:scored
    num_records: 40
    batch_size: 10
    on_success: code/filters.py:keep_good
  enrich:
    generate: code/gen.py:enrich
    seed: gen
    batch_size: 10
"""

# drafts (12 rows) → final (a transform that marks every row).
REVIEW = """
workflow: demo
stages:
  drafts:
    generate: code/gen.py:scored
    num_records: 12
    batch_size: 4
  final:
    transform: code/gen.py:mark
    inputs: [drafts]
"""


# ----------------------------------------------------------------------------- helpers


def _setup(project: Project, workflow: str) -> Project:
    project.write("code/gen.py", GEN_CODE)
    project.write("code/filters.py", FILTERS_CODE)
    project.write("Workflowfile", workflow)
    return project


def _ok(result: Result) -> dict[str, Any]:
    assert result.code == 0, f"exit {result.code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.json()


def _build(project: Project, *args: str, **env: str) -> dict[str, dict[str, Any]]:
    """Build with --json; the stages of the report by name."""
    return {s["stage"]: s for s in _ok(project.run("--json", *args, **env))["stages"]}


def _built(project: Project, *args: str) -> dict[str, dict[str, Any]]:
    """Build, then forget the calls it made."""
    stages = _build(project, *args)
    project.clear_calls()
    return stages


def _edit(project: Project, old: str, new: str, rel: str = "Workflowfile") -> None:
    path = project.root / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new, 1))


def _selected(project: Project, stage: str) -> pa.Table:
    """A stage's selected output as its record names it (batches, processed, callback, …)."""
    out = project.record(stage)["output"]
    if out["kind"] == "batches":
        return project.table(stage)
    return pa.concat_tables([pq.read_table(project.root / f["path"]) for f in out["files"]])


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


def _stage_files(project: Project, stage: str) -> dict[str, bytes]:
    folder = project.artifacts / stage
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _failed(result: Result) -> str:
    """Everything a build that must fail with exit 1 printed (its report and its errors)."""
    assert result.code == 1, f"exit {result.code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result.stdout + result.stderr


# ----------------------------------------------------------------------------- 1. filter-then-enrich


def test_callback_filters_and_the_next_stage_defaults_to_the_filtered_count(project: Project) -> None:
    _setup(project, FILTER_ENRICH)
    stages = _build(project)

    generated = project.table("gen")  # every batch the generate function wrote
    assert generated.num_rows == 40
    expected = [r for r in _rows(generated) if r["score"] > 0.5]
    assert 0 < len(expected) < 40
    assert project.record("gen")["output"]["kind"] == "callback"
    assert _rows(_selected(project, "gen")) == expected
    assert stages["gen"]["rows"] == len(expected)

    enriched = _rows(project.table("enrich"))
    assert stages["enrich"]["rows"] == len(expected)
    assert [r["seed_id"] for r in enriched] == [r["id"] for r in expected]
    assert project.record("enrich")["num_records"] == len(expected)
    assert sorted(project.calls()) == sorted(
        [f"gen {i}" for i in range(4)] + ["callback gen"]
        + [f"enrich {i}" for i in range(-(-len(expected) // 10))])


def test_callback_file_is_code_and_reruns_only_the_callback(project: Project) -> None:
    _setup(project, FILTER_ENRICH)
    _built(project)
    enrich_before = (project.artifacts / "enrich" / "stage.json").read_bytes()

    with open(project.root / "code" / "filters.py", "a") as fh:
        fh.write("\n# reviewed the threshold\n")
    stages = _build(project)
    assert find_reason(stages["gen"], "code_changed")["file"] == "code/filters.py"
    assert reason_codes(stages["gen"]) == ["code_changed"]
    assert stages["gen"]["batches_run"] == 0
    assert stages["gen"]["result"] == "completed"
    assert project.calls() == ["callback gen"]
    # the callback wrote the same rows: early cutoff keeps enrich as it is
    assert stages["enrich"]["result"] == "up_to_date"
    assert (project.artifacts / "enrich" / "stage.json").read_bytes() == enrich_before


def test_on_success_version_reruns_only_the_callback(project: Project) -> None:
    _setup(project, FILTER_ENRICH)
    _built(project)

    _edit(project, "    on_success: code/filters.py:keep_good\n",
          "    on_success: code/filters.py:keep_good\n    on_success_version: v2\n")
    stages = _build(project)
    reason = find_reason(stages["gen"], "spec_changed")
    assert (reason["key"], reason["old"], reason["new"]) == ("on_success_version", None, "v2")
    assert stages["gen"]["batches_run"] == 0
    assert project.calls() == ["callback gen"]
    assert stages["enrich"]["result"] == "up_to_date"
    assert project.record("gen")["spec"]["on_success_version"] == "v2"


# ----------------------------------------------------------------------------- 2. missing callback output


def test_missing_callback_output_reruns_only_the_callback(project: Project) -> None:
    _setup(project, FILTER_ENRICH)
    _built(project)
    out = project.record("gen")["output"]["files"][0]["path"]
    before = (project.root / out).read_bytes()
    enrich_before = (project.artifacts / "enrich" / "stage.json").read_bytes()

    (project.root / out).unlink()
    stages = _build(project)
    assert reason_codes(stages["gen"]) == ["callback_output_missing"]
    assert find_reason(stages["gen"], "callback_output_missing")["file"] == out
    assert stages["gen"]["action"] == "resume"
    assert stages["gen"]["batches_run"] == 0
    assert project.calls() == ["callback gen"]  # the callback ran once, no batch
    assert (project.root / out).read_bytes() == before
    # byte-identical callback output: the dependant stays up to date (early cutoff)
    assert stages["enrich"]["result"] == "up_to_date"
    assert stages["enrich"]["batches_run"] == 0
    assert (project.artifacts / "enrich" / "stage.json").read_bytes() == enrich_before

    project.clear_calls()
    stages = _build(project)
    assert {s["result"] for s in stages.values()} == {"up_to_date"}
    assert project.calls() == []


# ----------------------------------------------------------------------------- 3. processors

PROCESSED = """
workflow: demo
stages:
  gen:
    generate: code/gen.py:scored
    num_records: 40
    batch_size: 10
    processors:
      - drop: [noise]
      - rename: {group: bucket}
      - filter: "score > 0.5 and tag != 'x'"
      - dedupe: [bucket]
      - limit: 3
  after:
    transform: code/gen.py:mark
    inputs: [gen]
"""


def _expected_processed(generated: pa.Table, limit: int) -> list[dict[str, Any]]:
    out, seen = [], set()
    for row in _rows(generated):
        row = {"id": row["id"], "score": row["score"], "tag": row["tag"], "bucket": row["group"]}
        if not (row["score"] > 0.5 and row["tag"] != "x") or row["bucket"] in seen:
            continue
        seen.add(row["bucket"])
        out.append(row)
    return out[:limit]


def test_processors_shape_the_output_in_order(project: Project) -> None:
    _setup(project, PROCESSED)
    stages = _build(project)
    generated = project.table("gen")
    assert generated.column_names == ["id", "score", "tag", "group", "noise"]
    expected = _expected_processed(generated, 3)
    assert len(expected) == 3  # the data are rich enough for dedupe and limit to matter
    got = _selected(project, "gen")
    assert project.record("gen")["output"]["kind"] == "processed"
    assert got.column_names == ["id", "score", "tag", "bucket"]
    assert _rows(got) == expected
    assert stages["gen"]["rows"] == 3
    # the dependant sees the processed table, not the batches
    assert _rows(project.table("after")) == [{**r, "checked": True} for r in expected]


def test_changing_a_processor_reruns_processors_without_regenerating(project: Project) -> None:
    _setup(project, PROCESSED)
    _built(project)
    batches_before = {p: b for p, b in _stage_files(project, "gen").items() if p.startswith("batches/")}

    _edit(project, "      - limit: 3\n", "      - limit: 2\n")
    stages = _build(project)
    assert find_reason(stages["gen"], "spec_changed")["key"] == "processors"
    assert stages["gen"]["action"] == "resume"
    assert stages["gen"]["batches_run"] == 0
    assert stages["gen"]["rows"] == 2
    assert not [c for c in project.calls() if c.startswith("gen ")]
    assert project.calls() == ["after all"]  # its input changed
    after = {p: b for p, b in _stage_files(project, "gen").items() if p.startswith("batches/")}
    assert after == batches_before
    assert _rows(_selected(project, "gen")) == _expected_processed(project.table("gen"), 2)


def test_processor_with_an_unknown_column_fails_and_keeps_the_batches(project: Project) -> None:
    _setup(project, PROCESSED.replace("dedupe: [bucket]", "dedupe: [buckett]"))
    err = _failed(project.run())
    assert "✗ gen: failed" in err
    assert "processor 4 (`dedupe`)" in err
    assert "unknown column `buckett`" in err
    record = project.record("gen")
    assert record["status"] == "failed"
    assert "buckett" in record["error"]
    assert len(record["batches"]) == 4
    assert all((project.artifacts / b["file"]).is_file() for b in record["batches"])
    assert not (project.artifacts / "after" / "stage.json").exists()  # not run
    project.clear_calls()

    _edit(project, "dedupe: [buckett]", "dedupe: [bucket]")
    stages = _build(project)
    assert stages["gen"]["action"] == "resume"
    assert stages["gen"]["batches_run"] == 0
    assert not [c for c in project.calls() if c.startswith("gen ")]
    assert _rows(_selected(project, "gen")) == _expected_processed(project.table("gen"), 3)
    assert stages["after"]["result"] == "completed"


# ----------------------------------------------------------------------------- 4. empty outputs

EMPTY = """
workflow: demo
stages:
  src:
    generate: code/gen.py:upto
    inputs: [data/n.txt]
    num_records: 6
    batch_size: 3
  dep:
    transform: code/gen.py:mark
    inputs: [src]
"""


def test_empty_output_fails_without_allow_empty(project: Project) -> None:
    _setup(project, EMPTY)
    project.write("data/n.txt", "0")
    result = project.run("--json")
    err = _failed(result)
    assert "stage 'src'" in err and "no rows" in err and "allow_empty" in err
    by_stage = {s["stage"]: s for s in result.json()["stages"]}
    assert by_stage["src"]["result"] == "failed"
    assert by_stage["dep"]["result"] == "not_run"
    assert project.record("src")["status"] == "failed"
    assert "dep all" not in project.calls()


def test_allow_empty_completes_empty_and_skips_dependants(project: Project) -> None:
    _setup(project, EMPTY.replace("    batch_size: 3\n", "    batch_size: 3\n    allow_empty: true\n"))
    project.write("data/n.txt", "0")
    stages = _build(project)
    assert stages["src"]["result"] == "completed_empty"
    assert stages["src"]["rows"] == 0
    assert stages["dep"]["result"] == "skipped_empty_upstream"
    assert project.record("src")["status"] == "completed_empty"
    assert project.record("dep")["status"] == "skipped_empty_upstream"
    assert "dep all" not in project.calls()
    project.clear_calls()
    records_before = {s: (project.artifacts / s / "stage.json").read_bytes() for s in ("src", "dep")}

    stages = _build(project)  # both statuses are preserved while the fingerprints match
    assert stages["src"]["result"] == "up_to_date"
    assert stages["dep"]["action"] == "skip_empty_upstream"
    assert stages["dep"]["result"] == "skipped_empty_upstream"
    assert find_reason(stages["dep"], "upstream_empty")["input"] == "src"
    assert project.calls() == []
    assert {s: (project.artifacts / s / "stage.json").read_bytes()
            for s in ("src", "dep")} == records_before

    project.write("data/n.txt", "4")  # now the stage produces rows: the dependant runs
    stages = _build(project)
    assert find_reason(stages["src"], "input_changed")["input"] == "data/n.txt"
    assert stages["src"]["result"] == "completed"
    assert stages["src"]["rows"] == 4
    assert stages["dep"]["result"] == "completed"
    assert "dep all" in project.calls()
    assert project.record("dep")["status"] == "completed"
    assert _rows(project.table("dep")) == [{"id": i, "checked": True} for i in range(4)]


# ----------------------------------------------------------------------------- 5. review gates


def test_review_gate_export_edit_override(project: Project) -> None:
    _setup(project, REVIEW)
    _built(project)
    original = project.table("drafts")

    exported = project.run("export", "drafts", "review.parquet")
    assert exported.code == 0, exported.stderr
    review = pq.read_table(project.root / "review.parquet")
    assert review.equals(original)
    rows = _rows(review)
    rows[0]["tag"] = "edited by a person"
    del rows[-1]
    approved = pa.Table.from_pylist(rows, schema=review.schema)
    pq.write_table(approved, project.root / "approved.parquet")

    result = project.run("override", "drafts", "approved.parquet")
    assert result.code == 0, result.stderr
    record = project.record("drafts")
    assert record["output"]["kind"] == "override"
    assert record["output"]["rows"] == 11
    assert (project.artifacts / "drafts" / "override").is_dir()
    status = project.run("status")
    assert status.code == 0, status.stderr
    drafts_line = next(line for line in status.stdout.splitlines() if line.startswith("drafts"))
    assert "override" in drafts_line and "approved.parquet" in drafts_line
    assert project.calls() == []  # override runs no stage code

    stages = _build(project)
    assert stages["drafts"]["result"] == "up_to_date"
    assert stages["drafts"]["rows"] == 11
    assert reason_codes(stages["final"]) == ["overridden"]
    assert find_reason(stages["final"], "overridden")["input"] == "drafts"
    assert stages["final"]["result"] == "completed"
    assert project.calls() == ["final all"]  # drafts did not rerun
    assert _rows(project.table("final")) == [{**r, "checked": True} for r in rows]
    project.clear_calls()

    stages = _build(project)  # the override stays across builds
    assert {s["result"] for s in stages.values()} == {"up_to_date"}
    assert project.calls() == []
    assert project.record("drafts")["output"]["kind"] == "override"

    stages = _build(project, "--force", "drafts")  # … until drafts itself reruns
    assert stages["drafts"]["result"] == "completed"
    assert stages["drafts"]["batches_run"] == 3
    assert project.record("drafts")["output"]["kind"] == "batches"
    assert not (project.artifacts / "drafts" / "override").exists()
    assert project.table("drafts").equals(original)
    # final was built from drafts' own output before the review: restored from the cache
    assert stages["final"]["result"] == "restored"
    assert project.table("final").num_rows == 12
    assert "override" not in project.run("status").stdout


@pytest.mark.parametrize("bad, why", [
    ("text", "approved.parquet is not a readable parquet file"),
    ("csv", "approved.csv is not a readable parquet file"),
    ("missing_column", "lacks the column score"),
    ("wrong_type", "column 'id' is string"),
    ("no_file", "no file approved.parquet"),
])
def test_override_rejects_a_bad_file_and_changes_nothing(project: Project, bad: str,
                                                         why: str) -> None:
    _setup(project, REVIEW)
    _built(project)
    good = project.table("drafts")
    path = project.root / "approved.parquet"
    if bad == "text":
        path.write_text("id,score\n1,0.5\n")
    elif bad == "csv":
        path = project.root / "approved.csv"
        pcsv.write_csv(good, path)
    elif bad == "missing_column":
        pq.write_table(good.drop_columns(["score"]), path)
    elif bad == "wrong_type":
        ids = pa.array([f"draft-{i}" for i in range(good.num_rows)])
        pq.write_table(good.set_column(0, "id", ids), path)
    before = _stage_files(project, "drafts")

    result = project.run("override", "drafts", str(path.relative_to(project.root)))
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "stage 'drafts'" in result.stderr
    assert why in result.stderr
    assert _stage_files(project, "drafts") == before
    stages = _build(project)
    assert {s["result"] for s in stages.values()} == {"up_to_date"}


# ----------------------------------------------------------------------------- 6. seeds from files

SEEDS = """
workflow: demo
stages:
  docs:
    generate: code/gen.py:echo
    seed: data/docs/*.parquet
    batch_size: 4
  from_csv:
    generate: code/gen.py:echo
    seed: data/seed.csv
    batch_size: 4
  from_jsonl:
    generate: code/gen.py:echo
    seed: data/seed.jsonl
    batch_size: 4
"""


def _write_seeds(project: Project) -> list[dict[str, Any]]:
    docs = [{"id": i, "text": f"doc {i}"} for i in range(20)]
    (project.root / "data" / "docs").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(docs[:12]), project.root / "data/docs/a.parquet")
    pq.write_table(pa.Table.from_pylist(docs[12:]), project.root / "data/docs/b.parquet")
    project.write("data/seed.csv", "id,text\n" + "".join(f"{i},row {i}\n" for i in range(6)))
    project.write("data/seed.jsonl", "".join(json.dumps({"id": i, "text": f"line {i}"}) + "\n"
                                             for i in range(5)))
    return docs


def _without_batch(table: pa.Table) -> list[dict[str, Any]]:
    return _rows(table.drop_columns(["batch"]))


def test_seeds_from_parquet_glob_csv_and_jsonl(project: Project) -> None:
    _setup(project, SEEDS)
    docs = _write_seeds(project)
    stages = _build(project)
    assert stages["docs"]["rows"] == 20  # no num_records: the seed files' row count
    assert _without_batch(project.table("docs")) == docs
    assert project.table("docs").column("batch").to_pylist() == [i // 4 for i in range(20)]
    assert _without_batch(project.table("from_csv")) == [
        {"id": i, "text": f"row {i}"} for i in range(6)]
    assert _without_batch(project.table("from_jsonl")) == [
        {"id": i, "text": f"line {i}"} for i in range(5)]
    record = project.record("docs")
    assert sorted(record["inputs"]["files"]) == ["data/docs/a.parquet", "data/docs/b.parquet"]
    project.clear_calls()

    changed = docs[12:]
    changed[0] = {"id": 12, "text": "rewritten"}
    pq.write_table(pa.Table.from_pylist(changed), project.root / "data/docs/b.parquet")
    with open(project.root / "data/seed.jsonl", "a") as fh:
        fh.write(json.dumps({"id": 5, "text": "line 5"}) + "\n")
    stages = _build(project)
    assert reason_codes(stages["docs"]) == ["input_changed"]
    assert find_reason(stages["docs"], "input_changed")["input"] == "data/docs/b.parquet"
    assert stages["docs"]["result"] == "completed"
    assert _without_batch(project.table("docs"))[12] == {"id": 12, "text": "rewritten"}
    assert find_reason(stages["from_jsonl"], "input_changed")["input"] == "data/seed.jsonl"
    assert stages["from_jsonl"]["rows"] == 6
    assert stages["from_csv"]["result"] == "up_to_date"
    assert not [c for c in project.calls() if c.startswith("from_csv ")]


SHUFFLE = """
workflow: demo
stages:
  ordered:
    generate: code/gen.py:echo
    seed: data/docs/*.parquet
    batch_size: 4
  shuffled:
    generate: code/gen.py:echo
    seed: data/docs/*.parquet
    batch_size: 4
    sampling: shuffle
"""


def test_shuffle_sampling_is_deterministic_and_differs_from_ordered(tmp_path: Path) -> None:
    tables = []
    for name in ("one", "two"):
        proj = _setup(Project(tmp_path / name), SHUFFLE)
        docs = _write_seeds(proj)
        stages = _build(proj)
        assert stages["shuffled"]["rows"] == 20
        tables.append((proj.table("ordered"), proj.table("shuffled")))
    (ordered, shuffled), (_, shuffled_again) = tables
    assert shuffled.equals(shuffled_again)  # two fresh builds in two folders agree
    assert _without_batch(ordered) == docs
    shuffled_rows = _without_batch(shuffled)
    assert shuffled_rows != docs
    assert sorted(shuffled_rows, key=lambda r: r["id"]) == docs  # a permutation of the seed


# ----------------------------------------------------------------------------- 7. export copies

EXPORTS = """
workflow: demo
stages:
  gen:
    generate: code/gen.py:scored
    num_records: 12
    batch_size: 4
    outputs: [data/final.jsonl, data/final.csv]
  marked:
    transform: code/gen.py:mark
    inputs: [gen]
    outputs: [data/marked.parquet]
"""


def test_export_copies_are_written_and_rewritten_without_regenerating(project: Project) -> None:
    _setup(project, EXPORTS)
    _built(project)
    table = project.table("gen")
    jsonl = project.root / "data/final.jsonl"
    csv = project.root / "data/final.csv"
    lines = jsonl.read_text().splitlines()
    assert [json.loads(line) for line in lines] == _rows(table)
    assert _rows(pcsv.read_csv(csv)) == _rows(table)
    marked = project.root / "data/marked.parquet"
    assert pq.read_table(marked).equals(project.table("marked"))
    csv_bytes, marked_bytes = csv.read_bytes(), marked.read_bytes()

    csv.unlink()
    marked.unlink()
    stages = _build(project)
    assert find_reason(stages["gen"], "output_missing")["file"] == "data/final.csv"
    assert stages["gen"]["batches_run"] == 0
    assert find_reason(stages["marked"], "output_missing")["file"] == "data/marked.parquet"
    assert stages["marked"]["batches_run"] == 0
    assert project.calls() == []  # neither the batches nor the transform ran again
    assert csv.read_bytes() == csv_bytes
    assert marked.read_bytes() == marked_bytes
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == _rows(table)

    stages = _build(project)
    assert {s["result"] for s in stages.values()} == {"up_to_date"}


# ----------------------------------------------------------------------------- 8. clean


def _stage_folders(project: Project) -> list[str]:
    return sorted(p.name for p in project.artifacts.iterdir() if p.is_dir())


def test_clean_one_stage_then_all(project: Project) -> None:
    _built(project)  # the conftest CHAIN: a → b → c
    assert _stage_folders(project) == ["a", "b", "c"]

    result = project.run("clean", "b")
    assert result.code == 0, result.stderr
    assert _stage_folders(project) == ["a", "c"]
    stages = _build(project)
    assert reason_codes(stages["b"]) == ["no_record"]
    assert stages["a"]["result"] == "up_to_date"

    result = project.run("clean", "--all")
    assert result.code == 0, result.stderr
    assert _stage_folders(project) == []


def test_clean_orphans_removes_only_stages_gone_from_the_workflowfile(project: Project) -> None:
    project.write("Workflowfile", CHAIN + """
  extra:
    generate: code/stages.py:rows
    num_records: 3
    batch_size: 3
""")
    _built(project)
    assert _stage_folders(project) == ["a", "b", "c", "extra"]
    kept = {s: _stage_files(project, s) for s in ("a", "b", "c")}

    project.write("Workflowfile", CHAIN)
    result = project.run("clean", "--orphans")
    assert result.code == 0, result.stderr
    assert "extra" in result.stdout
    assert _stage_folders(project) == ["a", "b", "c"]
    assert {s: _stage_files(project, s) for s in ("a", "b", "c")} == kept
    stages = _build(project)
    assert {s["result"] for s in stages.values()} == {"up_to_date"}
    assert project.calls() == []


# ----------------------------------------------------------------------------- 9. strict resume

STRICT = REVIEW.replace("    batch_size: 4\n", "    batch_size: 4\n    processors:\n      - limit: 10\n")


def test_strict_resume_allows_an_override_and_a_processor_change(project: Project) -> None:
    _setup(project, STRICT)
    _built(project)
    approved = _selected(project, "drafts").slice(0, 7)
    pq.write_table(approved, project.root / "approved.parquet")
    assert project.run("override", "drafts", "approved.parquet").code == 0

    stages = _build(project, "--resume", "always")  # dependants of an override may run
    assert stages["drafts"]["result"] == "up_to_date"
    assert reason_codes(stages["final"]) == ["overridden"]
    assert stages["final"]["result"] == "completed"
    assert project.table("final").num_rows == 7
    project.clear_calls()

    # a processor change of an overridden stage is held (the review stays) ...
    _edit(project, "      - limit: 10\n", "      - limit: 5\n")
    stages = _build(project, "--resume", "always")
    assert (stages["drafts"]["action"], stages["final"]["result"]) == ("held", "up_to_date")
    assert project.calls() == []
    # ... until it is released: then a later-step change with every batch kept, allowed
    assert project.run("override", "--release", "drafts").code == 0
    stages = _build(project, "--resume", "always")
    assert stages["drafts"]["action"] == "resume"
    assert find_reason(stages["drafts"], "spec_changed")["key"] == "processors"
    assert stages["drafts"]["batches_run"] == 0
    assert stages["drafts"]["rows"] == 5
    assert project.record("drafts")["output"]["kind"] == "processed"  # the override is gone
    assert project.calls() == ["final all"]
    assert project.table("final").num_rows == 5


# ----------------------------------------------------------------------------- 10. callback failures


@pytest.mark.parametrize("callback, cause", [
    ("explodes", "ValueError: judge quota exceeded"),
    ("missing", "does not exist"),
    ("as_csv", "not a parquet file"),
])
def test_failing_callback_fails_the_stage_and_keeps_its_batches(project: Project, callback: str,
                                                               cause: str) -> None:
    _setup(project, FILTER_ENRICH.replace("keep_good", callback))
    result = project.run("--json")
    err = _failed(result)
    assert "stage 'gen'" in err
    assert f"code/filters.py:{callback}" in err
    assert cause in err
    by_stage = {s["stage"]: s for s in result.json()["stages"]}
    assert by_stage["gen"]["result"] == "failed"
    assert cause in by_stage["gen"]["error"]
    assert by_stage["enrich"]["result"] == "not_run"
    record = project.record("gen")
    assert record["status"] == "failed"
    assert cause in record["error"]
    assert [b["index"] for b in record["batches"]] == [0, 1, 2, 3]
    project.clear_calls()

    _edit(project, f"code/filters.py:{callback}", "code/filters.py:keep_good")
    stages = _build(project)
    assert stages["gen"]["action"] == "resume"
    assert stages["gen"]["batches_run"] == 0
    assert stages["gen"]["result"] == "completed"
    assert stages["enrich"]["result"] == "completed"
    assert not [c for c in project.calls() if c.startswith("gen ")]
    assert "callback gen" in project.calls()


# ----------------------------------------------------------------------------- 11. relative paths


def test_callback_path_inside_the_project_is_stored_relative(project: Project,
                                                             tmp_path: Path) -> None:
    _setup(project, FILTER_ENRICH.replace("keep_good", "keep_good_in_project"))
    stages = _build(project)
    output = project.record("gen")["output"]
    assert output["kind"] == "callback"
    assert [f["path"] for f in output["files"]] == ["data/filtered/part-0.parquet"]
    for stage in ("gen", "enrich"):
        text = (project.artifacts / stage / "stage.json").read_text()
        assert str(project.root) not in text
        assert str(tmp_path) not in text
    expected = [r for r in _rows(project.table("gen")) if r["score"] > 0.5]
    assert stages["enrich"]["rows"] == len(expected)

    calls = project.calls()
    moved = Project(tmp_path / "elsewhere" / "moved")
    moved.root.parent.mkdir()
    shutil.move(project.root, moved.root)
    assert not project.root.exists()
    stages = _build(moved)
    assert {s["result"] for s in stages.values()} == {"up_to_date"}
    assert moved.calls() == calls  # nothing new was called (the log moved along)
    assert _rows(_selected(moved, "gen")) == expected


# ----------------------------------------------------------------------------- 12. retries

RETRIES = """
workflow: demo
stages:
  flaky:
    generate: code/gen.py:flaky
    num_records: 9
    batch_size: 3
    retries: RETRIES
"""


def _attempts(project: Project) -> dict[int, int]:
    return {i: int((project.root / "code" / f"attempts-{i}").read_text())
            for i in range(3) if (project.root / "code" / f"attempts-{i}").exists()}


def test_retries_recover_a_batch_that_fails_once(project: Project) -> None:
    _setup(project, RETRIES.replace("RETRIES", "2"))
    result = project.run("--json", DD_BUILD_RETRY_BASE_S="0.01")
    stage = _ok(result)["stages"][0]
    assert stage["result"] == "completed"
    assert stage["rows"] == 9
    assert stage["batches_run"] == 3
    assert "retrying" in result.stderr
    assert "transient upstream hiccup" in result.stderr
    assert _attempts(project) == {0: 1, 1: 2, 2: 1}
    assert project.record("flaky")["status"] == "completed"


def test_no_retries_fails_at_once(project: Project) -> None:
    _setup(project, RETRIES.replace("RETRIES", "0"))
    err = _failed(project.run(DD_BUILD_RETRY_BASE_S="0.01"))
    assert "✗ flaky: failed" in err
    assert "transient upstream hiccup" in err
    assert "retrying" not in err
    assert _attempts(project) == {0: 1, 1: 1}
    assert [b["index"] for b in project.record("flaky")["batches"]] == [0]

    _edit(project, "retries: 0", "retries: 2")  # not part of the fingerprint: a plain resume
    stages = _build(project, DD_BUILD_RETRY_BASE_S="0.01")
    assert reason_codes(stages["flaky"]) == ["failed_before"]
    assert stages["flaky"]["batches_run"] == 2
    assert _attempts(project) == {0: 1, 1: 2, 2: 1}
