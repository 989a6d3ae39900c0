"""Checkpointing without three fsyncs a batch (issue 14): what holds after a kill and after a
power loss (stagerun.py's docstring), and that outputs and records are the bytes they were.

SIGKILLs at every step of the new write path are the crash harness's (tests/crash_support.py:
its WINDOWS, and random kills with batches synced after each batch or once a second); here:
the order of syncs, journal lines and records, seen through os.fsync, and what a power loss
can leave (a journaled batch file that never reached the disk).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import crash_support as cs
import pyarrow.parquet as pq
import pytest
from conftest import Project
from hypothesis import given
from hypothesis import strategies as st

import buildtool
from buildtool import fsutil, stagerun
from buildtool.fingerprint import digest_bytes
from buildtool.records import (
    UNSYNCED_MTIME_NS,
    BatchEntry,
    JournalWriter,
    StageRecord,
    batch_line,
    read_record,
    record_text,
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")

TEN = """
workflow: demo
stages:
  a:
    generate: code/stages.py:rows
    num_records: 10
    batch_size: 1
"""


class Events:
    """What the build did, in order: ("fsync", path), ("syncfs", path), ("line", dict),
    ("record", StageRecord)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def index(self, kind: str, value: Any, after: int = -1) -> int:
        return next(i for i, (k, v) in enumerate(self.seen)
                    if i > after and k == kind and v == value)

    def of(self, kind: str) -> Iterator[tuple[int, Any]]:
        return ((i, v) for i, (k, v) in enumerate(self.seen) if k == kind)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Events:
    seen = Events()
    real_fsync = os.fsync
    real_write = JournalWriter._write
    real_record = stagerun.write_record

    def fsync(fd: int) -> None:
        seen.seen.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def write(self: JournalWriter, text: str) -> None:  # one write(2): one line or several
        seen.seen.extend(("line", json.loads(line)) for line in text.split("\n"))
        real_write(self, text)

    def record(stage_dir: Path, rec: StageRecord) -> None:
        seen.seen.append(("record", rec))
        real_record(stage_dir, rec)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(JournalWriter, "_write", write)
    monkeypatch.setattr(stagerun, "write_record", record)
    monkeypatch.setattr(fsutil, "_syncfs", lambda: None)  # an fsync per file: seen above
    return seen


@pytest.mark.parametrize("interval", [0.0, 1000.0], ids=["each-batch", "grouped"])
def test_a_batch_is_durable_before_a_line_or_a_record_trusts_its_stats(
        project: Project, events: Events, monkeypatch: pytest.MonkeyPatch,
        interval: float) -> None:
    monkeypatch.setattr(stagerun, "SYNC_INTERVAL_S", interval)
    project.write("Workflowfile", TEN)
    assert buildtool.build(project.root).ok

    batches = project.artifacts / "a" / "batches"
    lines = [(i, line) for i, line in events.of("line") if "index" in line]
    first = {line["index"]: i for i, line in reversed(lines)}
    assert sorted(first) == list(range(10))
    for at in first.values():  # the first line of each batch: its stats not to be trusted
        assert events.seen[at][1]["mtime_ns"] == UNSYNCED_MTIME_NS
    journal = next(p for _, p in events.of("fsync") if p.name.startswith("journal-"))
    relisted = [(i, line) for i, line in lines if line["mtime_ns"] != UNSYNCED_MTIME_NS]
    assert sorted(line["index"] for _, line in relisted) == list(range(10))
    for at, line in relisted:
        synced = events.index("fsync", project.artifacts / line["file"])
        assert synced < events.index("fsync", batches, after=synced) < at
        listed = first[line["index"]]
        assert listed < events.index("fsync", journal, after=listed) < at
        assert listed < events.index("fsync", journal.parent, after=listed) < at  # its entry
    if interval == 0.0:  # synced (and listed again) before the next batch is listed
        assert all(at < first[line["index"] + 1] for at, line in relisted if line["index"] < 9)
    records = list(events.of("record"))
    assert records[-1][1].status == "completed" and len(records[-1][1].batches) == 10
    for at, rec in records:
        for b in rec.batches:
            assert events.index("fsync", project.artifacts / b.file) < at


def killed_after_four_unsynced_batches(project: Project) -> None:
    """Stage `a` of TEN killed (SIGKILL) after journaling batches 0-3, none of them synced."""
    project.write("Workflowfile", TEN)
    proc = project.start("-q", HANG_AT="a:4", DD_BUILD_SYNC_INTERVAL_S="1000")
    project.wait_for("code/a-reached-4", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (project.root / "code" / "a-reached-4").unlink()


def test_a_resume_makes_the_batches_it_keeps_durable_before_its_record_lists_them(
        project: Project, events: Events) -> None:
    """A kill leaves batches journaled but never synced (in the page cache, maybe not on the
    disk): the resume checks them by content and syncs them before listing them."""
    killed_after_four_unsynced_batches(project)
    project.clear_calls()

    assert buildtool.build(project.root).ok

    assert project.calls() == [f"a {i}" for i in range(4, 10)]  # 0-3 kept
    at, running = next(events.of("record"))
    assert running.status == "running" and [b.index for b in running.batches] == [0, 1, 2, 3]
    for b in running.batches:
        assert b.mtime_ns != UNSYNCED_MTIME_NS
        assert events.index("fsync", project.artifacts / b.file) < at


@pytest.mark.parametrize("damage", ["same size", "empty", "missing"])
def test_a_journaled_batch_lost_in_a_power_loss_is_made_again(project: Project,
                                                               damage: str) -> None:
    """What a power loss can leave of a batch journaled but not yet synced: its file torn
    (even with its size and mtime as journaled), empty, or gone. It is never used: the build
    makes it again, keeps the others, and ends as an uninterrupted build does."""
    killed_after_four_unsynced_batches(project)
    torn = project.artifacts / "a" / "batches" / "batch-000002.parquet"
    before = torn.stat()
    if damage == "missing":
        torn.unlink()
    else:
        torn.write_bytes(b"\0" * (before.st_size if damage == "same size" else 0))
        os.utime(torn, ns=(before.st_atime_ns, before.st_mtime_ns))
    project.clear_calls()

    result = project.run("--json")

    assert result.code == 0, result.stderr
    assert sorted(project.calls()) == sorted(f"a {i}" for i in (2, 4, 5, 6, 7, 8, 9))
    reference = Project(project.root.parent / "reference")
    reference.write("code/stages.py", (project.root / "code/stages.py").read_text())
    reference.write("Workflowfile", TEN)
    assert reference.run().code == 0
    assert project.table("a").equals(reference.table("a"))


def test_syncfs_makes_a_stages_batches_durable_in_one_call(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    if fsutil._syncfs() is None:
        pytest.skip("no syncfs here: each file is fsynced")
    calls: list[str] = []
    fsynced: list[str] = []
    real_syncfs, real_fsync = fsutil._syncfs(), os.fsync

    def syncfs(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_syncfs(fd)

    def fsync(fd: int) -> None:
        fsynced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(fsutil, "_syncfs", lambda: syncfs)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(stagerun, "SYNC_INTERVAL_S", 1000.0)
    project.write("Workflowfile", TEN)
    assert buildtool.build(project.root).ok
    assert calls == [str(project.artifacts / "a" / "batches")]  # the final sync, one fs
    assert not [p for p in fsynced if "/batches/" in p]  # no batch file fsynced one by one


# ---------------------------------------------------------------- a sync cut by a kill


def test_a_kill_in_the_sync_after_each_batch_resumes_to_the_uninterrupted_result(
        tmp_path: Path) -> None:
    """Batches synced after every batch (interval 0): kills inside those syncs, before and
    after the batches are made durable."""
    fuzzer = cs.Fuzzer(tmp_path / "fuzz", cs.Config(window_sync=0.0))
    fuzzer.prepare()
    targets = ["seeds:batch-write>batch-sync>make-durable#3",  # batch 2 journaled, not synced
               "seeds:batch-write>batch-sync>journal-append#2",  # batch 4 synced, not relisted
               "enriched:batch-write>batch-sync>make-durable#1"]
    landings = fuzzer.kill_sequence(0, targets)
    assert [(x.stage, x.label) for x in landings] == [cs.landing_of(t, "") for t in targets]
    assert fuzzer.figures.problems == []
    assert fuzzer.figures.violations == 0, "\n".join(fuzzer.figures.lines())
    calls = [c[1:] for c in cs.read_calls(fuzzer.workdir / "round-0000")]
    # The batch in flight at each kill was journaled: none is made again.
    assert [what for stage, what in calls if stage == "seeds"] == [str(i) for i in range(10)]


# ---------------------------------------------------------------- the bytes written


def test_batch_files_are_the_bytes_pyarrow_writes_and_their_digests(project: Project) -> None:
    project.write("Workflowfile", TEN)
    assert project.run().code == 0
    record = read_record(project.artifacts / "a").record
    assert record is not None and len(record.batches) == 10
    for b in record.batches:
        path = project.artifacts / b.file
        data = path.read_bytes()
        assert (b.size, b.mtime_ns, b.digest) == (len(data), path.stat().st_mtime_ns,
                                                  digest_bytes(data))
        sink = Path(project.root / "again.parquet")
        pq.write_table(pq.read_table(path), sink)  # what dd-build has always written
        assert sink.read_bytes() == data
    assert (project.artifacts / "a" / "stage.json").read_text() == record_text(record)


_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
_entries = st.builds(BatchEntry, st.integers(0, 10**7), _names, st.integers(0, 10**9),
                     st.integers(0, 10**12), st.integers(-10**19, 10**19), _names)


@given(_entries)
def test_a_journal_line_is_the_json_of_the_entry(entry: BatchEntry) -> None:
    assert batch_line(entry) == json.dumps(entry.to_json())
    assert BatchEntry.from_json(json.loads(batch_line(entry))) == entry


@given(st.lists(_entries, max_size=5), st.dictionaries(_names, _names, max_size=3))
def test_a_record_reads_back_as_itself(batches: list[BatchEntry], spec: dict[str, str]) -> None:
    record = StageRecord(stage="s", status="completed", kind="generate", spec=spec,
                         spec_fingerprint="f", code={}, file_inputs={}, stage_inputs={},
                         run_id="r", batches=tuple(batches), error="\0batches\0")
    text = record_text(record)
    assert json.loads(text) == record.to_json()
    if not batches:  # what json's own indenting gives, as before
        assert text == json.dumps(record.to_json(), indent=1, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- batches of several schemas


def test_batches_whose_columns_unify_pass_and_a_clash_names_the_batches(project: Project
                                                                         ) -> None:
    project.write("code/mixed.py", """
        def make(ctx):
            value = {0: 1, 1: 1.5, 2: 2, 3: 3}[ctx.batch_index]
            if ctx.batch_index == 3 and ctx.params.get("clash"):
                value = "three"
            return [{"v": value}]
        """)
    project.write("Workflowfile", """
        workflow: demo
        stages:
          m:
            generate: code/mixed.py:make
            num_records: 4
            batch_size: 1
        """)
    assert project.run().code == 0
    output = buildtool.read_output(project.root, "m")
    assert output.column("v").to_pylist() == [1.0, 1.5, 2.0, 3.0]
    project.write("Workflowfile", (project.root / "Workflowfile").read_text()
                  + "    params: {clash: true}\n")
    result = project.run()
    assert result.code == 1
    assert "(batch 3) returned column 'v' as string, but it is double in batch 0" in \
        result.stderr
