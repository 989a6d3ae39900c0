"""Generate and transform stages on a Dask cluster (`--executor dask`, issue 12).

The client (this build) keeps all the state: it plans, holds the lock, and writes every batch
file and record; Dask workers only compute and send back tables (or an error as text). So the
cluster is one more `BatchExecutor` (batchexec.py), `DaskBatches`, and a transform stage is
one task. What crosses to a worker:

- the stage's callable and its `StageCall`, pickled once per stage attempt with cloudpickle,
  the project's own modules *by value* (`register_pickle_by_value`): workers need dd-build
  and the libraries the code imports, not a copy of the project. The blob is the result of a
  tiny task (not scattered data), so a worker that dies takes no unrecomputable data with it;
  each worker unpickles it once.
- each batch's `BatchTask` (its seed rows travel with it); back comes the `Finished` batch
  (table and parquet bytes, encoded on the worker) and what the code printed, which the
  client appends to the stage's log.

Rate limits hold across the cluster: `ClusterLimiter` takes a lease of a `distributed.Semaphore`
of `max_in_flight` leases around each request, and a lease of a one-lease semaphore that is
given back 1/rate after the request started, so starts are at least 1/rate apart on the whole
cluster whatever the workers' clocks say (a burst of one, as ratelimit.Limiter).

Faults: a worker that dies mid-batch makes Dask run the batch elsewhere (up to its
`allowed-failures`; then the batch fails the stage, the finished ones are kept); the scheduler
going away fails the batches in flight with a clear error; a client killed leaves futures the
scheduler forgets when it notices, and whose results nobody writes. Nothing here imports dask
until a stage runs on the cluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batchexec import BatchError, BatchTask, Finished, StageCall, _Arrivals
from .errors import StageFailed, UsageError, UserCodeFailed

if TYPE_CHECKING:
    from .execute import BuildConfig
    from .kinds import Job
    from .model import Workflow

ENV = "DD_BUILD_SCHEDULER"
EXTRA = "pip install 'dd-build[dask]'"
# How long the client waits to reach a scheduler before the stage fails.
CONNECT_TIMEOUT_S = float(os.environ.get("DD_BUILD_DASK_CONNECT_TIMEOUT_S", "10"))
# A scheduler the client has lost for this long fails the batches in flight.
LOST_AFTER_S = float(os.environ.get("DD_BUILD_DASK_LOST_AFTER_S", "10"))


def cluster_for(config: BuildConfig, workflow: Workflow) -> Cluster:
    """The build's cluster (not connected yet): the address of --scheduler, else of
    $DD_BUILD_SCHEDULER, else of the Workflowfile's `executor: {dask: …}`; none: a
    LocalCluster. A UsageError when the dask extra is not installed."""
    import importlib.util

    from .model import scheduler_problem

    missing = [name for name in ("distributed", "cloudpickle")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"--executor dask needs {' and '.join(missing)}, which are not "
                         "installed", hint=f"{EXTRA} (on this machine and on the workers), "
                                           "or build with --executor local")
    address = config.scheduler or os.environ.get(ENV) or \
        (workflow.dask.scheduler if workflow.dask is not None else None)
    if address is not None and config.scheduler is None and os.environ.get(ENV):
        problem = scheduler_problem(address)
        if problem is not None:
            raise UsageError(f"${ENV} is not a scheduler address ({address!r}): {problem}",
                             hint="set it to tcp://HOST:PORT, or unset it")
    return Cluster(address, workflow)


# ---------------------------------------------------------------- the client's side


class Cluster:
    """The build's connection to Dask: made when the first stage needs it (a LocalCluster
    started when there is no address), closed at the end of the build."""

    def __init__(self, address: str | None, workflow: Workflow) -> None:
        self.address = address
        self.workflow = workflow
        self.build_id = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._client: Any = None
        self._local: Any = None
        self._failed: StageFailed | None = None
        self._semaphores: list[Any] = []
        self._limiters: dict[str, ClusterLimiter] = {}

    def client(self, job: Job) -> Any:
        """The connected client; StageFailed when the scheduler cannot be reached (said once:
        the next stage fails at once with the same error)."""
        with self._lock:
            if self._failed is not None:
                raise StageFailed(self._failed.message, stage=job.stage.name,
                                  hint=self._failed.hint)
            if self._client is None:
                try:
                    self._connect(job)
                except StageFailed as exc:
                    self._failed = exc
                    raise
            return self._client

    def _connect(self, job: Job) -> None:
        import logging

        import dask
        from distributed import Client

        # dask logs a lost connection with its traceback on stderr: the stage's failure says it
        logging.getLogger("distributed").setLevel(logging.CRITICAL)

        dask.config.set({"distributed.worker.daemon": False,  # stage code may start processes
                         "distributed.scheduler.worker-ttl": None})
        if self.address is None:
            from distributed import LocalCluster

            workers = min(os.cpu_count() or 1, 4)
            threads = max(1, -(-_most_in_flight(self.workflow) // workers))
            job.progress_note(f"dask: starting a LocalCluster of {workers} worker processes "
                              f"({threads} threads each) for this build")
            self._local = LocalCluster(n_workers=workers, threads_per_worker=threads,
                                       processes=True, dashboard_address=None,
                                       silence_logs=40)
            self._client = Client(self._local, set_as_default=False)
            return
        try:
            self._client = Client(self.address, timeout=CONNECT_TIMEOUT_S,
                                  set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise StageFailed(
                f"cannot reach the Dask scheduler at {self.address}: {_said(exc)}",
                stage=job.stage.name,
                hint="start it (`dask scheduler`) or fix --scheduler / $DD_BUILD_SCHEDULER / "
                     "the Workflowfile's executor: dask: scheduler; or build with --executor "
                     "local") from exc
        workers = len(self._client.scheduler_info().get("workers", {}))
        job.progress_note(f"dask: connected to {self.address} ({workers} workers)")

    def payload(self, job: Job, fn: Any, call: StageCall) -> Any:
        """A future holding the pickled (fn, call), computed by a task (recomputable)."""
        client = self.client(job)
        blob = _pickled(job, (fn, call))
        digest = hashlib.sha256(blob).hexdigest()[:16]
        return client.submit(_blob, blob, key=f"dd-build-code-{job.stage.name}-{digest}",
                             pure=False)

    def limiter(self, job: Job) -> ClusterLimiter | None:
        """The stage's `rate_limit:` as one limit of the whole cluster (made once per name)."""
        name = job.stage.rate_limit
        if name is None:
            return None
        with self._lock:
            if name not in self._limiters:
                from distributed import Semaphore

                limit = self.workflow.rate_limits[name]
                prefix = f"dd-build-{self.build_id}-{name}"
                cap = rate = None
                if limit.max_in_flight is not None:
                    cap = Semaphore(limit.max_in_flight, f"{prefix}-in-flight",
                                    scheduler_rpc=self._client.scheduler, loop=self._client.loop)
                    cap.register()
                if limit.requests_per_second is not None:
                    rate = Semaphore(1, f"{prefix}-rate", scheduler_rpc=self._client.scheduler,
                                     loop=self._client.loop)
                    rate.register()
                self._semaphores += [s for s in (cap, rate) if s is not None]
                self._limiters[name] = ClusterLimiter(name, limit.requests_per_second, cap, rate)
            return self._limiters[name]

    def batches(self, job: Job, fn: Any, call: StageCall, log: Path) -> DaskBatches:
        self.client(job)
        call = replace(call, limiter=self.limiter(job))
        return DaskBatches(self._client, self.payload(job, fn, call), job.stage.name, log,
                           call.inputs)

    def transform(self, job: Job, fn: Any, inputs: dict[str, Any], params: dict[str, Any],
                  log: Path) -> Any:
        """The stage's one call on a worker: its table; StageFailed when it fails. Waits in
        steps so that Ctrl-C (and -j's cancel) end the wait at once, the task cancelled."""
        from .errors import Interrupted
        from .kinds import check_cancel

        client = self.client(job)
        call = StageCall(job.stage.name, job.stage.target, str(self.workflow.project_dir),
                         params, {}, 0, 0, 0.0, self.limiter(job))
        payload = self.payload(job, fn, call)
        future = client.submit(_run_transform, payload, inputs, pure=False,
                               key=f"dd-build-{job.stage.name}-transform-{uuid.uuid4().hex[:8]}")
        watch = _Watch(client)
        try:
            while not future.done():
                check_cancel(job)
                watch.check(job.stage.name)
                time.sleep(0.02)
        except (KeyboardInterrupt, Interrupted):
            client.cancel([future, payload])
            raise
        error = _failure(future, job.stage.name, "the transform")
        if error is not None:
            raise error
        result, output = future.result()
        _append(log, output)
        if isinstance(result, BatchError):
            raise result.exception(job.stage.name)
        return result

    def close(self) -> None:
        """At build end: the semaphores, the client, and a LocalCluster it started."""
        with self._lock:
            client, local, self._client, self._local = self._client, self._local, None, None
            semaphores, self._semaphores = self._semaphores, []
        if client is None:
            return
        for semaphore in semaphores:
            with contextlib.suppress(Exception):  # a scheduler gone: nothing left to close
                semaphore.close()
        with contextlib.suppress(Exception):
            client.close(timeout=5)
        if local is not None:
            with contextlib.suppress(Exception):
                local.close(timeout=10)


def _most_in_flight(workflow: Workflow) -> int:
    """The most batches one stage keeps in flight: a LocalCluster has threads for them."""
    return max([s.concurrency for s in workflow.stages.values() if s.kind == "generate"] or [1])


def _said(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _pickled(job: Job, value: Any) -> bytes:
    """cloudpickle, the project's modules by value (workers have no copy of the project)."""
    import cloudpickle

    for module in _project_modules(job.workflow.project_dir):
        with contextlib.suppress(ValueError):  # registered already
            cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(value)
    except Exception as exc:  # noqa: BLE001 - whatever pickling raised, said with its cause
        raise StageFailed(
            f"cannot send {job.stage.target} to the Dask workers: {_said(exc)}",
            stage=job.stage.name,
            hint="the function and the module-level values it uses are pickled (cloudpickle): "
                 "make clients, connections and locks inside the function (or in a cached "
                 "helper it calls), not at import") from exc


def _project_modules(project: Path) -> list[Any]:
    """Loaded modules whose file is in the project (not a venv or site-packages in it)."""
    from .kinds.sourceload import not_project_folders

    inside = str(project).rstrip(os.sep) + os.sep
    installed = tuple(p for p in not_project_folders(str(project)) if p != inside)
    found = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path.startswith(inside) and not path.startswith(installed):
            found.append(module)
    # a package before its submodules: registering it covers them
    return sorted(found, key=lambda m: m.__name__.count("."))


class _Watch:
    """Whether the client has lost its scheduler for longer than LOST_AFTER_S."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.since: float | None = None

    def lost(self) -> bool:
        if self.client.status in ("running", "newly-created"):
            self.since = None
            return False
        now = time.monotonic()
        self.since = self.since or now
        return now - self.since > LOST_AFTER_S

    def check(self, stage: str) -> None:
        if self.lost():
            raise StageFailed(_LOST, stage=stage, hint=_LOST_HINT)


_LOST = "lost the Dask scheduler: it stopped or cannot be reached"
_LOST_HINT = ("the finished batches are kept: build again once the scheduler is back, on "
              "another cluster (--scheduler), or here (--executor local)")


def _failure(future: Any, stage: str, what: str) -> StageFailed | None:
    """A future that did not finish: why, as a StageFailed (None when it finished)."""
    status = future.status
    if status == "finished":
        return None
    if status == "cancelled":
        return StageFailed(f"{what} did not come back: Dask cancelled it (the scheduler was "
                           "lost or restarted)", stage=stage, hint=_LOST_HINT)
    try:
        exc = future.exception(timeout=5)
    except Exception as lost:  # noqa: BLE001 - the connection itself failed: said
        exc = lost
    name = type(exc).__name__
    if name == "KilledWorker":
        return StageFailed(
            f"{what} did not come back: the Dask workers that ran it died ({_said(exc)})",
            stage=stage,
            hint="a worker was killed, ran out of memory or crashed in native code (Dask "
                 "tried it again elsewhere); build again: the finished batches are kept")
    return StageFailed(f"{what} did not come back from Dask: {_said(exc)}", stage=stage,
                       hint=_LOST_HINT)


def _append(log: Path, text: str) -> None:
    if text:
        with open(log, "a", encoding="utf-8", errors="replace") as f:
            f.write(text)


class DaskBatches(_Arrivals):
    """A generate stage's batches as Dask futures (see the module's docstring)."""

    def __init__(self, client: Any, payload: Any, stage: str, log: Path,
                 inputs: dict[str, Any]) -> None:
        super().__init__()
        self._client = client
        self._payload = payload
        self._stage = stage
        self._log = log
        self._log_lock = threading.Lock()
        self._futures: dict[int, Any] = {}
        self._watch = _Watch(client)
        self._tag = uuid.uuid4().hex[:8]

    def submit(self, task: BatchTask) -> None:
        self._pending += 1
        future = self._client.submit(_run_batch, self._payload, task, pure=False,
                                     key=f"dd-build-{self._stage}-{task.index}-{self._tag}")
        self._futures[task.index] = future
        future.add_done_callback(lambda f: self._landed(task.index, f))

    def _landed(self, index: int, future: Any) -> None:
        """In a thread of the client's: the batch, its error, or why it did not come back."""
        error = _failure(future, self._stage, f"batch {index}")
        if error is None:
            try:
                finished, output = future.result(timeout=60)
            except Exception as exc:  # noqa: BLE001 - its data could not be fetched: said
                error = StageFailed(f"batch {index} did not come back from Dask: {_said(exc)}",
                                    stage=self._stage, hint=_LOST_HINT)
            else:
                with self._log_lock:
                    _append(self._log, output)
                self._done.put(finished)
                return
        self._done.put(Finished(index, error=error))

    def next_finished(self, timeout: float) -> Finished | None:
        finished = super().next_finished(timeout)
        if finished is None:
            if self._pending and self._watch.lost():
                self._fail_all()
            return None
        self._futures.pop(finished.index, None)
        if isinstance(finished.error, BatchError):
            finished.error = finished.error.exception(self._stage)
        return finished

    def _fail_all(self) -> None:
        """The scheduler is gone: every batch in flight fails (none will come back)."""
        for index in list(self._futures):
            future = self._futures.pop(index)
            future.release()
            self._done.put(Finished(index, error=StageFailed(_LOST, stage=self._stage,
                                                             hint=_LOST_HINT)))

    def shutdown(self, *, interrupt: bool = False) -> None:
        """On an interrupt the futures in flight are cancelled (a batch running on a worker
        ends when its call returns; its result is dropped)."""
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

_LOADED: dict[bytes, tuple[Any, StageCall]] = {}  # the worker's unpickled payloads (by blob)
_LOADED_LOCK = threading.Lock()


def _blob(blob: bytes) -> bytes:
    return blob


def _loaded(blob: bytes) -> tuple[Any, StageCall]:
    with _LOADED_LOCK:
        if blob not in _LOADED:
            import cloudpickle

            if len(_LOADED) > 16:  # stages of builds long gone
                _LOADED.clear()
            _LOADED[blob] = cloudpickle.loads(blob)
        return _LOADED[blob]


def _run_batch(blob: bytes, task: BatchTask) -> tuple[Finished, str]:
    """A Dask task: one batch, with its retries; what its code printed comes back with it."""
    from .kinds.generate import compute_batch
    from .tables import parquet_buffer

    fn, call = _loaded(blob)
    notes: list[str] = []
    with _captured() as output:
        try:
            table = compute_batch(fn, call, task, notes.append)
            finished = Finished(task.index, table, parquet_buffer(table), retries=len(notes))
        except StageFailed as exc:
            finished = Finished(task.index, error=_remote_error(exc, call), retries=len(notes))
    finished.notes = notes
    return finished, output.getvalue()


def _run_transform(blob: bytes, inputs: dict[str, Any]) -> tuple[Any, str]:
    """A Dask task: a transform stage's one call; its table, or its failure as text."""
    import copy

    from .errors import exc_text
    from .kinds.transform import TransformContext
    from .tables import to_table

    fn, call = _loaded(blob)
    with _captured() as output:
        try:
            try:
                value = fn(TransformContext(call.stage, inputs, copy.deepcopy(call.params),
                                            call.limiter))
            except (Exception, SystemExit) as exc:  # the user's code raised
                raise UserCodeFailed(f"{call.target} raised {type(exc).__name__}: "
                                     f"{exc_text(exc)}", stage=call.stage) from exc
            result: Any = to_table(value, call.target)
        except StageFailed as exc:
            result = _remote_error(exc, replace(call, inputs=inputs))
    return result, output.getvalue()


def _remote_error(exc: StageFailed, call: StageCall) -> BatchError:
    """The failure as text; an input path this worker cannot see is said as such."""
    error = BatchError.of(exc, Path(call.project_dir))
    missing = _unseen_input(exc, call.inputs)
    if missing is None:
        return error
    host = _worker_name()
    return replace(error, message=(
        f"{error.message}\n  the Dask worker {host} cannot see the input {missing}: a stage "
        "that opens ctx.inputs paths needs them at the same path on every worker"),
        hint="put the project (or its artifacts folder) on storage every worker mounts at the "
             "same path, or read the data on the client: pass it as `seed:` rows, or build "
             "this stage with --executor local")


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
