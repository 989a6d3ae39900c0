"""Stage records: round trip, tolerant reading, the journal, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from buildtool.fingerprint import FORMAT_VERSION, FileState
from buildtool.fsutil import atomic_write_bytes, atomic_write_json, temp_name
from buildtool.records import (
    RECORD_NAME,
    BatchEntry,
    Output,
    StageRecord,
    journal_append,
    read_record,
    write_record,
)


def entry(index: int) -> BatchEntry:
    return BatchEntry(index, f"s/batches/batch-{index:06d}.parquet", 5, 1234 + index,
                      1_700_000_000_123_456_789 + index, f"sha256:b{index}")


def full_record(**changes: Any) -> StageRecord:
    values: dict[str, Any] = dict(
        stage="s", status="completed", kind="generate",
        spec={"kind": "generate", "params": {"tag": "x", "nested": {"a": [1, 2]}}, "seed": None},
        spec_fingerprint="sha256:fp",
        code={"code/stages.py": FileState("code/stages.py", 10, 11, "sha256:c")},
        file_inputs={"prompts/p.txt": FileState("prompts/p.txt", 3, 4, "sha256:p")},
        stage_inputs={"a": "sha256:a-out"}, run_id="20240101T000000-abcd1234",
        batches=(entry(0), entry(1)), batches_total=2, num_records=10,
        output=Output("batches", 10, "sha256:out"), started_at=1.5, finished_at=3.0,
        batches_run=2, error=None, journal=None, extra={"note": "é"},
    )
    values.update(changes)
    return StageRecord(**values)


def write_raw(stage_dir: Path, data: bytes | str | Any) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        data = json.dumps(data).encode()
    (stage_dir / RECORD_NAME).write_bytes(data)


def test_round_trip(tmp_path: Path) -> None:
    rec = full_record()
    write_record(tmp_path / "s", rec)
    read = read_record(tmp_path / "s")
    assert read.problem is None
    assert read.record == rec
    assert read.record.duration_s == 1.5


def test_round_trip_running_and_files_output(tmp_path: Path) -> None:
    out = Output("files", None, "sha256:o", (FileState("out/r.md", 1, 2, "sha256:r"),))
    rec = full_record(kind="run", status="failed", batches=(), batches_total=None,
                      output=out, error="exit 1")
    write_record(tmp_path / "s", rec)
    assert read_record(tmp_path / "s").record == rec


def test_no_record_is_not_a_problem(tmp_path: Path) -> None:
    read = read_record(tmp_path / "never-built")
    assert read.record is None and read.problem is None


def _without(key: str) -> dict[str, Any]:
    data = full_record().to_json()
    del data[key]
    return data


def _with(**changes: Any) -> dict[str, Any]:
    return {**full_record().to_json(), **changes}


BAD_RECORDS = [
    pytest.param(b"\x00\xffgarbage{", "record_unreadable", id="garbage-bytes"),
    pytest.param("not json at all", "record_unreadable", id="garbage-text"),
    pytest.param(json.dumps(full_record().to_json())[:200], "record_unreadable", id="truncated"),
    pytest.param("", "record_unreadable", id="empty-file"),
    pytest.param([1, 2, 3], "record_unreadable", id="a-list"),
    pytest.param("null", "record_unreadable", id="null"),
    pytest.param("42", "record_unreadable", id="a-number"),
    pytest.param(_without("format"), "record_unreadable", id="missing-format"),
    pytest.param(_with(format="1"), "record_unreadable", id="format-not-an-int"),
    pytest.param(_with(format=99), "format_changed", id="format-99"),
    pytest.param(_with(format=0), "format_changed", id="format-0"),
    pytest.param(_without("spec"), "record_unreadable", id="missing-spec"),
    pytest.param(_without("inputs"), "record_unreadable", id="missing-inputs"),
    pytest.param(_without("stage"), "record_unreadable", id="missing-stage"),
    pytest.param(_without("status"), "record_unreadable", id="missing-status"),
    pytest.param(_without("run_id"), "record_unreadable", id="missing-run_id"),
    pytest.param(_with(code=[]), "record_unreadable", id="code-wrong-type"),
    pytest.param(_with(inputs={"files": {}, "stages": []}), "record_unreadable",
                 id="inputs-stages-wrong-type"),
    pytest.param(_with(batches=[{"index": 0}]), "record_unreadable", id="batch-missing-keys"),
    pytest.param(_with(batches=[7]), "record_unreadable", id="batch-not-a-dict"),
    pytest.param(_with(output="x"), "record_unreadable", id="output-not-a-dict"),
    pytest.param(_with(spec="abc"), "record_unreadable", id="spec-not-a-dict"),
    pytest.param(_with(status="exploded"), "record_unreadable", id="unknown-status"),
    pytest.param("[" * 100_000, "record_unreadable", id="deeply-nested-json"),
]


@pytest.mark.parametrize(("content", "code"), BAD_RECORDS)
def test_bad_record_is_a_problem_never_an_exception(tmp_path: Path, content: Any,
                                                   code: str) -> None:
    write_raw(tmp_path / "s", content)
    read = read_record(tmp_path / "s")
    assert read.record is None
    assert read.problem is not None and read.problem[0] == code, read.problem
    assert RECORD_NAME in read.problem[1]


def test_record_that_is_a_folder_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "s" / RECORD_NAME).mkdir(parents=True)
    read = read_record(tmp_path / "s")
    assert read.record is None and read.problem is not None
    assert read.problem[0] == "record_unreadable"


def _running(tmp_path: Path, journal: Any = "journal-r1.jsonl") -> Path:
    stage_dir = tmp_path / "s"
    rec = full_record(status="running", output=None, batches=(entry(0),), batches_total=5,
                      journal=journal, finished_at=None)
    write_record(stage_dir, rec)
    return stage_dir


def test_running_record_merges_journal_up_to_torn_line(tmp_path: Path) -> None:
    stage_dir = _running(tmp_path)
    for i in (1, 2):
        journal_append(stage_dir, "journal-r1.jsonl", entry(i))
    torn = json.dumps(entry(3).to_json())[:25]  # a crash mid-write
    with open(stage_dir / "journal-r1.jsonl", "a") as fh:
        fh.write(torn)
    read = read_record(stage_dir)
    assert read.problem is None and read.record is not None
    assert read.record.batches == (entry(0), entry(1), entry(2))


def test_journal_stops_at_first_garbled_line(tmp_path: Path) -> None:
    stage_dir = _running(tmp_path)
    lines = [json.dumps(entry(1).to_json()), "{garbled", json.dumps(entry(2).to_json())]
    (stage_dir / "journal-r1.jsonl").write_text("\n".join(lines) + "\n")
    assert [b.index for b in read_record(stage_dir).record.batches] == [0, 1]


def test_journal_entry_replaces_record_entry_of_same_index(tmp_path: Path) -> None:
    stage_dir = _running(tmp_path)
    newer = BatchEntry(0, entry(0).file, 5, 999, 1, "sha256:newer")
    journal_append(stage_dir, "journal-r1.jsonl", newer)
    assert read_record(stage_dir).record.batches == (newer,)


@pytest.mark.parametrize("journal", [
    pytest.param("journal-gone.jsonl", id="missing"),
    pytest.param(".", id="a-folder"),
    pytest.param(5, id="not-a-string"),
])
def test_unusable_journal_keeps_record_batches(tmp_path: Path, journal: Any) -> None:
    stage_dir = tmp_path / "s"
    data = _running(tmp_path).joinpath(RECORD_NAME)
    raw = json.loads(data.read_text())
    raw["journal"] = journal
    data.write_text(json.dumps(raw))
    read = read_record(stage_dir)
    assert read.problem is None and read.record is not None
    assert read.record.batches == (entry(0),)


def test_completed_record_ignores_its_journal_field(tmp_path: Path) -> None:
    stage_dir = tmp_path / "s"
    write_record(stage_dir, full_record(journal="journal-old.jsonl"))
    journal_append(stage_dir, "journal-old.jsonl", entry(7))
    assert [b.index for b in read_record(stage_dir).record.batches] == [0, 1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp." in p.name)


def test_atomic_write_bytes_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(path, b"first")
    assert path.read_bytes() == b"first"
    atomic_write_bytes(path, b"second, longer")
    assert path.read_bytes() == b"second, longer"
    assert _leftovers(path.parent) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.bin"]


def test_atomic_write_json_and_record_leave_no_temp(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "w.json", {"a": "é"})
    assert json.loads((tmp_path / "w.json").read_text(encoding="utf-8")) == {"a": "é"}
    write_record(tmp_path / "s", full_record())
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "s") == []


def test_atomic_write_failure_keeps_old_content_and_no_temp(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def boom(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_temp_names_unique_and_beside_target(tmp_path: Path) -> None:
    target = tmp_path / "stage.json"
    names = {temp_name(target) for _ in range(1000)}
    assert len(names) == 1000
    for name in names:
        assert name.parent == tmp_path
        assert name.name.startswith(".stage.json.tmp.")
        assert str(os.getpid()) in name.name


def test_record_format_is_written(tmp_path: Path) -> None:
    write_record(tmp_path / "s", full_record())
    assert json.loads((tmp_path / "s" / RECORD_NAME).read_text())["format"] == FORMAT_VERSION
