"""Generate and transform stages on a Dask cluster (`--executor dask`, issue 12).

The client (this build) keeps all the state: it plans, holds the lock, and writes every batch
file and record; Dask workers only compute and send back tables (or an error as text). So the
cluster is one more `BatchExecutor` (batchexec.py), `DaskBatches`, and a transform stage is
one task. What crosses to a worker:

- the project's Python sources (codebundle.py) and the stage's `StageCall`, pickled once per
  stage attempt: workers run the stage's code from those sources (kinds/bundleload.py), so
  they need dd-build and the libraries the code imports, not a copy of the project, and every
  import the code makes there comes back as an edge of the import graph. The blob is the
  result of a tiny task (not scattered data), so a worker that dies takes no unrecomputable
  data with it; each worker unpickles it once.
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
until a stage runs on the cluster, or a run stage runs before one (`Cluster.warm_up`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import StageFailed, UsageError
from .knobs import seconds

if TYPE_CHECKING:
    from .batchexec import ImportDelta, StageCall
    from .daskwork import ClusterLimiter, DaskBatches
    from .execute import BuildConfig
    from .fingerprint import FileState
    from .kinds import Job
    from .model import Workflow

ENV = "DD_BUILD_SCHEDULER"
EXTRA = "pip install 'dd-build[dask]'"
# How long the client waits to reach a scheduler before the stage fails (one whose host does
# not resolve fails it at once), and how long it goes without one before the batches in flight
# fail (daskwork.Watch): knobs.py.
CONNECT_TIMEOUT = "DD_BUILD_DASK_CONNECT_TIMEOUT_S"
LOST_AFTER = "DD_BUILD_DASK_LOST_AFTER_S"
# What a build on Dask needs installed here (the null-build stamp keys where they are found).
PACKAGES = ("distributed", "cloudpickle")


def uses_cluster(executor: str | None, scheduler: str | None, workflow: Workflow) -> bool:
    """Whether a build with these options runs its stages on Dask: `--executor dask`, a
    --scheduler, or the Workflowfile's `executor: {dask: …}`, unless `--executor local`."""
    return executor != "local" and (executor == "dask" or scheduler is not None
                                    or workflow.dask is not None)


def ignored_scheduler(executor: str | None, scheduler: str | None) -> str | None:
    """The note of a build given both --executor local and --scheduler: local wins (see
    uses_cluster), and the address given on the same command line is said to be ignored. None
    otherwise: $DD_BUILD_SCHEDULER and the Workflowfile's `executor: {dask: …}` give way to
    --executor local without a word (it is how one builds here whatever they say; a variable
    exported in a shell profile would be noted on every build)."""
    if executor != "local" or scheduler is None:
        return None
    return f"--scheduler {scheduler} is ignored: --executor local runs every stage here"


def cluster_for(config: BuildConfig, workflow: Workflow) -> Cluster:
    """The build's cluster (not connected yet): the address of --scheduler, else of
    $DD_BUILD_SCHEDULER, else of the Workflowfile's `executor: {dask: …}`; none: a
    LocalCluster. A UsageError when the dask extra is not installed."""
    import importlib.util

    from .model import scheduler_problem

    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
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
    """The build's connection to Dask, opened in a thread of its own (`warm_up`): when the plan
    says a stage will run on the cluster after a run stage (execute._warm_up_now), as soon as
    the build starts, so that importing dask (half a second of CPU) and connecting — or
    starting a LocalCluster when there is no address — overlap with the run stage's command;
    else when the first stage on the cluster needs it (`client` waits for what is left).
    Closed at the end of the build."""

    def __init__(self, address: str | None, workflow: Workflow) -> None:
        self.address = address
        self.workflow = workflow
        self.build_id = os.urandom(6).hex()
        self._lock = threading.Lock()
        self._client: Any = None
        self._local: Any = None
        self._failed: StageFailed | None = None
        self._semaphores: list[Any] = []
        self._limiters: dict[str, ClusterLimiter] = {}
        self._external: dict[str, tuple[str, FileState]] = {}  # module -> as found here
        self._opening: threading.Thread | None = None  # the warm-up (None: not started)
        self._opened = threading.Event()  # the warm-up ended (connected or not)
        self._error: BaseException | None = None  # why it could not connect
        self._said = False  # the note of the LocalCluster / connection given (once)
        self._versions: str | None = None  # the packages the cluster has in other versions
        self._closed = False

    def warm_up(self) -> None:
        """Import dask and connect (or start the LocalCluster) in a thread, now (once). Nothing
        is said here: the first stage that needs the cluster says it, or its failure."""
        with self._lock:
            if self._opening is not None or self._closed:
                return
            self._opening = threading.Thread(target=self._connect, daemon=True,
                                             name="dd-build dask connect")
            self._opening.start()

    def client(self, job: Job) -> Any:
        """The connected client; StageFailed when the scheduler cannot be reached (said once:
        the next stage fails at once with the same error). Waits for the warm-up (started
        here if the build did not start it) in steps, so that Ctrl-C and -j's cancel end the
        wait at once."""
        from .kinds import check_cancel
        from .wording import counted

        self.warm_up()
        with self._lock:
            first, self._said = not self._said, True
        if first and self.address is None:
            workers, threads = _local_size(self.workflow)
            job.progress_note(f"dask: starting a LocalCluster of {workers} worker processes "
                              f"({threads} threads each) for this build")
        while not self._opened.wait(0.05):
            check_cancel(job)
        with self._lock:
            error = self._error
            if self._failed is None and error is not None:
                if self.address is None or not isinstance(error, (OSError, TimeoutError)):
                    raise error  # not a connection's failure: as raised (a broken install, a bug)
                self._failed = _unreachable(self.address, error, job)
            if self._failed is not None:
                raise StageFailed(self._failed.message, stage=job.stage.name,
                                  hint=self._failed.hint) from self._failed.__cause__
            client = self._client
        if client is None:  # closed meanwhile (the build is ending)
            raise StageFailed("the Dask client was closed", stage=job.stage.name)
        if first and self.address is not None:
            from .daskwork import worker_threads

            workers = len(worker_threads(client) or {})
            job.progress_note(f"dask: connected to {self.address} "
                              f"({counted(workers, 'worker')})")
            if self._versions is not None:
                job.progress_note(self._versions)
        return client

    def _connect(self) -> None:
        """The warm-up's thread: import dask, then connect or start the LocalCluster; what it
        made is kept (or closed at once when the build closed meanwhile), what it raised
        kept for the first stage that needs the client to say."""
        client = local = None
        try:
            client, local = _open(self.address, self.workflow)
            if local is None:  # a LocalCluster runs this machine's packages
                self._versions = _other_versions(client)
        except BaseException as exc:  # noqa: BLE001 - raised again by the stage that needs it
            self._error = exc
        finally:
            with self._lock:
                closed = self._closed
                if not closed:
                    self._client, self._local = client, local
            if closed:
                _close_quietly([], client, local)
            self._opened.set()

    def payload(self, job: Job, call: StageCall) -> Any:
        """A future holding the pickled Payload (the project's code as it is now, and the
        call) beside this process's dd-build (owncode.py: a worker of another one fails the
        stage), computed by a task (recomputable)."""
        import hashlib

        from .codebundle import collect
        from .daskwork import Payload, Shipped, keep_blob
        from .owncode import identity

        client = self.client(job)
        workflow = self.workflow
        bundle = collect(workflow.project_dir, skip=(workflow.project_dir / workflow.artifacts,))
        blob = _pickled(job, Payload(bundle, self.build_id, call))
        shipped: Shipped = (identity(), blob)
        # the identity in the key too: a client of another dd-build gets a task of its own
        digest = hashlib.sha256("\0".join(identity()).encode() + b"\0" + blob).hexdigest()[:16]
        return client.submit(keep_blob, shipped, key=f"dd-build-code-{job.stage.name}-{digest}",
                             pure=False)

    def imports(self, delta: ImportDelta | None) -> None:
        """What a worker's code imported, into this process's import graph (the stage's
        tracker reads it); modules outside the project fingerprinted here, as the planner
        will (the workers' installed versions are theirs to keep equal to these)."""
        from .batchexec import merge_imports

        if delta is not None:
            merge_imports(self.here(delta))

    def here(self, delta: ImportDelta) -> ImportDelta:
        """`delta` with the states of modules outside the project as found here."""
        from .codedeps import EXT
        from .external import fingerprint_found

        edges, nodes = delta
        here = []
        for node, key, state, module in nodes:
            if node.startswith(EXT):
                name = module or node.removeprefix(EXT)
                if name not in self._external:
                    self._external[name] = fingerprint_found(name)
                key, state = self._external[name]
            here.append((node, key, state, module))
        return edges, here

    def limiter(self, job: Job) -> ClusterLimiter | None:
        """The stage's `rate_limit:` as one limit of the whole cluster (made once per name)."""
        name = job.stage.rate_limit
        if name is None:
            return None
        with self._lock:
            if name not in self._limiters:
                from distributed import Semaphore

                from .daskwork import ClusterLimiter

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

    def batches(self, job: Job, call: StageCall, log: Path) -> DaskBatches:
        """The stage attempt's batches: at most `concurrency` compute at once on the cluster,
        each worker holding its share (daskslots.py)."""
        from dataclasses import replace

        from .daskslots import Placement
        from .daskwork import DaskBatches, worker_threads

        client = self.client(job)
        call = replace(call, limiter=self.limiter(job))
        placement = Placement(job.stage.concurrency, worker_threads(client) or {})
        return DaskBatches(client, self.payload(job, call), job.stage.name, log, self,
                           job.progress_note, placement)

    @staticmethod
    def most_sent(concurrency: int) -> int:
        """How many batches of a stage are sent to the cluster at once: twice its concurrency,
        so that a worker's thread starts the next batch the moment one ends (the others wait
        for a slot: daskslots.py)."""
        return 2 * concurrency

    def transform(self, job: Job, inputs: dict[str, Any], params: dict[str, Any], log: Path
                  ) -> tuple[Any, tuple[str, ...]]:
        """The stage's one call on a worker: its table and what its code read of the stage's
        name; StageFailed when it fails. Waits in
        steps so that Ctrl-C (and -j's cancel) end the wait at once, the task cancelled."""
        import time
        import uuid

        from .batchexec import BatchError, StageCall
        from .daskwork import Watch, append_output, failure, not_back, run_transform
        from .errors import Interrupted
        from .kinds import check_cancel

        client = self.client(job)
        call = StageCall(job.stage.name, job.stage.target, str(self.workflow.project_dir),
                         params, {}, 0, 0, 0.0, self.limiter(job))
        payload = self.payload(job, call)
        future = client.submit(run_transform, payload, inputs, pure=False,
                               key=f"dd-build-{job.stage.name}-transform-{uuid.uuid4().hex[:8]}")
        watch = Watch(client)
        try:
            while not future.done():
                check_cancel(job)
                watch.check(job.stage.name)
                time.sleep(0.02)
        except (KeyboardInterrupt, Interrupted):
            client.cancel([future, payload])
            raise
        error = failure(future, job.stage.name, "the transform")
        if error is not None:
            raise error
        try:
            result, output, reads, imports = future.result(timeout=60)
        except Exception as exc:  # noqa: BLE001 - its data could not be fetched: said
            raise not_back("the transform", exc, job.stage.name) from exc
        append_output(log, output)
        self.imports(imports)
        if isinstance(result, BatchError):
            raise result.exception(job.stage.name)
        return result, reads

    def close(self) -> None:
        """At build end: the semaphores, the client, and a LocalCluster it started. A warm-up
        still under way is waited for (a LocalCluster half started would leave its worker
        processes behind), a connection no stage asked for a second at most; Ctrl-C ends
        that wait."""
        with self._lock:
            self._closed = True
            opening, asked = self._opening, self._said
        if opening is not None and opening.is_alive():
            # no stage needed a scheduler that does not answer: not waited for to the end of
            # its connect timeout (the thread closes its client should it connect later)
            opening.join(None if asked or self.address is None else 1.0)
        with self._lock:
            client, local, self._client, self._local = self._client, self._local, None, None
            semaphores, self._semaphores = self._semaphores, []
        _close_quietly(semaphores, client, local)


def _open(address: str | None, workflow: Workflow) -> tuple[Any, Any]:
    """(client, LocalCluster or None): dask imported and configured, then connected to
    `address`, or to a LocalCluster started for the build. OSError or TimeoutError when the
    scheduler cannot be reached (UnresolvedHost when its host has no address)."""
    import logging
    import warnings

    import dask
    from distributed import Client

    # dask logs a lost connection with its traceback on stderr: the stage's failure says it;
    # and warns of semaphore leases still held when a build is interrupted (the build says it)
    for name in ["distributed", "tornado", *logging.root.manager.loggerDict]:
        if name.startswith(("distributed", "tornado")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"distributed(\.|$)")
    # and a table of the packages whose versions differ between here and the cluster: said in
    # one line instead (_other_versions)
    try:
        from distributed.versions import VersionMismatchWarning
    except ImportError:  # moved: its table is shown, as Dask shows it
        pass
    else:
        warnings.filterwarnings("ignore", category=VersionMismatchWarning)

    dask.config.set({"distributed.worker.daemon": False,  # stage code may start processes
                     "distributed.scheduler.worker-ttl": None})
    if address is not None:
        _resolve(address)  # a host with no address is said at once, not after the timeout
        return Client(address, timeout=seconds(CONNECT_TIMEOUT), set_as_default=False), None
    from distributed import LocalCluster

    workers, threads = _local_size(workflow)
    # no dashboard shows its workers' statistical profiler: sampling the stacks of every thread
    # every 10 ms is CPU the batches' many threads want (up to a fifth of a worker's)
    dask.config.set({"distributed.worker.profile.enabled": False})
    # its HTTP server on a free port of loopback, without the dashboard (None meant :8787,
    # and a warning on stderr whenever another cluster held that port)
    local = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                         dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False},
                         silence_logs=logging.CRITICAL,
                         preload=["buildtool.daskwork"])  # its workers ignore Ctrl-C
    try:
        return Client(local, set_as_default=False), local
    except BaseException:
        local.close(timeout=10)
        raise


def _other_versions(client: Any) -> str | None:
    """The note naming the packages (Dask's, pyarrow, Python) whose versions on the scheduler
    or a worker differ from this machine's (None: none do), from Dask's public
    `Client.get_versions`: one line, where Dask would print a table as a warning. A scheduler
    without a package the workers need is no difference (it runs no task). Nothing is said
    when the cluster cannot be asked (the stage that needs it says that)."""
    try:
        found = client.get_versions(check=False, packages=["pyarrow"])  # it encodes batches
    except (OSError, TimeoutError):  # distributed's CommClosedError is an OSError
        return None
    here = _packages(found.get("client"))
    scheduler = {k: v for k, v in _packages(found.get("scheduler")).items() if v is not None}
    workers = [_packages(w) for w in (found.get("workers") or {}).values()]
    differ = []
    for name in sorted(set(here).union(scheduler, *workers)):
        there = {w.get(name) for w in workers} | ({scheduler[name]} if name in scheduler else set())
        there.discard(here.get(name))
        if there:
            others = ", ".join(sorted(str(v or "none") for v in there))
            differ.append(f"{name} {here.get(name) or 'none'} here, {others} there")
    if not differ:
        return None
    return ("dask: the cluster has other versions than this machine of " + "; ".join(differ) +
            " (install the same versions everywhere: a task may fail or compute otherwise)")


def _packages(versions: Any) -> dict[str, str | None]:
    """{package: version} of one machine's entry in `Client.get_versions()`."""
    packages = versions.get("packages") if isinstance(versions, dict) else None
    return {str(k): None if v is None else str(v) for k, v in packages.items()} \
        if isinstance(packages, dict) else {}


class UnresolvedHost(OSError):
    """The scheduler address names a host that has no address (a typo, a host that is not
    there): Dask would retry the connection until its timeout, to the same end. Said by the
    stage that needs the cluster (`_unreachable`), as a StageFailed."""


def _resolve(address: str) -> None:
    """UnresolvedHost when the host of `address` (a tcp://, tls://, ws:// or wss:// one, or
    HOST:PORT, as Dask reads it) cannot be resolved. Nothing for an address Dask would not
    read (Client says why) or of another protocol (inproc://, ucx://)."""
    import socket

    from distributed.comm import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        host = parse_host_port(location)[0] if scheme in ("tcp", "tls", "ws", "wss") else ""
    except ValueError:
        return
    if not host:
        return
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:  # the resolver's own retries are behind this answer
        raise UnresolvedHost(f"its host {host} cannot be resolved "
                             f"({exc.strerror or exc})") from exc


def _local_size(workflow: Workflow) -> tuple[int, int]:
    """(worker processes, threads each) of the build's LocalCluster."""
    workers = min(os.cpu_count() or 1, 4)
    return workers, max(1, -(-_most_in_flight(workflow) // workers))


def _unreachable(address: str, exc: BaseException, job: Job) -> StageFailed:
    """The scheduler the warm-up could not reach, as the stage that needed it says it."""
    from .daskwork import said

    reason = str(exc) if isinstance(exc, UnresolvedHost) else said(exc)
    failed = StageFailed(
        f"cannot reach the Dask scheduler at {address}: {reason}", stage=job.stage.name,
        hint="start it (`dask scheduler`) or fix --scheduler / $DD_BUILD_SCHEDULER / the "
             "Workflowfile's executor: dask: scheduler; or build with --executor local")
    failed.__cause__ = exc
    return failed


def _close_quietly(semaphores: list[Any], client: Any, local: Any) -> None:
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


def _pickled(job: Job, value: Any) -> bytes:
    """cloudpickle (the call's limiter holds Dask semaphores)."""
    import cloudpickle

    from .daskwork import said

    try:
        return cloudpickle.dumps(value)
    except Exception as exc:  # noqa: BLE001 - whatever pickling raised, said with its cause
        raise StageFailed(f"cannot send {job.stage.name}'s call to the Dask workers: "
                          f"{said(exc)}", stage=job.stage.name,
                          hint="its params must be plain values (the Workflowfile's)") from exc
