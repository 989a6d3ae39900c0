"""Writes one stage's state while it runs: the record, batch files, the journal.

A batch file is durable before the journal lists it; the journal is appended one line per
batch (never a rewrite of the whole record), and the full record is written once at the end.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from .facts import StageFacts
from .fingerprint import digest_bytes, digest_strings
from .fsutil import atomic_write_bytes, make_dirs_durably
from .model import Stage, Workflow
from .records import (
    BatchEntry,
    Discovered,
    Output,
    RecordStatus,
    StageRecord,
    journal_append,
    journal_discovered,
    remove_leftovers,
    write_record,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from .codedeps import CodeTracker
    from .report import StageWarning
    from .steps import StepName

BATCHES = "batches"


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
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.journal = f"journal-{self.run_id}.jsonl"
        self.batches: dict[int, BatchEntry] = self._kept(facts, keep)
        # A resume may reuse the boundary steps (processed, callback, exports) it had.
        self.previous_steps = dict(facts.record.steps) if facts.record and keep else {}
        self.resuming = bool(keep)
        self.step: StepName | None = None  # the later step running now, if any
        self.steps: dict[str, Output] = {}  # the later steps' traces, as they finish
        self.begun = False
        self._had_record = facts.record is not None
        self.batches_run = 0
        self.warnings: list[StageWarning] = []  # said after the stage's result
        self.listed: dict[str, Discovered] = {}  # discovered modules the record or journal lists
        self.record = StageRecord(
            stage=stage.name, status="running", kind=stage.kind, spec=facts.spec,
            spec_fingerprint=facts.fingerprint, code=dict(facts.code),
            file_inputs=dict(facts.file_inputs), stage_inputs=dict(stage_inputs),
            run_id=self.run_id, journal=self.journal, started_at=time.time(),
        )

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
        write_record(self.dir, self.record)

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
        write_record(self.dir, self.record)
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

    def write_batch(self, index: int, table: pa.Table) -> BatchEntry:
        from .tables import parquet_bytes

        data = parquet_bytes(table)
        rel = batch_file(self.stage.name, index)
        path = self.workflow.artifacts_root / rel
        atomic_write_bytes(path, data)
        st = os.stat(path)
        entry = BatchEntry(index, rel, table.num_rows, st.st_size, st.st_mtime_ns, digest_bytes(data))
        self._journal_discovered()  # before the batch that may have used them is listed
        journal_append(self.dir, self.journal, entry)
        self.batches[index] = entry
        self.batches_run += 1
        return entry

    def _journal_discovered(self) -> None:
        """Modules imported since the record or the journal listed them (a lazy import in
        the code, the first batch to call it): durable, so a killed run's resume keeps them."""
        if self.code_deps is None:
            return
        new = {k: v for k, v in self.code_deps.discovered().items() if self.listed.get(k) != v}
        if new:
            journal_discovered(self.dir, self.journal, new)
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
        write_record(self.dir, self.record)
        remove_leftovers(str(self.dir))
        return self.record
