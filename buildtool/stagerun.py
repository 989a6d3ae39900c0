"""Writes one stage's state while it runs: the record, batch files, the journal.

The journal is appended one line per batch (never a rewrite of the whole record), and the
full record is written once at the end.

After a kill (SIGKILL at any instant) every batch the journal lists is whole and kept: a batch
file is renamed into place, complete, before its line is written, with one write(2). A kill
loses at most the batch in flight.

After a power loss (or an OS crash), what reached the disk is what was made durable. Batch
files and journal lines are not fsynced one by one: every SYNC_INTERVAL_S (1 s) of the stage's
work, before every record write, and at the end, `sync` makes the batches written since the
last sync durable at once (syncfs, or an fsync of each file and folder) and lists them again,
with their real mtime. Until then a batch's line gives it the mtime UNSYNCED_MTIME_NS, which no
file has, so a reader never trusts its stats: it keeps the batch only when the file's content
digest is the one listed, and makes it again otherwise. So a power loss costs at most the
last second of batch work (and the batch in flight), and never a batch that is silently torn.
A record (running or final) lists only batches made durable before it was written.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .facts import StageFacts
from .fingerprint import digest_bytes, digest_strings
from .fsutil import make_dirs_durably, make_durable, write_file_unsynced
from .knobs import seconds
from .model import Stage, Workflow
from .records import (
    READS_NOTED,
    UNSYNCED_MTIME_NS,
    BatchEntry,
    Discovered,
    JournalWriter,
    Output,
    RecordStatus,
    StageRecord,
    remove_leftovers,
    write_record,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from .codedeps import CodeTracker
    from .report import StageWarning
    from .steps import StepName

BATCHES = "batches"
# Seconds of a stage's work between two syncs of its batches (a power loss costs at most
# that much); lowered by tests, e.g. to 0 to sync after every batch.
SYNC_INTERVAL_S = seconds("DD_BUILD_SYNC_INTERVAL_S")


def batch_file(stage: str, index: int) -> str:
    return f"{stage}/{BATCHES}/batch-{index:06d}.parquet"


class StageRun:
    def __init__(self, workflow: Workflow, stage: Stage, facts: StageFacts,
                 stage_inputs: Mapping[str, str], keep: tuple[int, ...],
                 code_deps: CodeTracker | None = None) -> None:
        self.workflow = workflow
        self.code_deps = code_deps  # the project modules its code imports, as they execute
        self.stage = stage
        self.dir = workflow.stage_dir(stage.name)
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(4).hex()}"
        self.journal = f"journal-{self.run_id}.jsonl"
        self._journal = JournalWriter(self.dir / self.journal)  # opened by its first line
        self.batches: dict[int, BatchEntry] = self._kept(facts, keep)
        # Files not known to be durable: batches written since the last sync, and kept ones
        # that were checked by content (a resume after a kill: maybe not on disk yet).
        self._unsynced_files = [str(self.workflow.artifacts_root / b.file)
                                for b in self.batches.values() if b.file in facts.outputs_now]
        self._unsynced: list[BatchEntry] = []  # written since the last sync
        self._synced_at = time.monotonic()
        self._batch_dir: str | None = None  # made (durably) by the first batch written
        # A resume may reuse the boundary steps (processed, callback, exports) it had.
        self.previous_steps = dict(facts.record.steps) if facts.record and keep else {}
        self.resuming = bool(keep)
        self.step: StepName | None = None  # the later step running now, if any
        self.steps: dict[str, Output] = {}  # the later steps' traces, as they finish
        self.begun = False
        self._had_record = facts.record is not None
        self.batches_run = 0
        # The plan keeps batches because only num_records or the seed's rows changed: each
        # kept batch's key is compared with the key it has now before it is kept (growth.py).
        self.check_keys = False
        self.warnings: list[StageWarning] = []  # said after the stage's result
        self.listed: dict[str, Discovered] = {}  # discovered modules the record or journal lists
        self.record = StageRecord(
            stage=stage.name, status="running", kind=stage.kind, spec=facts.spec,
            spec_fingerprint=facts.fingerprint, code=dict(facts.code),
            file_inputs=dict(facts.file_inputs), stage_inputs=dict(stage_inputs),
            run_id=self.run_id, journal=self.journal, started_at=time.time(),
        )
        # Reads of the stage's name are noted in every batch and step this run makes; a run
        # that keeps batches of a record that did not note them does not know them all.
        if facts.record is None or not keep or facts.record.extra.get(READS_NOTED):
            self.record.extra[READS_NOTED] = True

    @staticmethod
    def _kept(facts: StageFacts, keep: tuple[int, ...]) -> dict[int, BatchEntry]:
        record = facts.record
        if record is None or not keep:
            return {}
        wanted = set(keep)
        kept = {}
        for b in record.batches:
            if b.index in wanted:
                now = facts.outputs_now.get(b.file)  # stats moved, content the same
                kept[b.index] = b._replace(size=now.size, mtime_ns=now.mtime_ns) if now else b
        return kept

    @property
    def untouched(self) -> bool:
        """Nothing of this attempt reached the disk (it failed loading its code or reading its
        seed) and an earlier record stands: ending now leaves that record, and the batches it
        lists, in force. Reverting the change that failed then costs nothing."""
        return not self.begun and self._had_record

    def keep_main_step(self, previous: StageRecord) -> None:
        """Only later steps run: the main step stays as recorded (nothing is written yet, so a
        failure to load the callback leaves the previous record in force)."""
        self.record = replace(self.record, batches_total=previous.batches_total,
                              num_records=previous.num_records, batches=self.sorted_batches())

    def touch(self) -> None:
        """A later step is about to write its files: from here on a failure or kill must not
        leave the previous record in force (it lists the files being rewritten)."""
        if not self.begun:
            self.begin_later_step(self.step or "")

    def begin_later_step(self, step: str) -> None:
        """Only later steps run (the main step is kept): before the first of them touches its
        files, a `running` record naming it replaces the old one, so a kill never leaves a
        completed record listing files that were being rewritten; the next build resumes
        from that step."""
        self.begun = True
        self.record = replace(self.record, status="running", steps=dict(self.steps),
                              journal=None, extra={**self.record.extra, "stopped_in": step},
                              discovered=self.code_deps.discovered() if self.code_deps else {})
        self._write_record()

    def drop_batches(self, indices: list[int]) -> None:
        """Kept batches that run again after all (before `begin`: their files are removed
        with the other unlisted ones)."""
        for index in indices:
            entry = self.batches.pop(index, None)
            if entry is not None:
                full = str(self.workflow.artifacts_root / entry.file)
                self._unsynced_files = [f for f in self._unsynced_files if f != full]

    @property
    def batch_indices(self) -> set[int]:
        return set(self.batches)

    def begin(self, batches_total: int | None, num_records: int | None) -> None:
        """Replace the old record with a `running` one, then clear what it does not list."""
        make_dirs_durably(self.dir)
        self.begun = True
        self.listed = self.code_deps.discovered() if self.code_deps else {}
        self.record = replace(self.record, batches_total=batches_total, num_records=num_records,
                              batches=self.sorted_batches(), discovered=self.listed)
        self._write_record()
        remove_leftovers(str(self.dir))  # old journals; temp files of a killed record write
        self._clear_unlisted_batches()
        # An override lasts until the stage itself reruns; a fresh run also drops old steps.
        for folder in ("override",) if self.resuming else ("override", "processed", "callback"):
            shutil.rmtree(self.dir / folder, ignore_errors=True)

    def _clear_unlisted_batches(self) -> None:
        folder = self.dir / BATCHES
        remove_leftovers(str(folder), journals=False)
        if not folder.is_dir():
            return
        listed = {os.path.basename(b.file) for b in self.batches.values()}
        for entry in os.scandir(folder):
            if entry.name not in listed:
                if entry.is_dir():
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)

    def write_batch(self, index: int, table: pa.Table, data: Any = None, key: str = "",
                    reads: tuple[str, ...] = ()) -> BatchEntry:
        """`data`: the table as parquet, when it was encoded already (in a batch's thread or
        worker process, in parallel). `key`: the batch's identity (growth.py)."""
        from .tables import parquet_buffer

        if data is None:
            data = parquet_buffer(table)
        rel = batch_file(self.stage.name, index)
        folder, name = self._batches_folder(), os.path.basename(rel)
        st = write_file_unsynced(folder, name, data)
        digest = digest_bytes(data)
        entry = BatchEntry(index, rel, table.num_rows, st.st_size, st.st_mtime_ns, digest, key,
                           reads)
        self._journal_discovered()  # before the batch that may have used them is listed
        self._journal.batch(entry._replace(mtime_ns=UNSYNCED_MTIME_NS))
        self._unsynced.append(entry)
        self._unsynced_files.append(os.path.join(folder, name))
        self.batches[index] = entry
        self.batches_run += 1
        if time.monotonic() - self._synced_at >= SYNC_INTERVAL_S:
            self.sync()
        return entry

    def _batches_folder(self) -> str:
        if self._batch_dir is None:
            folder = self.dir / BATCHES
            make_dirs_durably(folder)
            self._batch_dir = str(folder)
        return self._batch_dir

    def sync(self) -> None:
        """Make the batches written (and kept unsynced) so far durable, with the journal lines
        that list them; then list each again with its real mtime (that line needs no fsync: were
        it lost, the first line still lists the batch, checked by content)."""
        if self._unsynced_files:
            journal = [str(self.dir / self.journal)] if self._unsynced else []
            make_durable(self._unsynced_files + journal, [str(self.dir / BATCHES), str(self.dir)])
        if self._unsynced:
            self._journal.batches(self._unsynced)
        self._unsynced.clear()
        self._unsynced_files.clear()
        self._synced_at = time.monotonic()

    def _write_record(self) -> None:
        """A record lists only durable batches: the pending ones are synced first."""
        self.sync()
        write_record(self.dir, self.record)

    def _journal_discovered(self) -> None:
        """Modules imported since the record or the journal listed them (a lazy import in
        the code, the first batch to call it), listed before that batch: a killed run's resume
        keeps them with it."""
        if self.code_deps is None:
            return
        new = {k: v for k, v in self.code_deps.discovered().items() if self.listed.get(k) != v}
        if new:
            self._journal.discovered(new)
            self.listed.update(new)

    def sorted_batches(self) -> tuple[BatchEntry, ...]:
        return tuple(self.batches[i] for i in sorted(self.batches))

    def batches_output(self) -> Output:
        batches = self.sorted_batches()
        return Output("batches", sum(b.rows for b in batches), digest_strings([b.digest for b in batches]))

    def finish(self, status: RecordStatus, output: Output | None = None, error: str | None = None,
               steps: dict[str, Output] | None = None) -> StageRecord:
        """Write the final record of this attempt (completed, failed or interrupted). A
        failed or interrupted attempt names the later step it stopped in: the next build
        keeps the steps before it."""
        extra = {k: v for k, v in self.record.extra.items() if k != "stopped_in"}
        if self.step and status in ("failed", "interrupted"):
            extra["stopped_in"] = self.step
        self.record = replace(
            self.record, status=status, output=output, error=error,
            steps=self.steps if steps is None else steps, extra=extra,
            batches=self.sorted_batches(),
            journal=None, finished_at=time.time(), batches_run=self.batches_run,
            discovered=self.code_deps.close() if self.code_deps else {},
        )
        try:
            self._write_record()
        finally:
            self._journal.close()
        remove_leftovers(str(self.dir))
        return self.record
