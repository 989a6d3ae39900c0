"""`generate`: call the user's function once per batch; each batch is checkpointed."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..batchexec import (
    THREAD_CAP,
    BatchError,
    BatchExecutor,
    BatchTask,
    Finished,
    ProcessBatches,
    StageCall,
    ThreadBatches,
    import_delta,
    merge_imports,
)
from ..capture import LogCapture, stage_log
from ..errors import (
    Interrupted,
    StageFailed,
    StateError,
    UserCodeFailed,
    describe,
    exc_text,
)
from ..knobs import seconds
from ..records import Output
from . import Job, check_cancel, input_map
from .loader import load_callable

if TYPE_CHECKING:
    import pyarrow as pa

    from ..datasets import UnifiedSchema


# Backoff between retries of a raising batch; the base can be lowered for tests.
RETRY_BASE_S = seconds("DD_BUILD_RETRY_BASE_S")
RETRY_CAP_S = 60.0


@dataclass
class GenerateContext:
    _stage_name: str = field(repr=False)
    batch_index: int
    offset: int
    size: int
    _num_records: int
    params: dict[str, Any]
    seed_rows: pa.Table | None
    rng: random.Random
    inputs: dict[str, Any] = field(default_factory=dict)
    limiter: Any = None  # the stage's `rate_limit:` (ratelimit.py), or None
    # What the code read that a batch's key must hold (growth.py): shared by every attempt's
    # copy of the context, so the read is seen where the batch is written.
    _reads: set[str] = field(default_factory=set, repr=False)

    @property
    def stage_name(self) -> str:
        """The stage's name. A batch whose code reads it depends on it: a stage renamed in the
        Workflowfile is not restored from a cache entry built under its old name then."""
        self._reads.add("stage_name")
        return self._stage_name

    @property
    def num_records(self) -> int:
        """The stage's rows requested. A batch whose code reads it depends on it: when it
        changes, such a batch runs again (a growth keeps only batches that did not read it)."""
        self._reads.add("num_records")
        return self._num_records

    def request(self) -> contextlib.AbstractContextManager[Any]:
        """`with ctx.request():` around each model call: waits for the stage's `rate_limit:`
        (a token and a slot shared with every stage naming it); a no-op without one."""
        return contextlib.nullcontext() if self.limiter is None else self.limiter.request()


class _Inputs(dict[str, Any]):
    """`ctx.inputs`, noting a read of the seed through it (a batch that reads the whole seed
    depends on all of it: its key holds the seed's digest, growth.py). Iterating over names
    reads nothing; a value read by name, `get`, `values()`, `items()` or a copy does."""

    def __init__(self, data: dict[str, Any], reads: set[str], seed: tuple[str, ...]) -> None:
        super().__init__(dict.items(data))  # the dict's own items: no read noted
        self._reads, self._seed = reads, seed

    def _note(self, key: Any = None) -> None:
        if self._seed and (key is None or key in self._seed):
            self._reads.add("seed")

    def __getitem__(self, key: str) -> Any:
        self._note(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._note(key)
        return super().get(key, default)

    def values(self) -> Any:
        self._note()
        return super().values()

    def items(self) -> Any:
        self._note()
        return super().items()

    def copy(self) -> dict[str, Any]:
        self._note()
        return dict(super().items())

    def __iter__(self) -> Iterator[str]:  # not the dict's own: a copy goes through []
        return super().__iter__()


def _seed_keys_of(inputs: dict[str, Any]) -> tuple[str, ...]:
    return inputs._seed if isinstance(inputs, _Inputs) else ()


def _seed_names(job: Job) -> tuple[str, ...]:
    """The names the seed has in `ctx.inputs` (input_map)."""
    ref = job.stage.seed
    if ref is None:
        return ()
    return (ref.value,) if ref.kind == "stage" else tuple({ref.written, ref.value})


def batch_seed(fingerprint: str, index: int) -> int:
    """From the stage fingerprint and the batch index: a resumed batch repeats itself."""
    digest = hashlib.sha256(f"{fingerprint}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def batch_rng(fingerprint: str, index: int) -> random.Random:
    return random.Random(batch_seed(fingerprint, index))


def execute(job: Job) -> Output:
    with LogCapture(stage_log(job.run.dir)) as capture:
        return _execute(job, capture)


def _execute(job: Job, capture: LogCapture) -> Output:
    stage = job.stage
    with capture.call():  # what the module prints on import
        fn = load_callable(job.workflow, stage.target, stage.name)
    seed = _seed_table(job)
    num_records = stage.num_records if stage.num_records is not None else _rows(seed)
    total = -(-num_records // stage.batch_size)
    keys = _Keys(job, seed, num_records)
    # never a kept batch past the last one (a seed with fewer rows now); then, for a growth,
    # none whose key changed: before `begin`, which removes the files it does not list
    job.run.drop_batches([b.index for b in job.run.sorted_batches() if b.index >= total])
    if job.run.check_keys:
        _drop_changed(job, keys)
    job.run.begin(total, num_records)
    call = StageCall(stage.name, stage.target, str(job.workflow.project_dir), stage.params,
                     input_map(job), num_records, stage.retries, RETRY_BASE_S, job.limiter,
                     _seed_names(job))
    writer = _Writer(job, _Schemas(_kept_schema(job), stage.target), total, keys)
    writer.progress()
    tasks = _tasks(job, keys, total)
    if stage.concurrency > 1 or job.cluster is not None:  # a cluster: even one at a time
        _run_concurrently(job, fn, call, capture, tasks, writer)
    else:
        for task in tasks:
            if job.cancel.is_set():
                raise Interrupted(signal.SIGINT)
            table, read = _compute(fn, call, task, capture.call, writer.note_retry,
                                   _cancellable_pause(job))
            writer.write(task.index, table, read=read)
            writer.progress()
    return job.run.batches_output()


def _cancellable_pause(job: Job) -> Callable[[float], None]:
    """A retry's backoff in the stage thread: SIGINT/SIGTERM under -j (job.cancel) ends it."""
    def pause(seconds: float) -> None:
        if job.cancel.wait(seconds):
            check_cancel(job)
    return pause


class _Keys:
    """Each batch's offset, size, seed rows and key (growth.py), made when asked for."""

    def __init__(self, job: Job, seed: pa.Table | None, num_records: int) -> None:
        self.job, self.seed, self.num_records = job, seed, num_records
        self.order = _shuffled(job.fingerprint, seed.num_rows) if seed is not None and \
            job.stage.sampling == "shuffle" else None
        self._seed_digests: dict[int, str | None] = {}
        self._whole: str | None = None  # the whole seed's digest, once a batch read it

    def task(self, index: int) -> BatchTask:
        from ..datasets import seed_indices
        from ..growth import rows_digest

        offset = index * self.job.stage.batch_size
        size = min(self.job.stage.batch_size, self.num_records - offset)
        rows = None
        if self.seed is not None:
            rows = self.seed.take(seed_indices(self.seed.num_rows, offset, size, self.order))
        self._seed_digests[index] = rows_digest(rows)
        return BatchTask(index, offset, size, rows, batch_seed(self.job.fingerprint, index))

    def key(self, index: int, reads: tuple[str, ...]) -> str:
        from ..growth import batch_key, rows_digest

        if index not in self._seed_digests:
            self.task(index)
        size = self.job.stage.batch_size
        whole = None
        if "seed" in reads:
            if self._whole is None:
                self._whole = rows_digest(self.seed) or ""
            whole = self._whole
        return batch_key(index, index * size, min(size, self.num_records - index * size),
                         self._seed_digests.pop(index),
                         self.num_records if "num_records" in reads else None, whole)


def _drop_changed(job: Job, keys: _Keys) -> None:
    """A growth: the kept batches whose key is not the one they would have now run again
    (their seed rows changed, or their code read num_records)."""
    from ..growth import verify

    kept = job.run.sorted_batches()
    now = {b.index: keys.key(b.index, b.reads) for b in kept}
    job.run.drop_batches(verify(now, kept))


def _tasks(job: Job, keys: _Keys, total: int) -> Iterator[BatchTask]:
    """The batches not kept, in index order, each with its seed rows (taken when asked for)."""
    done = job.run.batch_indices
    for index in range(total):
        if index not in done:
            yield keys.task(index)


class _Writer:
    """The stage thread's side of every batch: the schema check, the batch file and its journal
    line (stagerun.py), and the progress figures."""

    def __init__(self, job: Job, schema: _Schemas, total: int, keys: _Keys) -> None:
        self.job = job
        self.keys = keys
        self.schema = schema
        self.total = total
        self.rows = 0
        self.retries = 0
        self._lock = threading.Lock()

    def write(self, index: int, table: pa.Table, data: Any = None,
              read: tuple[str, ...] = ()) -> None:
        self.schema.check(table, index)
        self.job.run.write_batch(index, table, data, self.keys.key(index, read), read)
        self.rows += table.num_rows

    def note_retry(self, text: str) -> None:
        """A failed attempt to be retried (from any thread): one line, one retry counted."""
        with self._lock:
            self.retries += 1
        self.job.progress_note(text)

    def progress(self, in_flight: int = 0) -> None:
        self.job.progress(len(self.job.run.batches), self.total, in_flight=in_flight,
                          rows=self.rows, retries=self.retries)


# How long the stage thread waits for a batch before it looks at `job.cancel` again.
_WAIT_S = 0.05


def _run_concurrently(job: Job, fn: Any, call: StageCall, capture: LogCapture,
                      tasks: Iterator[BatchTask], writer: _Writer) -> None:
    """Up to `concurrency` batches in flight; each written as it comes back, in any order.

    A batch that fails (after its retries) stops new submissions; the batches in flight are
    awaited and written (they are paid for), then the first failure is raised. An interrupt
    (Ctrl-C, SIGTERM, `job.cancel`) writes the batches that have come back, ends the rest
    (see batchexec.py) and is raised: the builder records the stage `interrupted`."""
    executor, limit = _executor(job, fn, call, writer)
    failure: BaseException | None = None
    # Threads: the log takes fds 1 and 2 for the whole run (one capture, not one per call:
    # the calls overlap).
    threads = job.stage.executor == "thread" and job.cluster is None
    with capture.call() if threads else contextlib.nullcontext():
        try:
            while True:
                if failure is None:
                    _submit(executor, tasks, limit)
                if executor.in_flight == 0:
                    break
                finished = executor.next_finished(_WAIT_S)
                if finished is not None:
                    if failure is None and finished.error is None:
                        _submit(executor, tasks, limit)  # the next one starts before this is written
                        executor.flush()
                    error = _take(finished, writer)
                    if failure is None and error is not None:
                        executor.stop()  # the batches in flight are awaited, no other starts
                    failure = failure or error
                    writer.progress(min(executor.in_flight, job.stage.concurrency))
                if job.cancel.is_set():
                    raise Interrupted(signal.SIGINT)
        except (KeyboardInterrupt, Interrupted):
            _take_arrived(executor, writer)
            executor.shutdown(interrupt=True)
            raise
        except BaseException:
            executor.shutdown(interrupt=True)
            raise
    executor.shutdown()
    if failure is not None:
        raise failure


def _submit(executor: BatchExecutor, tasks: Iterator[BatchTask], limit: int) -> None:
    while executor.in_flight < limit and (task := next(tasks, None)) is not None:
        executor.submit(task)


def _take(finished: Finished, writer: _Writer) -> BaseException | None:
    """Write a batch that came back (its retry notes said first); its error when it failed
    or its schema clashes with the batches before it."""
    for text in finished.notes:
        writer.note_retry(text)
    if finished.imports is not None:
        merge_imports(finished.imports)  # before the batch is journaled: listed with it
    if finished.error is not None:
        assert isinstance(finished.error, BaseException)
        return finished.error
    assert finished.table is not None
    try:
        writer.write(finished.index, finished.table, finished.data, finished.reads)
    except StageFailed as exc:
        return exc
    return None


def _take_arrived(executor: BatchExecutor, writer: _Writer) -> None:
    """On an interrupt: write the batches that have come back already."""
    while (finished := executor.next_finished(0)) is not None:
        _take(finished, writer)


def _executor(job: Job, fn: Any, call: StageCall, writer: _Writer
              ) -> tuple[BatchExecutor, int]:
    """The stage's executor and how many batches it keeps in flight (capped, with a note)."""
    from ..tables import parquet_buffer

    stage = job.stage
    if job.cluster is not None:  # batches in flight on the whole cluster, more sent ahead
        log = stage_log(job.run.dir)
        return job.cluster.batches(job, call, log), job.cluster.most_sent(stage.concurrency)
    if stage.executor == "process":
        workers = min(stage.concurrency, os.cpu_count() or 1)
        if workers < stage.concurrency:
            job.progress_note(f"concurrency {stage.concurrency} with executor: process: "
                              f"{workers} worker processes (one per CPU)")
        if call.limiter is not None:
            call = dataclasses.replace(call, limiter=call.limiter.shareable())
        return ProcessBatches(call, workers, str(stage_log(job.run.dir))), workers
    workers = min(stage.concurrency, THREAD_CAP)
    if workers < stage.concurrency:
        job.progress_note(f"concurrency {stage.concurrency} is above the cap of {THREAD_CAP} "
                          f"threads: {THREAD_CAP} batches in flight")

    def compute(task: BatchTask) -> Finished:
        tries: list[str] = []

        def note(text: str) -> None:
            tries.append(text)
            writer.note_retry(text)

        try:
            table, read = _compute(fn, call, task, contextlib.nullcontext, note)
            return Finished(task.index, table, parquet_buffer(table), retries=len(tries),
                            reads=read)
        except StageFailed as exc:
            return Finished(task.index, error=exc, retries=len(tries))

    return ThreadBatches(compute, workers), workers


def worker_compute(state: dict[str, Any], task: BatchTask) -> Finished:
    """In a worker process: load the stage's callable (once), compute the batch; its retry notes,
    its failure and the imports its code ran come back with it."""
    from pathlib import Path

    from ..model import Workflow
    from ..tables import parquet_buffer

    call: StageCall = state["call"]
    notes: list[str] = []
    try:
        if "fn" not in state:
            root = Path(call.project_dir)
            shim = Workflow("worker", root / "Workflowfile", root, "", {})
            state["fn"] = load_callable(shim, call.target, call.stage)
        table, read = _compute(state["fn"], call, task, contextlib.nullcontext, notes.append)
        finished = Finished(task.index, table, parquet_buffer(table), retries=len(notes),
                            reads=read)
    except StageFailed as exc:
        finished = Finished(task.index, error=BatchError.of(exc), retries=len(notes))
    finished.notes = notes
    finished.imports = import_delta(state)
    return finished


def compute_batch(fn: Any, call: StageCall, task: BatchTask, note: Callable[[str], None]
                  ) -> tuple[pa.Table, tuple[str, ...]]:
    """One batch where nothing can cancel its retries' backoff (a Dask worker): its table and
    what its code read that the batch's key holds."""
    return _compute(fn, call, task, contextlib.nullcontext, note)


def _compute(fn: Any, call: StageCall, task: BatchTask,
             capture: Callable[[], contextlib.AbstractContextManager[Any]],
             note: Callable[[str], None], pause: Callable[[float], None] = time.sleep
             ) -> tuple[pa.Table, tuple[str, ...]]:
    """One batch, in whichever thread or process computes it: the call (with its retries) and
    its value as a table, and what its code read that the batch's key or the stage's name
    decides (ctx.num_records, the whole seed, ctx.stage_name). StageFailed when it fails."""
    from ..tables import to_table

    reads: set[str] = set()
    ctx = GenerateContext(call.stage, task.index, task.offset, task.size, call.num_records,
                          call.params, task.seed_rows, random.Random(task.rng_seed),
                          _Inputs(call.inputs, reads, call.seed_keys), call.limiter, reads)
    value = _call(fn, ctx, call, task.rng_seed, capture, note, pause)
    return to_table(value, f"{call.target} (batch {task.index})"), tuple(sorted(ctx._reads))


def _fresh(ctx: GenerateContext, rng_seed: int) -> GenerateContext:
    """One attempt's own copy of the batch's context, which code never sees itself: a deep copy
    of the params (a call that mutates them changes no other batch or attempt) and the rng in
    its seeded state (a retry gives the rows an untroubled run gives)."""
    return GenerateContext(ctx._stage_name, ctx.batch_index, ctx.offset, ctx.size,
                           ctx._num_records, copy.deepcopy(ctx.params), ctx.seed_rows,
                           random.Random(rng_seed), _Inputs(ctx.inputs, ctx._reads,
                                                            _seed_keys_of(ctx.inputs)),
                           ctx.limiter, ctx._reads)


def _call(fn: Any, ctx: GenerateContext, call: StageCall, rng_seed: int,
          capture: Callable[[], contextlib.AbstractContextManager[Any]],
          note: Callable[[str], None], pause: Callable[[float], None] = time.sleep) -> Any:
    """Call once per attempt, each with a fresh copy of `ctx` inside `capture()`; between
    attempts wait with exponential backoff and jitter. Each failed attempt but the last is one
    line through `note`."""
    stage, retries = call.stage, call.retries
    for attempt in range(retries + 1):
        with capture():
            try:
                return fn(_fresh(ctx, rng_seed))
            except SystemExit as exc:  # sys.exit() in user code: fail the stage, never retry
                raise UserCodeFailed(f"batch {ctx.batch_index} called sys.exit({exc.code!r})",
                                     stage=stage, hint="raise an exception instead") from exc
            except Exception as exc:  # the user's code raised: retry, or fail; batches stay
                if attempt == retries:
                    suffix = f" (after {retries + 1} attempts)" if retries else ""
                    raise UserCodeFailed(f"batch {ctx.batch_index} raised "
                                         f"{type(exc).__name__}: {exc_text(exc)}{suffix}",
                                         stage=stage) from exc
                failed = exc
        delay = min(RETRY_CAP_S, call.retry_base_s * 2**attempt) * random.uniform(0.5, 1.0)
        note(_retry_note(call, ctx.batch_index, attempt, failed, delay))
        pause(delay)  # ends early on cancel where the caller can cancel
    raise AssertionError("unreachable")


def _retry_note(call: StageCall, index: int, attempt: int, exc: Exception, delay: float) -> str:
    """`batch 1, attempt 1 of 3 failed: ValueError: … (at stages/x.py:7 in make); retrying in
    1.0s`: one line (the traceback of the last attempt goes to the log if it fails too)."""
    from pathlib import Path

    from ..usertrace import where

    found = where(exc, Path(call.project_dir))
    at = f" (at {found.at})" if found is not None else ""
    return (f"batch {index}, attempt {attempt + 1} of {call.retries + 1} "
            f"failed: {describe(exc)}{at}; retrying in {delay:.1f}s")


def _kept_schema(job: Job) -> UnifiedSchema:
    """The unified schema of the batches a resume keeps (their parquet footers)."""
    import pyarrow.parquet as pq

    from ..datasets import UnifiedSchema, UnreadableData

    schema = UnifiedSchema()
    for b in job.run.sorted_batches():
        path = job.workflow.artifacts_root / b.file
        try:
            found = pq.read_schema(path)
        except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
            raise UnreadableData(path, str(exc), job.stage.name) from exc
        schema.add(found, f"batch {b.index}")
    return schema


class _Schemas:
    """The unified schema of the stage's batches so far, which each new batch must unify with
    (by the rule every reader of the stage's output uses): the stage's output must read as one
    table. A batch whose schema is the last one added changes nothing and is not merged again
    (its columns already unify, and merging a type with itself gives itself)."""

    def __init__(self, unified: UnifiedSchema, target: str) -> None:
        self.unified = unified
        self.target = target
        self.last: pa.Schema | None = None

    def check(self, table: pa.Table, index: int) -> None:
        """StageFailed, before the batch is written, when its columns cannot be unified with
        the earlier batches'. The earlier batches stay."""
        if self.last is not None and table.schema.equals(self.last, check_metadata=True):
            return
        clash = self.unified.add(table.schema, f"batch {index}")
        if clash is not None:
            name, before, first, now = clash
            raise StageFailed(
                f"{self.target} (batch {index}) returned column '{name}' as {now}, but it is "
                f"{before} in {first}: a stage's batches must read as one table",
                hint="return one type per column in every batch (int64 with double is fine: "
                     "it reads as double); cast or convert the values")
        self.last = table.schema


def _rows(seed: pa.Table | None) -> int:
    assert seed is not None, "validation guarantees num_records or a seed"
    return seed.num_rows


def _shuffled(fingerprint: str, n: int) -> list[int]:
    order = list(range(n))
    batch_rng(fingerprint, -1).shuffle(order)
    return order


def _seed_table(job: Job) -> pa.Table | None:
    from ..datasets import read_seed_files, read_stage_table

    ref = job.stage.seed
    if ref is None:
        return None
    if ref.kind == "stage":
        table = read_stage_table(job.workflow, job.upstream[ref.value])
        if table is None:
            raise StageFailed(f"seed stage '{ref.value}' has no tabular output (its first "
                              "output is not a .parquet, .csv or .jsonl file or a folder of "
                              ".parquet files)", stage=job.stage.name, key="seed")
    else:
        try:
            table = read_seed_files(job.workflow.project_dir, ref.value)
        except StateError as exc:  # unreadable, or files whose schemas disagree
            raise StageFailed(f"seed '{ref.written}': {exc.message}", stage=job.stage.name,
                              key="seed", hint=exc.hint) from exc
    if table.num_rows == 0:
        raise StageFailed(f"seed '{ref.written}' has no rows", stage=job.stage.name, key="seed")
    return table
