"""The planning index (buildtool/planindex.py) is never trusted over the files.

Each test builds the CHAIN project (so `.plan-index` exists), changes something a decision
depends on, and compares the plan (`-n --json`, and `--explain`) with the index in place
against the plan of the same project with the index moved away: they must be equal, and the
change must be noticed where the stat-based rules notice it.
"""

from __future__ import annotations

import json
import marshal
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, Result, reason_codes

INDEX = ".plan-index"


def index_path(project: Project) -> Path:
    return project.artifacts / INDEX


def plan_both(project: Project, *args: str) -> tuple[dict[str, Any], str]:
    """The dry-run plan (JSON) and --explain text, the same with the index and without it."""
    with_index = project.run("-n", "--json", *args)
    explain = project.run("-n", "--explain", *args)
    aside = project.root / "index-aside"
    had = index_path(project).exists()
    if had:
        index_path(project).rename(aside)
    try:
        without = project.run("-n", "--json", *args)
        explain_without = project.run("-n", "--explain", *args)
    finally:
        if had:
            aside.rename(index_path(project))
    assert with_index.code == without.code, (with_index.stderr, without.stderr)
    assert with_index.json() == without.json()
    assert explain.stdout == explain_without.stdout
    assert explain.stderr == explain_without.stderr
    return with_index.json(), explain.stdout


def stage_of(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in doc["stages"] if s["stage"] == name)


@pytest.fixture
def built(project: Project) -> Project:
    result = project.run()
    assert result.code == 0, result.stderr
    assert index_path(project).is_file()
    doc, _ = plan_both(project)
    assert {s["action"] for s in doc["stages"]} == {"up_to_date"}
    project.clear_calls()
    return project


def same_second(path: Path, mtime_ns: int) -> None:
    """Set `path`'s mtime to another nanosecond within the second of `mtime_ns`."""
    second = mtime_ns - mtime_ns % 1_000_000_000
    other = second + (mtime_ns % 1_000_000_000 + 1) % 1_000_000_000
    os.utime(path, ns=(other, other))


def rewrite_same_size(path: Path, exact_mtime: bool) -> None:
    """Flip one byte in place, keeping the size; restore the mtime exactly, or within its
    second."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    with open(path, "r+b") as fh:
        fh.write(data)
    if exact_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        same_second(path, st.st_mtime_ns)
    assert path.stat().st_size == st.st_size


def test_an_edited_code_file_within_the_same_second_is_noticed(built: Project) -> None:
    code = built.root / "code" / "stages.py"
    st = code.stat()
    code.write_text(code.read_text().replace('"t")', '"u")'))
    assert code.stat().st_size == st.st_size
    same_second(code, st.st_mtime_ns)
    doc, explain = plan_both(built)
    assert {s["action"] for s in doc["stages"]} == {"run"}
    assert "code_changed" in reason_codes(stage_of(doc, "a"))


def test_an_edited_file_input_within_the_same_second_is_noticed(built: Project) -> None:
    built.write("data/in.txt", "one\n")
    built.write("Workflowfile", (built.root / "Workflowfile").read_text().replace(
        "    params: {tag: x}", "    params: {tag: x}\n    inputs: [data/in.txt]"))
    assert built.run().code == 0
    path = built.root / "data" / "in.txt"
    st = path.stat()
    path.write_text("two\n")
    same_second(path, st.st_mtime_ns)
    doc, _ = plan_both(built)
    assert "input_changed" in reason_codes(stage_of(doc, "a"))


def test_a_deleted_batch_file_is_noticed(built: Project) -> None:
    batch = built.artifacts / built.record("b")["batches"][2]["file"]
    batch.unlink()
    doc, _ = plan_both(built)
    b = stage_of(doc, "b")
    assert b["action"] == "resume" and reason_codes(b) == ["output_missing"]


@pytest.mark.parametrize("exact", [False, True], ids=["same-second", "same-mtime"])
def test_a_rewritten_batch_file_of_the_same_size(built: Project, exact: bool) -> None:
    batch = built.artifacts / built.record("a")["batches"][1]["file"]
    rewrite_same_size(batch, exact_mtime=exact)
    doc, _ = plan_both(built)
    a = stage_of(doc, "a")
    if exact:  # size and mtime_ns as recorded: the stat rule cannot see it, with or without
        assert a["action"] == "up_to_date"
    else:
        assert a["action"] == "resume" and reason_codes(a) == ["output_modified"]


def test_a_deleted_record_is_noticed(built: Project) -> None:
    (built.artifacts / "b" / "stage.json").unlink()
    doc, _ = plan_both(built)
    assert reason_codes(stage_of(doc, "b")) == ["no_record"]
    assert stage_of(doc, "a")["action"] == "up_to_date"


def test_a_record_edited_in_place_with_its_size_and_mtime_kept_is_noticed(built: Project
                                                                          ) -> None:
    # An edit in place keeps the inode; size and mtime_ns are restored here; only the ctime,
    # which no one can set back, still tells. The index must not serve the old record.
    path = built.artifacts / "a" / "stage.json"
    st = path.stat()
    text = path.read_text()
    assert '"tag": "x"' in text
    with open(path, "r+", encoding="utf-8") as fh:
        fh.write(text.replace('"tag": "x"', '"tag": "y"'))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == \
        (st.st_ino, st.st_size, st.st_mtime_ns)
    doc, explain = plan_both(built)
    a = stage_of(doc, "a")
    assert a["action"] == "run" and reason_codes(a) == ["spec_changed"]
    assert "params.tag changed: y → x" in explain


def test_a_record_replaced_by_another_is_noticed(built: Project) -> None:
    path = built.artifacts / "c" / "stage.json"
    record = json.loads(path.read_text())
    record["status"] = "failed"
    record["error"] = "boom"
    path.write_text(json.dumps(record))
    doc, _ = plan_both(built)
    assert reason_codes(stage_of(doc, "c")) == ["failed_before"]


@pytest.mark.parametrize("damage", ["torn", "garbled", "empty", "not-marshal"])
def test_a_damaged_index_is_ignored_and_rebuilt(built: Project, damage: str) -> None:
    path = index_path(built)
    data = path.read_bytes()
    if damage == "torn":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbled":
        garbled = bytearray(data)
        for i in range(len(data) // 3, len(data) // 3 + 64):
            garbled[i] ^= 0x5A
        path.write_bytes(bytes(garbled))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("{'stages': {}}\n")
    (built.artifacts / "b" / "stage.json").unlink()  # a change the plan must see
    doc, _ = plan_both(built)
    assert reason_codes(stage_of(doc, "b")) == ["no_record"]
    result = built.run("--json")
    assert result.code == 0, result.stderr
    # b's build is in the build cache (issue 11): restored, its record written anew
    assert result.stage("b")["result"] == "restored"
    assert _index_key(built)[1] == _current_version()  # written anew
    doc, _ = plan_both(built)
    assert {s["action"] for s in doc["stages"]} == {"up_to_date"}


def _index_key(project: Project) -> tuple[Any, ...]:
    magic, key, _crc, _payload = marshal.loads(index_path(project).read_bytes())
    return tuple(key)


def _current_version() -> str:
    from buildtool import __version__

    return __version__


def _rewrite_key(project: Project, version: str) -> None:
    magic, key, crc, payload = marshal.loads(index_path(project).read_bytes())
    key = (key[0], version, *key[2:])
    index_path(project).write_bytes(marshal.dumps((magic, key, crc, payload)))


def test_an_index_of_another_version_is_ignored(built: Project) -> None:
    # The other version's index claims stage b's record as it was before this edit: used,
    # it would hide the change.
    _rewrite_key(built, "0.0.0-other")
    (built.artifacts / "b" / "stage.json").unlink()
    doc, _ = plan_both(built)
    assert reason_codes(stage_of(doc, "b")) == ["no_record"]
    assert built.run().code == 0
    assert _index_key(built)[1] == _current_version()


def run_as_version(project: Project, version: str, *args: str) -> Result:
    """The CLI of a dd-build whose version is `version` (an upgrade, or a downgrade)."""
    code = ("import sys, buildtool; buildtool.__version__ = sys.argv[1]; "
            "from buildtool.cli import main; raise SystemExit(main(sys.argv[2:]))")
    proc = subprocess.run([sys.executable, "-c", code, version, *args], cwd=project.root,
                          env=project.env(), capture_output=True, text=True, timeout=300)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_an_upgrade_ignores_the_index_of_the_version_before(built: Project) -> None:
    old = run_as_version(built, "0.0.1-old", "--json")
    assert old.code == 0, old.stderr
    assert _index_key(built)[1] == "0.0.1-old"
    path = built.artifacts / "a" / "stage.json"
    record = json.loads(path.read_text())
    record["spec"]["params"]["tag"] = "z"  # a change only a fresh read of the record sees
    path.write_text(json.dumps(record, indent=1))
    doc, explain = plan_both(built)
    assert "params.tag changed: z → x" in explain
    assert built.run().code == 0
    assert _index_key(built)[1] == _current_version()
    assert {s["action"] for s in plan_both(built)[0]["stages"]} == {"up_to_date"}


def test_clean_of_one_stage_with_the_index_in_place(built: Project) -> None:
    assert built.run("clean", "b").code == 0
    assert not (built.artifacts / "b").exists()
    doc, _ = plan_both(built)
    assert reason_codes(stage_of(doc, "b")) == ["no_record"]
    assert stage_of(doc, "a")["action"] == "up_to_date"
    result = built.run("--json")
    assert result.code == 0, result.stderr
    # b's rows are the same as before (restored from the build cache): c is cut off
    assert [s["result"] for s in result.json()["stages"]] == \
        ["up_to_date", "restored", "up_to_date"]
    assert {s["action"] for s in plan_both(built)[0]["stages"]} == {"up_to_date"}


def test_a_null_build_writes_neither_the_index_nor_workflow_json(built: Project) -> None:
    assert built.run().code == 0  # the summary of a full null build
    index, summary = index_path(built), built.artifacts / "workflow.json"
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (index, summary)]
    assert built.run().code == 0
    assert built.run("-q").code == 0
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (index, summary)] == before


def test_workflow_json_is_written_when_what_it_says_changed(built: Project) -> None:
    summary = built.artifacts / "workflow.json"
    assert built.run().code == 0
    first = json.loads(summary.read_text())
    assert built.run("b").code == 0  # a build of fewer stages says something else
    second = json.loads(summary.read_text())
    assert [s["stage"] for s in second["stages"]] == ["a", "b"]
    assert second["finished_at"] >= first["finished_at"]
    summary.unlink()  # removed by hand: written again
    assert built.run().code == 0
    assert [s["stage"] for s in json.loads(summary.read_text())["stages"]] == ["a", "b", "c"]
    summary.write_text("{}")  # edited by hand: written again
    assert built.run().code == 0
    again = json.loads(summary.read_text())
    again.pop("finished_at")
    assert again == {k: v for k, v in first.items() if k != "finished_at"}


def test_a_running_record_is_never_taken_from_the_index(built: Project) -> None:
    # A killed build leaves b `running` with its journal; the journal grows beside the record,
    # so the index never holds such a record.
    (built.root / "code" / "go").write_text("")
    proc = built.start("--force", "b", HANG_AT="b:3")
    try:
        built.wait_for("code/b-reached-3", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert built.record("b")["status"] == "running"
    doc, _ = plan_both(built)
    assert stage_of(doc, "b")["action"] == "resume"
    assert built.run().code == 0
    from buildtool.planindex import PlanIndex

    index = PlanIndex.load(built.artifacts)
    assert set(index.entries) == {"a", "b", "c"}
    (built.artifacts / "b" / "stage.json").write_text(
        (built.artifacts / "b" / "stage.json").read_text().replace(
            '"status": "completed"', '"status": "running"'))
    index.refresh("b", built.artifacts / "b")
    assert "b" not in index.entries


def test_the_index_serves_unchanged_records_and_rereads_changed_ones(built: Project) -> None:
    from buildtool.planindex import PlanIndex
    from buildtool.records import read_record

    index = PlanIndex.load(built.artifacts)
    for name in "abc":
        assert index.read(name, built.artifacts / name).record == \
            read_record(built.artifacts / name).record
    assert index.used == 3 and not index.changed
    path = built.artifacts / "b" / "stage.json"
    path.write_text(path.read_text())  # the same bytes, a new mtime: read again
    again = PlanIndex.load(built.artifacts)
    assert again.read("b", built.artifacts / "b").record == read_record(path.parent).record
    assert again.used == 0 and again.changed


def test_an_entry_of_another_shape_is_read_from_the_file_and_made_again(built: Project
                                                                        ) -> None:
    from buildtool.planindex import PlanIndex
    from buildtool.records import read_record

    index = PlanIndex.load(built.artifacts)
    identity = index.entries["a"][0]
    index.entries["a"] = (identity, ("not", "a", "record"), True)  # the file's identity
    index.entries["b"] = "garbage"  # type: ignore[assignment]
    index.changed = True
    index.save()
    again = PlanIndex.load(built.artifacts)
    for name in "ab":
        assert again.read(name, built.artifacts / name).record == \
            read_record(built.artifacts / name).record
    assert again.used == 0 and again.changed
    again.save()
    third = PlanIndex.load(built.artifacts)
    assert third.read("a", built.artifacts / "a").record == read_record(built.artifacts / "a").record
    assert third.read("b", built.artifacts / "b").record is not None
    assert third.used == 2
