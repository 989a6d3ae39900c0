"""ratelimit.py: the token bucket and the in-flight cap of a named limit, from many threads and
from worker processes sharing the parent's limiter; waits end on cancel and on a signal; an
ended request (by an exception, a cancel, a dead process) holds no slot.

Each request records monotonic timestamps on entry and on exit (inside the request); the
tests assert counts: starts within every 1-second window, requests in flight at once."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from c10c_support import check_bounds, most_in_flight, most_in_window
from conftest import REPO

from buildtool.errors import Interrupted
from buildtool.model import RateLimit
from buildtool.ratelimit import Limiter, Limiters, SharedLimiter, request

Span = tuple[float, float]


def _hammer(limiter: Any, threads: int, each: int, work: Callable[[], None] = lambda: None
            ) -> list[Span]:
    """`threads` threads each make `each` requests; the spans recorded inside them."""
    spans: list[Span] = []
    lock = threading.Lock()
    go = threading.Barrier(threads)

    def one() -> None:
        go.wait()
        for _ in range(each):
            with limiter.request():
                start = time.monotonic()
                work()
                end = time.monotonic()
            with lock:
                spans.append((start, end))

    pool = [threading.Thread(target=one) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return spans


def _wait_until(test: Callable[[], bool], what: str, limit_s: float = 30.0) -> None:
    """Poll `test` until true (a safety limit only: never an assertion about speed)."""
    deadline = time.monotonic() + limit_s
    while not test():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.005)


# ---------------------------------------------------------------- the checks can fail


def test_the_checks_see_a_burst_and_an_overlap() -> None:
    """Without a limiter, 12 threads break both bounds: the checks are not vacuous."""
    spans = _hammer(type("Free", (), {"request": lambda self: request(None)})(), 12, 5,
                    lambda: time.sleep(0.002))
    assert most_in_window([s for s, _ in spans]) == 60
    with pytest.raises(AssertionError):
        check_bounds(spans, rate=20, cap=None)
    assert most_in_flight([(0, 2), (1, 3), (2, 4)]) == 2  # touching spans do not overlap
    assert most_in_window([0.0, 0.5, 1.0, 1.01]) == 3


# ---------------------------------------------------------------- threads


def test_rate_and_cap_hold_across_many_threads() -> None:
    limiter = Limiter("api", requests_per_second=20, max_in_flight=3)
    spans = _hammer(limiter, 12, 4, lambda: time.sleep(0.01))
    assert len(spans) == 48
    check_bounds(spans, rate=20, cap=3)
    assert limiter.in_flight() == 0


def test_cap_alone_holds_and_is_reached() -> None:
    limiter = Limiter("api", max_in_flight=4)
    held = threading.Event()
    inside = threading.Semaphore(0)

    def work() -> None:
        inside.release()
        held.wait()

    runner = threading.Thread(target=lambda: spans.extend(_hammer(limiter, 10, 2, work)))
    spans: list[Span] = []
    runner.start()
    for _ in range(4):
        inside.acquire()  # four are inside and held: the cap is reached, no fifth enters
    assert limiter.in_flight() == 4
    assert not inside.acquire(timeout=0.2)
    held.set()
    runner.join()
    check_bounds(spans, rate=None, cap=4)
    assert len(spans) == 20 and limiter.in_flight() == 0


def test_rate_alone_spaces_starts() -> None:
    limiter = Limiter("api", requests_per_second=25)
    spans = _hammer(limiter, 8, 5)
    check_bounds(spans, rate=25, cap=None)
    starts = sorted(s for s, _ in spans)
    # a burst of one: no two starts closer than the spacing (a little clock slack)
    assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= 1 / 25 - 0.002


def test_the_bucket_with_a_fake_clock() -> None:
    """Grants by the bucket's arithmetic alone: one at once, then one per 1/rate."""
    now = [100.0]
    limiter = Limiter("api", requests_per_second=4, clock=lambda: now[0])
    assert limiter._token_wait() == 0.0
    assert limiter._token_wait() == pytest.approx(0.25)
    now[0] += 0.1
    assert limiter._token_wait() == pytest.approx(0.15)
    now[0] += 0.15
    assert limiter._token_wait() == 0.0
    now[0] += 10.0  # a long idle time banks no more than the burst
    assert limiter._token_wait() == 0.0
    assert limiter._token_wait() > 0


def test_an_exception_in_the_request_frees_its_slot() -> None:
    limiter = Limiter("api", max_in_flight=1)
    with pytest.raises(ValueError), limiter.request():
        assert limiter.in_flight() == 1
        raise ValueError("model said no")
    assert limiter.in_flight() == 0
    with limiter.request():
        assert limiter.in_flight() == 1


def test_no_limiter_is_a_no_op() -> None:
    with request(None) as got:
        assert got is None


# ---------------------------------------------------------------- cancel and signals


def _waiting(limiter: Limiter, n: int = 1) -> Callable[[], bool]:
    return lambda: len(limiter._cond._waiters) >= n  # type: ignore[attr-defined]


@pytest.mark.parametrize("by", ["job", "limiters"])
def test_a_cancel_ends_waits_and_frees_slots(by: str) -> None:
    limiters = Limiters({"api": RateLimit("api", requests_per_second=0.001, max_in_flight=2)})
    cancel = threading.Event()
    view = limiters.for_stage(type("S", (), {"rate_limit": "api"})(), cancel)
    assert view is not None
    view.limiter.acquire()  # the one token is spent: the next request waits ~1000 s
    outcomes: list[str] = []

    def wait() -> None:
        try:
            with view.request():
                outcomes.append("entered")
        except Interrupted:
            outcomes.append("interrupted")

    threads = [threading.Thread(target=wait) for _ in range(3)]
    for t in threads:
        t.start()
    _wait_until(_waiting(view.limiter, 1), "a request waits")
    (cancel.set if by == "job" else limiters.cancel)()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert outcomes == ["interrupted"] * 3
    assert view.limiter.in_flight() == 1  # only the one taken above: no waiter kept a slot
    limiters.close()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_during_a_wait_ends_it_in_the_main_thread() -> None:
    limiter = Limiter("api", max_in_flight=1)
    limiter.acquire()  # the one slot is held: the next request waits
    _interrupt_a_request(limiter, "the main thread waits")
    assert limiter.in_flight() == 1


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_waiting_for_a_token_gives_back_the_slot() -> None:
    limiter = Limiter("api", requests_per_second=0.001, max_in_flight=5)
    with limiter.request():
        pass  # the token is spent
    _interrupt_a_request(limiter, "the main thread waits for a token")
    assert limiter.in_flight() == 0


def _interrupt_a_request(limiter: Limiter, what: str) -> None:
    """A request in the main thread, which SIGINT ends once it waits."""
    main = threading.get_ident()

    def interrupt() -> None:
        _wait_until(_waiting(limiter), what)
        signal.pthread_kill(main, signal.SIGINT)

    sender = threading.Thread(target=interrupt)
    sender.start()
    with pytest.raises(KeyboardInterrupt), limiter.request():
        pass
    sender.join()


# ---------------------------------------------------------------- worker processes


def _worker(shared: SharedLimiter, threads: int, each: int, out: Any) -> None:
    """In a worker process: threads making requests through the parent's limiter."""
    spans = _hammer(shared, threads, each, lambda: time.sleep(0.01))
    out.put(spans)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_processes_and_threads_share_one_bucket_and_cap(method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method}")
    mp = multiprocessing.get_context(method)
    limiter = Limiter("api", requests_per_second=20, max_in_flight=3)
    shared = limiter.shareable()
    assert limiter.shareable().address == shared.address  # one server per limiter
    out = mp.Queue()
    workers = [mp.Process(target=_worker, args=(shared, 3, 3, out)) for _ in range(3)]
    for w in workers:
        w.start()
    spans = _hammer(limiter, 3, 3, lambda: time.sleep(0.01))  # the parent's own threads
    for _ in workers:
        spans += out.get(timeout=120)
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert len(spans) == 4 * 9
    check_bounds(spans, rate=20, cap=3)
    _wait_until(lambda: limiter.in_flight() == 0, "every slot is back")
    limiter.close()


def test_a_handle_pickles_without_its_connections() -> None:
    limiter = Limiter("api", max_in_flight=2)
    shared = limiter.shareable()
    with shared.request():
        assert limiter.in_flight() == 1
        copy = pickle.loads(pickle.dumps(shared))
        with copy.request():
            assert limiter.in_flight() == 2
    assert limiter.in_flight() == 0
    limiter.close()


def _die_inside(shared: SharedLimiter, flag: Any) -> None:
    with shared.request():
        flag.set()
        os._exit(3)


def _wait_remote(shared: SharedLimiter, out: Any) -> None:
    try:
        with shared.request():
            out.put("entered")
    except Interrupted as exc:
        out.put(("interrupted", exc.signum))


def test_a_dead_worker_frees_its_slot() -> None:
    mp = multiprocessing.get_context("spawn")
    limiter = Limiter("api", max_in_flight=1)
    flag = mp.Event()
    worker = mp.Process(target=_die_inside, args=(limiter.shareable(), flag))
    worker.start()
    assert flag.wait(60)
    worker.join(60)
    assert worker.exitcode == 3
    _wait_until(lambda: limiter.in_flight() == 0, "the dead worker's slot is freed")
    with limiter.request():
        assert limiter.in_flight() == 1
    limiter.close()


def test_build_end_ends_a_worker_wait() -> None:
    mp = multiprocessing.get_context("spawn")
    limiters = Limiters({"api": RateLimit("api", max_in_flight=1)})
    limiter = limiters.get("api")
    limiter.acquire()  # held: the worker's request waits in the parent's server
    out = mp.Queue()
    worker = mp.Process(target=_wait_remote, args=(limiter.shareable(), out))
    worker.start()
    _wait_until(_waiting(limiter), "the worker's request waits")
    limiters.close()
    assert out.get(timeout=60) == ("interrupted", signal.SIGINT)
    worker.join(60)
    assert worker.exitcode == 0


def test_close_stops_the_server() -> None:
    limiter = Limiter("api", max_in_flight=1)
    server_threads = {t for t in threading.enumerate() if t.name.startswith("dd-build limit")}
    limiter.shareable()
    limiter.close()
    _wait_until(lambda: {t for t in threading.enumerate()
                         if t.name.startswith("dd-build limit")} == server_threads,
                "the accepting thread ends")


def test_nothing_heavy_is_imported_without_a_limit() -> None:
    import subprocess

    code = ("import sys, buildtool.ratelimit as r; r.Limiters({});"
            "print('multiprocessing' in sys.modules)")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert found.stdout.strip() == "False"
