"""`generate`: call the user's function once per batch; each batch is checkpointed."""

from __future__ import annotations

import copy
import hashlib
import os
import random
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..capture import LogCapture, stage_log
from ..errors import StageFailed, StateError, UserCodeFailed, describe, exc_text
from ..records import Output
from . import Job, input_map
from .loader import load_callable

if TYPE_CHECKING:
    import pyarrow as pa

    from ..datasets import UnifiedSchema


# Backoff between retries of a raising batch; the base can be lowered for tests.
RETRY_BASE_S = float(os.environ.get("DD_BUILD_RETRY_BASE_S", "1.0"))
RETRY_CAP_S = 60.0


@dataclass
class GenerateContext:
    stage_name: str
    batch_index: int
    offset: int
    size: int
    num_records: int
    params: dict[str, Any]
    seed_rows: pa.Table | None
    rng: random.Random
    inputs: dict[str, Any] = field(default_factory=dict)
    limiter: Any = None  # the stage's `rate_limit:` (ratelimit.py), or None

    def request(self) -> AbstractContextManager[Any]:
        """`with ctx.request():` around each model call: waits for the stage's `rate_limit:`
        (a token and a slot shared with every stage naming it); a no-op without one."""
        return nullcontext() if self.limiter is None else self.limiter.request()


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
    from ..datasets import seed_indices
    from ..tables import to_table

    stage = job.stage
    with capture.call():  # what the module prints on import
        fn = load_callable(job.workflow, stage.target, stage.name)
    seed = _seed_table(job)
    num_records = stage.num_records if stage.num_records is not None else _rows(seed)
    total = -(-num_records // stage.batch_size)
    order = _shuffled(job.fingerprint, seed.num_rows) if seed is not None and \
        stage.sampling == "shuffle" else None
    job.run.begin(total, num_records)
    inputs = input_map(job)
    done = job.run.batch_indices
    schema = _Schemas(_kept_schema(job), stage.target)
    job.progress(len(done), total)
    for index in range(total):
        if index in done:
            continue
        offset = index * stage.batch_size
        size = min(stage.batch_size, num_records - offset)
        rows = None
        if seed is not None:
            rows = seed.take(seed_indices(seed.num_rows, offset, size, order))
        rng_seed = batch_seed(job.fingerprint, index)
        ctx = GenerateContext(stage.name, index, offset, size, num_records, stage.params,
                              rows, random.Random(rng_seed), inputs, job.limiter)
        value = _call(fn, ctx, job, capture, rng_seed)
        table = to_table(value, f"{stage.target} (batch {index})")
        schema.check(table, index)
        job.run.write_batch(index, table)
        job.progress(len(job.run.batches), total)
    return job.run.batches_output()


def _fresh(ctx: GenerateContext, rng_seed: int) -> GenerateContext:
    """One attempt's own copy of the batch's context, which code never sees itself: a deep copy
    of the params (a call that mutates them changes no other batch or attempt) and the rng in
    its seeded state (a retry gives the rows an untroubled run gives)."""
    return GenerateContext(ctx.stage_name, ctx.batch_index, ctx.offset, ctx.size,
                           ctx.num_records, copy.deepcopy(ctx.params), ctx.seed_rows,
                           random.Random(rng_seed), dict(ctx.inputs), ctx.limiter)


def _call(fn: Any, ctx: GenerateContext, job: Job, capture: LogCapture, rng_seed: int) -> Any:
    """Call once per attempt, each with a fresh copy of `ctx`; between attempts wait with
    exponential backoff and jitter. Each failed attempt but the last is one line through
    `progress_note`."""
    stage, retries = job.stage.name, job.stage.retries
    for attempt in range(retries + 1):
        with capture.call():
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
        delay = min(RETRY_CAP_S, RETRY_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)
        _retry_note(job, ctx.batch_index, attempt, failed, delay)
        time.sleep(delay)
    raise AssertionError("unreachable")


def _retry_note(job: Job, index: int, attempt: int, exc: Exception, delay: float) -> None:
    """`batch 1, attempt 1 of 3 failed: ValueError: … (at stages/x.py:7 in make); retrying in
    1.0s`: one line (the traceback of the last attempt goes to the log if it fails too)."""
    from ..usertrace import where

    found = where(exc, job.workflow.project_dir)
    at = f" (at {found.at})" if found is not None else ""
    job.progress_note(f"batch {index}, attempt {attempt + 1} of {job.stage.retries + 1} "
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
