"""Where a generate stage's batch calls run when several are in flight (`concurrency: N`).

One small interface, `BatchExecutor`: submit a batch (`BatchTask`), take each `Finished` batch
back in completion order (its table, or its error), ask how many are in flight, shut down (at
the end, or at once on an interrupt). The stage thread (kinds/generate.py) is the one writer:
executors only compute, it checks each table's schema, writes the batch file and journals it.
So a Dask executor (issue 12) is one more class here: the planner, the records and the writer
do not change. Everything a process (or a remote worker) needs is picklable: the stage's shared
part (`StageCall`, sent once per worker) and each `BatchTask`; a failure comes back as text
(`BatchError`) and is raised as the StageFailed a thread's failure would be.

- `ThreadBatches`: daemon threads, one per batch in flight (at most THREAD_CAP). Each call runs
  in a copy of the submitting thread's contextvars. On an interrupt the calls in flight are
  abandoned, not awaited: a model call may take minutes, and Ctrl-C must end the build now;
  their results are dropped, as a SIGKILL would drop them. Daemon threads, because the
  interpreter joins a ThreadPoolExecutor's threads at exit (a hung call would hang the exit).
- `ProcessBatches`: a ProcessPoolExecutor of min(concurrency, CPUs) spawned workers (spawn,
  not fork: the parent has threads, and forking a threaded process can deadlock the child).
  Each worker loads the stage's callable itself with dd-build's loader, writes its stdout and
  stderr to the stage's log, ignores SIGINT (the parent decides), ends itself when the parent
  is gone (a SIGKILLed build leaves no worker behind), and reports the imports its code ran
  (the import graph's new edges) with each batch, so a module imported lazily in a worker is
  part of the stage's record like one imported in the build process. On an interrupt the
  workers are terminated.
"""

from __future__ import annotations

import contextvars
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .errors import StageFailed, UserCodeFailed

if TYPE_CHECKING:
    import pyarrow as pa

    from .fingerprint import FileState
    from .usertrace import Where

THREAD_CAP = 256  # batches in flight in threads, per stage


@dataclass(frozen=True)
class StageCall:
    """What every batch call of a stage shares: sent once to each worker process."""

    stage: str
    target: str
    project_dir: str
    params: dict[str, Any]
    inputs: dict[str, Any]
    num_records: int
    retries: int
    retry_base_s: float
    limiter: Any = None  # the stage's rate limiter (process-shareable for a worker), or None
    seed_keys: tuple[str, ...] = ()  # the names of the seed in `inputs` (growth.py)


@dataclass(frozen=True)
class BatchTask:
    """One batch call: its rows depend on these and on the StageCall only."""

    index: int
    offset: int
    size: int
    seed_rows: pa.Table | None
    rng_seed: int


@dataclass(frozen=True)
class BatchError:
    """A batch's failure as it crosses a process boundary: the StageFailed's text, and for a
    failure of the user's code where it raised and its traceback (as the log keeps it)."""

    message: str
    hint: str | None
    user: bool
    where: Where | None = None
    trace: str | None = None

    @classmethod
    def of(cls, exc: StageFailed, project: Any = None) -> BatchError:
        """`project`: the project folder (default: the worker process's StageCall's)."""
        from .usertrace import user_traceback, where

        cause = exc.__cause__ if isinstance(exc, UserCodeFailed) else None
        return cls(exc.message, exc.hint, cause is not None,
                   where(cause, project or _project_dir()) if cause is not None else None,
                   user_traceback(cause) if cause is not None else None)

    def exception(self, stage: str) -> StageFailed:
        from .usertrace import Remote

        if not self.user:
            return StageFailed(self.message, stage=stage, hint=self.hint)
        exc = UserCodeFailed(self.message, stage=stage, hint=self.hint)
        exc.__cause__ = Remote(self.where, self.trace or "")
        return exc


# Edges (importer, imported) and node states (node, key, state, module) of the import graph.
ImportDelta = tuple[list[tuple[str, str]], list[tuple[str, str, "FileState", "str | None"]]]


@dataclass
class Finished:
    """A batch that came back: its table, or its error (a StageFailed to raise, or an error
    of dd-build's own, raised as it is)."""

    index: int
    table: pa.Table | None = None
    data: Any = None  # the table as parquet (a buffer), encoded where it was computed
    error: BaseException | BatchError | None = None
    retries: int = 0  # failed attempts before the last one
    notes: list[str] = field(default_factory=list)  # retry notes not said yet (a process's)
    imports: ImportDelta | None = None  # what a worker process's code imported
    reads: tuple[str, ...] = ()  # what its code read that its key holds (growth.py)


class BatchExecutor(Protocol):
    def submit(self, task: BatchTask) -> None: ...

    def flush(self) -> None:
        """Start the batches submitted so far now (an executor may hold them back to send
        several together)."""

    def next_finished(self, timeout: float) -> Finished | None:
        """The next batch to come back, in completion order; None after `timeout` seconds."""

    def stop(self) -> None:
        """No more batches will be submitted (one failed): batches submitted that have not
        started may be dropped (counted out of in_flight, never given back)."""

    @property
    def in_flight(self) -> int:
        """Submitted and not yet taken back by next_finished."""

    def shutdown(self, *, interrupt: bool = False) -> None:
        """No more batches. `interrupt`: drop what is queued and end what is in flight now
        (threads are abandoned, processes terminated) instead of letting it finish."""


class _Arrivals:
    """What both executors share: the batches that came back, in completion order, and how
    many were submitted and not yet taken."""

    def __init__(self) -> None:
        self._done: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self._pending = 0

    def flush(self) -> None:
        """Nothing: batches start when submitted."""

    def stop(self) -> None:
        """Nothing: no more are submitted than can start at once."""

    def next_finished(self, timeout: float) -> Finished | None:
        try:
            finished = self._done.get(timeout=timeout)
        except queue.Empty:
            return None
        self._pending -= 1
        return finished

    @property
    def in_flight(self) -> int:
        return self._pending


class ThreadBatches(_Arrivals):
    """Batches computed by `compute(task)` in daemon threads (one per batch in flight)."""

    def __init__(self, compute: Callable[[BatchTask], Finished], workers: int) -> None:
        super().__init__()
        self._compute = compute
        self._workers = workers
        self._todo: queue.SimpleQueue[tuple[contextvars.Context, BatchTask] | None] = \
            queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stopped = False

    def submit(self, task: BatchTask) -> None:
        self._todo.put((contextvars.copy_context(), task))
        self._pending += 1
        if len(self._threads) < min(self._workers, self._pending):
            thread = threading.Thread(target=self._work, daemon=True,
                                      name=f"dd-build batch {len(self._threads) + 1}")
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        while (item := self._todo.get()) is not None and not self._stopped:
            context, task = item
            try:
                finished = context.run(self._compute, task)
            except BaseException as exc:  # noqa: BLE001 - carried to the stage thread, raised there
                finished = Finished(task.index, error=exc)
            self._done.put(finished)

    def shutdown(self, *, interrupt: bool = False) -> None:
        self._stopped = self._stopped or interrupt
        for _ in self._threads:
            self._todo.put(None)


class ProcessBatches(_Arrivals):
    """Batches computed in spawned worker processes (see the module's docstring)."""

    def __init__(self, call: StageCall, workers: int, log: str) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        super().__init__()
        self._stage = call.stage
        self._pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_start, initargs=(call, log, os.getpid()))

    def submit(self, task: BatchTask) -> None:
        from concurrent.futures import BrokenExecutor

        self._pending += 1
        try:
            future = self._pool.submit(_worker_batch, task)
        except BrokenExecutor as exc:  # a worker died before the batch it held came back
            self._done.put(self._lost(task.index, exc))
            return
        future.add_done_callback(lambda f: self._landed(task.index, f))

    def _landed(self, index: int, future: Any) -> None:
        if future.cancelled():
            self._done.put(Finished(index, error=StageFailed("cancelled", stage=self._stage)))
            return
        exc = future.exception()
        if exc is None:
            self._done.put(future.result())
            return
        self._done.put(self._lost(index, exc))

    def _lost(self, index: int, exc: BaseException) -> Finished:
        """A worker that ends abruptly breaks the pool: every batch in flight fails with it
        (and any submitted after), and which one the dead worker held is not known."""
        return Finished(index, error=StageFailed(
            f"batch {index} did not come back: a worker process ended abruptly while it was "
            f"in flight ({type(exc).__name__})", stage=self._stage,
            hint="a worker was killed, ran out of memory or crashed in native code; build "
                 "again: the finished batches are kept. From a script calling "
                 "buildtool.build(): put the call under `if __name__ == \"__main__\":` (each "
                 "worker imports the script), and run it from a file, not from stdin"))

    def next_finished(self, timeout: float) -> Finished | None:
        """A worker's failure comes back as text (BatchError): made an exception again here."""
        finished = super().next_finished(timeout)
        if finished is not None and isinstance(finished.error, BatchError):
            finished.error = finished.error.exception(self._stage)
        return finished

    def shutdown(self, *, interrupt: bool = False) -> None:
        if not interrupt:
            self._pool.shutdown(wait=True)
            return
        # ProcessPoolExecutor has no public way to end running workers before Python 3.14
        # (terminate_workers); its `_processes` is where they are.
        processes = dict(getattr(self._pool, "_processes", None) or {})
        for process in processes.values():
            if process.is_alive():
                process.terminate()
        self._pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------- in a worker process

_WORKER: dict[str, Any] = {}  # the worker's StageCall, callable and what it reported


def _worker_start(call: StageCall, log: str, parent: int) -> None:
    """A worker's start: SIGINT is the parent's to act on; stdout and stderr go to the
    stage's log; the worker ends when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _WORKER["call"] = call
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


def _project_dir() -> Any:
    from pathlib import Path

    call = _WORKER.get("call")
    return Path(call.project_dir) if call is not None else Path.cwd()


def _worker_batch(task: BatchTask) -> Finished:
    import sys

    from .kinds.generate import worker_compute

    try:
        return worker_compute(_WORKER, task)
    finally:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()


def import_delta(state: dict[str, Any]) -> ImportDelta | None:
    """The import graph's edges and node states this worker has not reported yet."""
    from .codedeps import GRAPH

    if state.get("graph_version") == GRAPH.version:
        return None
    sent_edges: set[tuple[str, str]] = state.setdefault("sent_edges", set())
    sent_nodes: set[str] = state.setdefault("sent_nodes", set())
    edges = [(a, b) for a, targets in list(GRAPH.edges.items()) for b in list(targets)
             if (a, b) not in sent_edges]
    nodes = [(node, *GRAPH.states[node]) for node in list(GRAPH.states) if node not in sent_nodes]
    sent_edges.update(edges)
    sent_nodes.update(n[0] for n in nodes)
    state["graph_version"] = GRAPH.version
    return (edges, nodes) if edges or nodes else None


def merge_imports(delta: ImportDelta) -> None:
    """A worker's imports into this process's import graph, which the stage's tracker reads."""
    from .codedeps import GRAPH

    edges, nodes = delta
    for node, key, state, module in nodes:
        GRAPH.set_state(node, key, state, module)
    for importer, imported in edges:
        GRAPH.add_edge(importer, imported)
