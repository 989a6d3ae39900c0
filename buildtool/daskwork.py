"""What runs where a stage meets Dask (daskexec.py says how it fits): the client's side of a
stage's futures (`DaskBatches`, the watch on a lost scheduler), the cluster-wide rate limit
(`ClusterLimiter`), and the tasks workers run (`run_batch`, `run_transform`), which need
dd-build installed on the workers, not the project. Imported only when a stage runs on a
cluster."""

from __future__ import annotations

import contextlib
import io
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from .batchexec import BatchError, BatchTask, Finished, StageCall, _Arrivals
from .errors import StageFailed, UserCodeFailed

if TYPE_CHECKING:
    from .batchexec import ImportDelta
    from .codebundle import CodeBundle
    from .daskexec import Cluster
    from .daskslots import Placement, Slot
    from .owncode import Identity



def said(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Watch:
    """Whether the client has lost its scheduler for longer than $DD_BUILD_DASK_LOST_AFTER_S
    (checked when the build started: knobs.check)."""

    def __init__(self, client: Any) -> None:
        from .daskexec import LOST_AFTER
        from .knobs import seconds

        self.client = client
        self.since: float | None = None
        self.after = seconds(LOST_AFTER)

    def lost(self) -> bool:
        if self.client.status in ("running", "newly-created"):
            self.since = None
            return False
        now = time.monotonic()
        self.since = self.since or now
        return now - self.since > self.after

    def check(self, stage: str) -> None:
        if self.lost():
            raise StageFailed(LOST, stage=stage, hint=LOST_HINT)


LOST = "lost the Dask scheduler: it stopped or cannot be reached"
LOST_HINT = ("the finished batches are kept: build again once the scheduler is back, on "
              "another cluster (--scheduler), or here (--executor local)")


def failure(future: Any, stage: str, what: str, exc: BaseException | None = None
            ) -> StageFailed | None:
    """A future that did not finish: why, as a StageFailed (None when it finished). `exc`:
    what it raised, when known already."""
    status = future.status
    if status == "finished":
        return None
    if status == "cancelled":
        return StageFailed(f"{what} did not come back: Dask cancelled it ({LOST}, or it "
                           "restarted)", stage=stage, hint=LOST_HINT)
    if exc is None:
        try:
            exc = future.exception(timeout=5)
        except Exception as lost:  # noqa: BLE001 - the connection itself failed: said
            exc = lost
    name = type(exc).__name__
    if name == "KilledWorker":
        return StageFailed(
            f"{what} did not come back: the Dask workers that ran it died ({said(exc)})",
            stage=stage,
            hint="a worker was killed, ran out of memory or crashed in native code (Dask "
                 "tried it again elsewhere); build again: the finished batches are kept")
    return not_back(what, exc, stage)


def not_back(what: str, exc: BaseException, stage: str) -> StageFailed:
    """Dask raised `exc` instead of the result: a connection's error is a lost scheduler."""
    if isinstance(exc, (OSError, TimeoutError)):  # distributed's CommClosedError is an OSError
        return StageFailed(f"{what} did not come back: {LOST} ({said(exc)})", stage=stage,
                           hint=LOST_HINT)
    return StageFailed(f"{what} did not come back from Dask: {said(exc)}", stage=stage,
                       hint=LOST_HINT)


def worker_threads(client: Any) -> dict[str, int] | None:
    """Each worker's threads (by daskslots.worker_key), as the scheduler says now (None: it
    cannot be asked). Asked of the scheduler itself: `Client.scheduler_info()` gives back the
    client's cache, which its own periodic refresh overwrites with no workers in it (a read
    just after that refresh would see every worker gone)."""
    from .daskslots import worker_key

    try:
        workers = client.sync(client.scheduler.identity)["workers"]
    except Exception:  # noqa: BLE001 - a scheduler gone: Watch says so where it matters
        return None
    return {worker_key(address, str(info.get("local_directory", ""))):
            int(info.get("nthreads", 1)) for address, info in workers.items()}


def append_output(log: Path, text: str) -> None:
    if text:
        with open(log, "a", encoding="utf-8", errors="replace") as f:
            f.write(text)


class DaskBatches(_Arrivals):
    """A generate stage's batches as Dask futures (see daskexec.py). Dask's `as_completed`
    fetches each result in the client's event loop as soon as its batch is done; a thread of
    ours hands them over to `next_finished`. Twice the stage's concurrency is sent, each batch
    to a worker with room in its share of the concurrency, where it computes only in one of
    that worker's slots (daskslots.py); another thread of ours follows the workers the scheduler
    has and moves a gone one's share to the others.

    Batches submitted are sent at once when no result waits to be taken (`flush`), else when
    `next_finished` would wait, all of them as one graph: while batches that came back are being
    written, the ones that take their places gather, and the scheduler gets one message for
    them (its cost per message, not per task, dominated the per-batch overhead of one submit
    per batch)."""

    def __init__(self, client: Any, payload: Any, stage: str, log: Path, cluster: Cluster,
                 note: Callable[[str], None], placement: Placement) -> None:
        from distributed import as_completed

        super().__init__()
        self._client = client
        self._payload = payload
        self._stage = stage
        self._log = log
        self._cluster = cluster
        self._note = note
        self._futures: dict[int, Any] = {}
        self._unsent: list[BatchTask] = []  # submitted, to be sent with the next ones
        self._index: dict[Any, int] = {}  # future key -> batch index
        self._landed: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
        self._arrived = as_completed([], loop=client.loop, with_results=True,
                                     raise_errors=False)
        self._more = threading.Event()
        self._closed = False
        self._watch = Watch(client)
        self._swept = time.monotonic()
        self._stale: set[Any] = set()  # keys of futures done at the last sweep, not landed
        self._tag = uuid.uuid4().hex[:8]
        self._placement = placement
        self._placed: dict[Any, str | None] = {}  # future key -> the worker it was sent to
        self._sent: dict[Any, BatchTask] = {}  # future key -> its batch, until taken
        self._sends = 0  # a batch sent again (MOVED) gets a key of its own
        self._stopped = False  # no more batches (one failed)
        self._over = threading.Event()  # set by shutdown
        self._asked = time.monotonic()  # when the workers were last looked at (_workers_gone)
        self._told = False  # that it has none
        threading.Thread(target=self._collect, name=f"dd-build dask {stage}",
                         daemon=True).start()
        threading.Thread(target=self._follow_workers, name=f"dd-build dask {stage} workers",
                         daemon=True).start()

    def _collect(self) -> None:
        """as_completed's iteration ends whenever nothing is in flight: it starts again once
        a batch is submitted."""
        while not self._closed:
            for done in self._arrived.batches():
                for future, result in done:
                    self._land(future, result)
            self._more.wait(0.2)
            self._more.clear()

    def _land(self, future: Any, result: Any) -> None:
        """A future as_completed gave back with its result (fetched in the client's event loop
        as soon as the scheduler said it was done; fetches close together go as one request).
        A failed one lands with no result (its error is asked for when it is taken); one whose
        result was lost meanwhile is waited for again. A result that could not be fetched at
        all (its task raised in the event loop) never comes here: `_track_again` tracks its
        future again."""
        if future.status in ("error", "cancelled"):
            self._landed.put((future, None))
        elif future.status == "finished":
            self._landed.put((future, result))
        else:  # its result was lost since: Dask computes it again
            self._arrived.add(future)

    def submit(self, task: BatchTask) -> None:
        self._pending += 1
        self._unsent.append(task)

    def flush(self) -> None:
        """Send the batches submitted now, unless results are waiting to be taken: their
        replacements are sent together with these."""
        if self._unsent and self._landed.empty():
            self._send()

    def _send(self) -> None:
        """The batches submitted and not sent yet, each to the worker `Placement` says (one
        message to the scheduler: the client gathers what it sends within a few ms)."""
        from .daskslots import Slot, address_of, key_of

        tasks, self._unsent = self._unsent, []
        self._sends += 1
        shares = self._placement.shares()
        by_worker: dict[str | None, list[BatchTask]] = {}
        for task in tasks:
            by_worker.setdefault(self._placement.place(), []).append(task)
        for worker, group in by_worker.items():
            keys = [key_of(self._stage, f"{task.index}.{self._sends}", self._tag)
                    for task in group]
            slots = [Slot(self._tag, key, shares) for key in keys]
            futures = self._client.map(
                run_batch, [self._payload] * len(group), group, slots, key=keys, pure=False,
                workers=None if worker is None else [address_of(worker)],
                allow_other_workers=True)
            for task, future in zip(group, futures, strict=True):
                self._futures[task.index] = future
                self._index[future.key] = task.index
                self._placed[future.key] = worker
                self._sent[future.key] = task
            self._arrived.update(futures)
        self._more.set()

    def _follow_workers(self) -> None:
        """Every 2 s, the workers the scheduler has: when a share changed (a worker left or
        came), the workers are told (daskslots.raise_shares)."""
        from .daskslots import raise_shares

        while not self._over.wait(2.0):
            threads = worker_threads(self._client)
            if threads is not None and self._placement.workers_now(threads):
                self._tell_workers(raise_shares, self._tag, self._placement.shares())

    def _tell_workers(self, function: Callable[..., None], *args: Any) -> None:
        """Run `function` on every worker, from a thread of its own (a worker that does not
        answer must not hold up the stage)."""
        def run() -> None:
            with contextlib.suppress(Exception):  # a scheduler gone: nothing to tell
                self._client.run(function, *args, on_error="ignore")

        threading.Thread(target=run, name="dd-build dask tell", daemon=True).start()

    def _next_landed(self, timeout: float) -> tuple[Any, Any] | None:
        """What landed next: at once while batches wait to be sent, else once they are sent
        (a call that does not wait, as on an interrupt, sends none)."""
        if self._unsent:
            try:
                return self._landed.get_nowait()
            except queue.Empty:
                if timeout <= 0:
                    return None
                self._send()
        try:
            return self._landed.get(timeout=timeout)
        except queue.Empty:
            return None

    def next_finished(self, timeout: float) -> Finished | None:
        """Within `timeout` even while batches come back unrun and are sent again (the caller
        checks for Ctrl-C between calls); with 0, everything landed already is looked at."""
        deadline = time.monotonic() + timeout
        while True:
            landed = self._next_landed(max(0.0, deadline - time.monotonic()))
            if landed is None:
                if self._pending and self._watch.lost():
                    self._fail_all()
                elif self._pending:
                    self._track_again()
                    self._workers_gone()
                return None
            finished = self._finished(*landed)
            if finished is not None:
                return finished
            if timeout > 0 and time.monotonic() >= deadline:
                return None

    def _finished(self, future: Any, result: Any) -> Finished | None:
        """A batch that landed, as next_finished gives it back; None for one passed over (failed
        already by _fail_all, or not run because the stage stopped first)."""
        if future is None:  # failed by _fail_all
            self._pending -= 1
            index, error = result
            return Finished(index, error=error)
        index = self._index.pop(future.key, None)
        if index is None:  # failed already (_fail_all)
            return None
        self._pending -= 1
        self._futures.pop(index, None)
        self._placement.back(self._placed.pop(future.key, None))
        task = self._sent.pop(future.key, None)
        if result is None:  # it failed: why, from Dask
            error = failure(future, self._stage, f"batch {index}") or StageFailed(
                f"batch {index} did not come back from Dask", stage=self._stage, hint=LOST_HINT)
            return Finished(index, error=error)
        finished, output = result
        if finished is None:
            return self._unrun(index, task, output)
        append_output(self._log, output)
        if finished.imports is not None:
            finished.imports = self._cluster.here(finished.imports)
        if isinstance(finished.error, BatchError):
            finished.error = finished.error.exception(self._stage)
        return finished

    def _unrun(self, index: int, task: BatchTask | None, output: str) -> Finished | None:
        """A batch that came back without running (daskslots.take): passed over once the stage
        stopped; sent again, where a share is, when its worker had none or when the batch that
        stopped the stage there has not come back yet (its failure is what the stage says)."""
        from .daskslots import MOVED, STOPPED

        if self._stopped:
            return None
        if output in (MOVED, STOPPED) and task is not None:
            self._pending += 1
            self._unsent.append(task)
            return None
        return Finished(index, error=StageFailed(
            f"batch {index} was not run: Dask released it on its worker (the scheduler "
            "restarted?)", stage=self._stage, hint=LOST_HINT))

    def stop(self) -> None:
        """No more batches (one failed): the ones submitted and not sent are dropped, and the
        ones sent that wait for a slot are not run (they come back as such, passed over)."""
        from .daskslots import stop

        self._stopped = True
        self._pending -= len(self._unsent)
        self._unsent = []
        self._tell_workers(stop, self._tag)

    def _track_again(self) -> None:
        """A future done for a while that never landed (fetching its result failed: a worker
        holding it died meanwhile) is tracked again; a second landing is dropped."""
        now = time.monotonic()
        if now - self._swept < 2.0:
            return
        self._swept = now
        done = {f.key for f in self._futures.values() if f.done()}
        for future in self._futures.values():
            if future.key in done and future.key in self._stale:
                self._arrived.add(future)
                self._more.set()
        self._stale = done

    def _workers_gone(self) -> None:
        """Batches in flight and no worker left: said once (looked at as often as
        $DD_BUILD_DASK_LOST_AFTER_S, in the workers `_follow_workers` last had from the
        scheduler), as Dask waits for workers to come back rather than fail."""
        now = time.monotonic()
        if now - self._asked < self._watch.after:
            return
        self._asked = now
        workers = self._placement.workers()
        if workers == 0 and not self._told:
            self._note(f"dask: the scheduler has no workers: {self._pending} batches sent wait "
                       "for one (Ctrl-C stops the build; finished batches are kept)")
        self._told = workers == 0

    def _fail_all(self) -> None:
        """The scheduler is gone: every batch in flight fails (none will come back), and the
        ones not sent yet."""
        for task in self._unsent:
            self._landed.put((None, (task.index, StageFailed(LOST, stage=self._stage,
                                                             hint=LOST_HINT))))
        self._unsent = []
        for index, future in list(self._futures.items()):
            if self._index.pop(future.key, None) is not None:  # not landed meanwhile
                self._landed.put((None, (index, StageFailed(LOST, stage=self._stage,
                                                            hint=LOST_HINT))))
        self._futures.clear()

    def shutdown(self, *, interrupt: bool = False) -> None:
        """On an interrupt the futures in flight are cancelled (a batch running on a worker
        ends when its call returns; its result is dropped)."""
        self._closed = True
        self._over.set()
        self._more.set()
        futures = list(self._futures.values()) + [self._payload]
        self._futures.clear()
        if interrupt:
            with contextlib.suppress(Exception):  # a scheduler gone: nothing to cancel
                self._client.cancel(futures, reason="dd-build interrupted")
        for future in futures:
            future.release()


# ---------------------------------------------------------------- rate limits


class ClusterLimiter:
    """A `rate_limit:` shared by every worker of the cluster (picklable: the semaphores bind
    to the worker they are unpickled on)."""

    def __init__(self, name: str, rate: float | None, cap: Any, token: Any) -> None:
        self.name = name
        self.rate = rate
        self.cap = cap
        self.token = token

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        if self.cap is not None:
            self.cap.acquire()
        try:
            if self.token is not None:
                assert self.rate is not None
                self.token.acquire()
                timer = threading.Timer(1.0 / self.rate, self.token.release)
                timer.daemon = True
                timer.start()
            yield
        finally:
            if self.cap is not None:
                self.cap.release()

    def shareable(self) -> ClusterLimiter:
        return self


# ---------------------------------------------------------------- on a worker


def dask_setup(worker: Any) -> None:
    """Preloaded by the workers of a LocalCluster dd-build starts (daskexec._open): Ctrl-C at
    the terminal reaches them too, and would print each one's traceback; dd-build, which got
    it as well, stops them."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)

@dataclass(frozen=True)
class Payload:
    """What every task of a stage attempt shares: the project's code, the build it is for
    (which import edges it has been told), and the call."""

    bundle: CodeBundle
    build: str
    call: StageCall


# What the payload's task holds: the client's dd-build (owncode.Identity, plain strings,
# checked before the blob is unpickled: a worker of another dd-build may not unpickle it as
# this one would) and the pickled Payload.
Shipped = tuple["Identity", bytes]

_LOADED: dict[bytes, Payload] = {}  # the worker's unpickled payloads (by blob)
_LOADED_LOCK = threading.Lock()


def keep_blob(shipped: Shipped) -> Shipped:
    return shipped


def _loaded(blob: bytes) -> Payload:
    with _LOADED_LOCK:
        if blob not in _LOADED:
            import cloudpickle

            if len(_LOADED) > 16:  # stages of builds long gone
                _LOADED.clear()
            _LOADED[blob] = cloudpickle.loads(blob)
        return _LOADED[blob]


# What a user is told to do when a worker runs another dd-build than the client's.
# A worker keeps the dd-build it started with (its identity is computed once, its modules
# imported once): after an install, only a restarted worker runs the new one.
SAME_DD_BUILD = ("install the same dd-build on every worker as on this machine (`pip install "
                 "'dd-build[dask]'` of the same version, or of the same checkout) and restart "
                 "the workers, then build again (finished batches are kept); or build with "
                 "--executor local")


def other_dd_build(shipped: Any) -> BatchError | None:
    """None when this worker runs the client's dd-build (the same version and the same
    sources, owncode.py); else why the stage is not run here, as its failure. Said by every
    task of the stage that lands here; the stage says its first failure only."""
    from .owncode import identity

    here = identity()
    sent = shipped[0] if isinstance(shipped, tuple) and len(shipped) == 2 else None
    if _is_identity(sent) and sent[:2] == here[:2]:
        return None
    if not _is_identity(sent):  # a client of a dd-build that sends no identity
        detail = f"{here[0]} there, an older one here"
    elif sent[0] != here[0]:
        detail = f"{here[0]} there, {sent[0]} here"
    else:
        detail = (f"version {here[0]} on both, but other files (an edited copy or another "
                  f"checkout: {here[2]} there, {sent[2]} here)")
    return BatchError(f"the Dask worker {_worker_name()} runs another dd-build than this build: "
                      f"{detail}; what it computes could differ from a local build's with no "
                      "fingerprint showing it, so the stage does not run there",
                      SAME_DD_BUILD, user=False)


def _is_identity(value: Any) -> TypeGuard[Identity]:
    return isinstance(value, tuple) and len(value) == 3 and \
        all(isinstance(part, str) for part in value)


def run_batch(shipped: Shipped, task: BatchTask, slot: Slot | None = None
              ) -> tuple[Finished | None, str]:
    """A Dask task: one batch, with its retries, in one of its worker's slots of the stage
    (daskslots.py); what its code printed comes back with it, and what it imported
    (kinds/bundleload.py). Not run on a worker of another dd-build than the client's
    (`other_dd_build`), nor once the stage stopped or Dask released it (None)."""
    from . import daskslots

    other = other_dd_build(shipped)
    if other is not None:
        return Finished(task.index, error=other), ""
    payload = _loaded(shipped[1])
    if slot is not None and (taken := daskslots.take(slot)) != "run":
        return None, {"moved": daskslots.MOVED, "stopped": daskslots.STOPPED}.get(taken, "")
    failed = True
    try:
        finished, output = _run_batch(payload, task)
        failed = finished.error is not None
        return finished, output
    finally:
        if slot is not None:
            daskslots.give_back(slot, failed=failed)


def _run_batch(payload: Payload, task: BatchTask) -> tuple[Finished, str]:
    from .kinds.bundleload import imports_for, running
    from .kinds.generate import compute_batch
    from .tables import parquet_buffer

    call = payload.call
    notes: list[str] = []
    with running(payload.bundle) as code, _captured() as output:
        try:
            fn = code.callable(call.target, call.stage)
            table, reads = compute_batch(fn, call, task, notes.append)
            finished = Finished(task.index, table, parquet_buffer(table), retries=len(notes),
                                reads=reads)
        except StageFailed as exc:
            finished = Finished(task.index, error=_remote_error(exc, call), retries=len(notes))
        finished.imports = imports_for(payload.build)
    finished.notes = notes
    return finished, output.getvalue()


def run_transform(shipped: Shipped, inputs: dict[str, Any]
                  ) -> tuple[Any, str, tuple[str, ...], ImportDelta | None]:
    """A Dask task: a transform stage's one call; its table, or its failure as text, what its
    code read of the stage's name (for the build cache's renames), and what it imported. Not
    run on a worker of another dd-build than the client's (`other_dd_build`)."""
    import copy

    from .errors import exc_text
    from .kinds.bundleload import imports_for, running
    from .kinds.transform import TransformContext
    from .tables import to_table

    other = other_dd_build(shipped)
    if other is not None:
        return other, "", (), None
    payload = _loaded(shipped[1])
    call = payload.call
    ctx = TransformContext(call.stage, inputs, copy.deepcopy(call.params), call.limiter)
    with running(payload.bundle) as code, _captured() as output:
        try:
            fn = code.callable(call.target, call.stage)
            try:
                value = fn(ctx)
            except (Exception, SystemExit) as exc:  # the user's code raised
                raise UserCodeFailed(f"{call.target} raised {type(exc).__name__}: "
                                     f"{exc_text(exc)}", stage=call.stage) from exc
            result: Any = to_table(value, call.target)
        except StageFailed as exc:
            result = _remote_error(exc, replace(call, inputs=inputs))
        imports = imports_for(payload.build)
    return result, output.getvalue(), tuple(sorted(ctx._reads)), imports


def _remote_error(exc: StageFailed, call: StageCall) -> BatchError:
    """The failure as text; an input path this worker cannot see is said as such."""
    error = BatchError.of(exc, Path(call.project_dir))
    missing = _unseen_input(exc, call.inputs)
    if missing is None:
        return _relative(exc, error)
    host = _worker_name()
    return replace(error, message=(
        f"{error.message}\n  the Dask worker {host} cannot see the input {missing}: a stage "
        "that opens ctx.inputs paths needs them at the same path on every worker"),
        hint="put the project (or its artifacts folder) on storage every worker mounts at the "
             "same path, or read the data on the client: pass it as `seed:` rows, or build "
             "this stage with --executor local")


def _relative(exc: StageFailed, error: BatchError) -> BatchError:
    """A relative path the user's code could not open: relative to the worker's folder."""
    cause = exc.__cause__
    name = getattr(cause, "filename", None) if isinstance(cause, OSError) else None
    if not isinstance(name, str) or os.path.isabs(name):
        return error
    return replace(error, message=(
        f"{error.message}\n  on the Dask worker {_worker_name()}, a relative path such as "
        f"{name!r} is relative to the worker's own folder ({os.getcwd()}), not the project's"),
        hint="open files by absolute path: through ctx.inputs, or from the module's __file__ "
             "(the project's path, which the workers must see too)")


def _unseen_input(exc: StageFailed, inputs: dict[str, Any]) -> str | None:
    """An input path the user's code failed to open here because it is not here."""
    cause = exc.__cause__
    if not isinstance(cause, OSError):
        return None
    said = f"{getattr(cause, 'filename', '') or ''} {cause}"
    for value in inputs.values():
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, str) and path in said and not os.path.exists(path):
                return path
    return None


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except ValueError:
        return f"pid {os.getpid()}"


class _Router(io.TextIOBase):
    """sys.stdout/sys.stderr on a worker: a thread running a dd-build task writes to its
    task's buffer, any other thread where the stream wrote before."""

    def __init__(self, before: Any) -> None:
        self.before = before
        self.local = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        buffer = getattr(self.local, "buffer", None)
        if buffer is not None:
            return buffer.write(text)
        return self.before.write(text) if self.before is not None else len(text)

    def flush(self) -> None:
        if getattr(self.local, "buffer", None) is None and self.before is not None:
            self.before.flush()


_ROUTERS: list[_Router] = []


@contextlib.contextmanager
def _captured() -> Iterator[io.StringIO]:
    with _LOADED_LOCK:
        if not _ROUTERS:
            _ROUTERS.extend([_Router(sys.stdout), _Router(sys.stderr)])
            sys.stdout, sys.stderr = _ROUTERS
    buffer = io.StringIO()
    for router in _ROUTERS:
        router.local.buffer = buffer
    try:
        yield buffer
    finally:
        for router in _ROUTERS:
            router.local.buffer = None
