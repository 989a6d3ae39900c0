"""Shared rate limits: the Workflowfile's `rate_limits:`, enforced around `ctx.request()`.

Each named limit is one `Limiter`: a token bucket (`requests_per_second`; a burst of one, so
requests are spaced evenly: no window of W seconds ever sees more than rate × W + 1 of them)
and a cap on requests in flight (`max_in_flight`). One `Limiters` registry is made per build;
every batch of every stage that names a limit uses that limit's one Limiter, from any thread.

Worker processes (`executor: process`) get `Limiter.shareable()`: a picklable handle whose
requests are granted by the parent's Limiter itself, over a local connection to a small
server started in the parent the first time a handle is asked for (and ended at build end),
so threads and processes draw on the same bucket and the same cap.

Waits are interruptible: a signal in the waiting thread (Ctrl-C in a serial build) ends the
wait; a cancel event (the job's) or `Limiters.cancel()` ends every wait within `_POLL_S`
with `Interrupted`. A request that ends, normally or by an exception, frees its slot; a
worker process that dies frees the slots it held. Nothing here is imported, and no server
is started, unless a stage names a limit.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from .errors import Interrupted

if TYPE_CHECKING:
    from multiprocessing.connection import Connection, Listener

    from .model import RateLimit, Workflow

# Longest a wait sleeps before it looks again at the cancel flags.
_POLL_S = 0.1
BURST = 1


class Limiter:
    """One named limit: a token bucket and an in-flight cap, shared by the threads of this
    process (and, through `shareable()`, by worker processes)."""

    def __init__(self, name: str, requests_per_second: float | None = None,
                 max_in_flight: int | None = None, *, burst: int = BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.rate = requests_per_second
        self.cap = max_in_flight
        self.burst = burst
        self._clock = clock
        self._cond = threading.Condition()
        self._tokens = float(burst)
        self._stamp = clock()
        self._in_flight = 0
        self.cancelled: int | None = None  # the signal that cancelled every wait, once set
        self._server: _Server | None = None

    @contextmanager
    def request(self, cancel: threading.Event | None = None) -> Iterator[None]:
        """Wait for a slot and a token, run the block, free the slot (also on an exception).
        `Interrupted` when `cancel` (or `cancel()`) is set while waiting."""
        self.acquire(cancel)
        try:
            yield
        finally:
            self.release()

    def acquire(self, cancel: threading.Event | None = None) -> None:
        """A slot, then a token (in this order: a token taken before a long wait for a slot
        would let requests start in a burst once slots free up)."""
        def check() -> None:
            if self.cancelled is not None:
                raise Interrupted(self.cancelled)
            if cancel is not None and cancel.is_set():
                raise Interrupted(getattr(cancel, "signum", signal.SIGINT))

        self._take_slot(check)
        try:
            self._take_token(check)
        except BaseException:  # cancelled, or a signal in this thread: the slot is not kept
            self.release()
            raise

    def release(self) -> None:
        if self.cap is None:
            return
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def _take_slot(self, check: Callable[[], None]) -> None:
        if self.cap is None:
            check()
            return
        with self._cond:
            while True:
                check()
                if self._in_flight < self.cap:
                    self._in_flight += 1
                    return
                self._cond.wait(_POLL_S)

    def _take_token(self, check: Callable[[], None]) -> None:
        if self.rate is None:
            return
        with self._cond:
            while True:
                check()
                wait = self._token_wait()
                if wait <= 0:
                    return
                self._cond.wait(min(wait, _POLL_S))

    def _token_wait(self) -> float:
        """Take a token and return 0 when there is one; else the seconds until there is.
        The bucket is refilled from the clock at the moment of asking, so two grants are
        always at least 1/rate apart once the burst is spent."""
        assert self.rate is not None
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def cancel(self, signum: int = signal.SIGINT) -> None:
        """End every wait on this limiter (here and in worker processes) with Interrupted."""
        with self._cond:
            self.cancelled = signum
            self._cond.notify_all()

    def shareable(self) -> SharedLimiter:
        """A picklable handle on this very limiter, for a worker process."""
        with self._cond:
            if self._server is None:
                self._server = _Server(self)
            return SharedLimiter(self.name, self._server.address, self._server.authkey)

    def close(self) -> None:
        """Stop the server of `shareable()` handles, if one was started."""
        with self._cond:
            server, self._server = self._server, None
        if server is not None:
            server.close()


class StageLimiter:
    """A stage's view of a shared Limiter: its requests also end when the job is cancelled."""

    def __init__(self, limiter: Limiter, cancel: threading.Event | None = None) -> None:
        self.limiter = limiter
        self.cancel = cancel

    @property
    def name(self) -> str:
        return self.limiter.name

    def request(self) -> AbstractContextManager[None]:
        return self.limiter.request(self.cancel)

    def shareable(self) -> SharedLimiter:
        return self.limiter.shareable()


class Limiters:
    """The build's limiters, one per name in `workflow.rate_limits`, made when first used."""

    def __init__(self, limits: dict[str, RateLimit]) -> None:
        self.limits = limits
        self._made: dict[str, Limiter] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, workflow: Workflow) -> Limiters:
        return cls(getattr(workflow, "rate_limits", {}))

    def get(self, name: str) -> Limiter:
        with self._lock:
            if name not in self._made:
                limit = self.limits[name]
                self._made[name] = Limiter(name, limit.requests_per_second, limit.max_in_flight)
            return self._made[name]

    def for_stage(self, stage: Any, cancel: threading.Event | None = None) -> StageLimiter | None:
        """The limiter of the stage's `rate_limit:`, bound to its job's cancel event; None when
        it names none."""
        name = getattr(stage, "rate_limit", None)
        return None if name is None else StageLimiter(self.get(name), cancel)

    def cancel(self, signum: int = signal.SIGINT) -> None:
        for limiter in self._all():
            limiter.cancel(signum)

    def close(self) -> None:
        """At build end: every wait ends, every server stops."""
        for limiter in self._all():
            limiter.cancel()
            limiter.close()

    def _all(self) -> list[Limiter]:
        with self._lock:
            return list(self._made.values())


def request(limiter: Any) -> AbstractContextManager[Any]:
    """`ctx.request()`: the limiter's request, or a no-op for a stage without `rate_limit`."""
    return nullcontext() if limiter is None else limiter.request()


# ---------------------------------------------------------------- across processes


class SharedLimiter:
    """A worker process's handle on a parent's Limiter (picklable). Each thread of the worker
    has its own connection; the parent grants and frees the slot and the token, so the bucket
    and the cap are the parent's. A connection that closes (its process died) frees what its
    requests held."""

    def __init__(self, name: str, address: Any, authkey: bytes) -> None:
        self.name = name
        self.address = address
        self.authkey = authkey
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "authkey": self.authkey}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], state["address"], state["authkey"])  # type: ignore[misc]

    @contextmanager
    def request(self) -> Iterator[None]:
        self._call("acquire")
        try:
            yield
        finally:
            self._call("release")

    def shareable(self) -> SharedLimiter:
        return self

    def _call(self, what: str) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            from multiprocessing.connection import Client

            conn = self._local.conn = Client(self.address, authkey=self.authkey)
        conn.send(what)
        answer = conn.recv()
        if answer != "ok":  # ("cancelled", signum)
            raise Interrupted(answer[1])


class _Server:
    """Grants requests of `SharedLimiter` handles from the parent's Limiter: one thread per
    connection (a worker thread), blocked while its request waits."""

    def __init__(self, limiter: Limiter) -> None:
        import os
        from multiprocessing.connection import Listener

        self.limiter = limiter
        self.authkey = os.urandom(32)
        self._listener: Listener = Listener(authkey=self.authkey)
        self.address = self._listener.address
        self._closed = False
        threading.Thread(target=self._accept, name=f"dd-build limit {limiter.name}",
                         daemon=True).start()

    def _accept(self) -> None:
        # `_closed` is looked at only after an accept: looked at before, a close that came
        # between two accepts would end this loop with close's own connection left waiting
        # for its handshake, forever.
        while True:
            try:
                conn = self._listener.accept()
            except (OSError, EOFError):  # closed, or a client that failed the handshake
                if self._closed:
                    return
                continue
            if self._closed:  # the wake-up of `close`
                conn.close()
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        held = 0
        try:
            while True:
                what = conn.recv()
                if what == "acquire":
                    try:
                        self.limiter.acquire()
                    except Interrupted as exc:
                        conn.send(("cancelled", exc.signum))
                        continue
                    held += 1
                elif what == "release" and held:
                    held -= 1
                    self.limiter.release()
                conn.send("ok")
        except (OSError, EOFError):  # the worker ended (or was ended)
            pass
        finally:
            for _ in range(held):
                self.limiter.release()
            conn.close()

    def close(self) -> None:
        """Stop accepting, never waiting. Closing a listening socket does not wake a thread
        blocked in accept() on Linux: a connection does. A bare one, without the handshake
        and without waiting for room in the backlog: a worker's connection accepted after
        `_closed` was set may have ended the accept loop already, and a handshake with no one
        (or a connect to a full backlog no one takes from) would wait forever."""
        if self._closed:
            return
        self._closed = True
        _wake(self.address)
        self._listener.close()


def _wake(address: Any) -> None:
    """Connect to a listener's address and go, without blocking."""
    import socket

    if isinstance(address, str) and address.startswith("\\\\"):  # a Windows pipe: no backlog
        from multiprocessing.connection import Client

        try:
            Client(address).close()
        except OSError:
            pass
        return
    family = socket.AF_INET if isinstance(address, tuple) else socket.AF_UNIX
    with socket.socket(family) as sock:
        sock.setblocking(False)
        try:
            sock.connect(address)
        except OSError:  # a full backlog (the loop takes one and ends), or it is gone
            pass
