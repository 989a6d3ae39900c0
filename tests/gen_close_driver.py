"""Driver of tests/test_gen_ratelimit_close.py: run as a script in a subprocess of its own, so a
hang is a timeout the test sees (with every thread's stack, from faulthandler), not a hung CI.

    python tests/gen_close_driver.py SEED [SEED...]

For each seed: a shared Limiter (a random rate and/or cap), clients requesting through its
`shareable()` handles (threads of this process, each on its own connection or a fresh one per
request, and 0-2 spawned worker processes, some SIGKILLed at a random moment), and a close at
a random moment (after N requests of the threads came back, N drawn from 0 to all of them): by
`Limiters.close()` as a build's end does, `cancel()` then `close()`, `close()` alone, twice, or
from two threads at once. Then every close must return, every client must end (its requests
done, or ended by Interrupted or a closed connection), the accepting thread must end, and
every slot must be free. One JSON line per seed on stdout: {"seed", "problems": [...]}.
Stdlib and buildtool only.
"""

from __future__ import annotations

import faulthandler
import json
import multiprocessing
import os
import pickle
import random
import signal
import sys
import threading
import time
from typing import Any

# Expected ends of a client's requests once the limiter is closed or cancelled.
ENDED = (OSError, EOFError)
LIMIT_S = 20.0  # a safety limit for each wait below, never a timing assertion


def _client(blob: bytes, requests: int, fresh: bool, done: Any) -> str:
    """`requests` requests through handles unpickled from `blob` (one, or a fresh one per
    request: a new connection each time); how they ended."""
    from buildtool.errors import Interrupted

    handle = pickle.loads(blob)
    try:
        for _ in range(requests):
            if fresh:
                handle = pickle.loads(blob)
            with handle.request():
                pass
            done()
    except Interrupted:
        return "interrupted"
    except ENDED:
        return "closed"
    return "done"


def _worker(blob: bytes, requests: int, fresh: bool) -> None:
    """In a spawned worker process: one client; exit 0 whichever way it ended."""
    _client(blob, requests, fresh, lambda: None)


def _wait(test: Any, limit: float = LIMIT_S) -> bool:
    deadline = time.monotonic() + limit
    while not test():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def _server_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("dd-build limit")}


def run(seed: int) -> list[str]:
    from buildtool.model import RateLimit
    from buildtool.ratelimit import Limiters

    rng = random.Random(seed)
    problems: list[str] = []
    rate = rng.choice([None, 200.0, 5000.0])
    cap = rng.choice([None, 1, 2, 5]) if rate is not None else rng.choice([1, 2, 5])
    before = _server_threads()
    limiters = Limiters({"api": RateLimit("api", requests_per_second=rate, max_in_flight=cap)})
    limiter = limiters.get("api")
    blob = pickle.dumps(limiter.shareable())
    how = rng.choice(["limiters", "cancel-close", "close", "twice", "two-threads"])
    about = f"seed {seed} (rate {rate}, cap {cap}, close by {how})"

    count = [0]
    cond = threading.Condition()

    def done() -> None:
        with cond:
            count[0] += 1
            cond.notify_all()

    plans = [(rng.randint(1, 12), rng.random() < 0.5) for _ in range(rng.randint(1, 6))]
    ends: list[str] = []

    def client(requests: int, fresh: bool) -> None:
        try:
            ends.append(_client(blob, requests, fresh, done))
        except BaseException as exc:  # noqa: BLE001 - reported: any other end is a bug
            ends.append(f"raised {type(exc).__name__}: {exc}")

    mp = multiprocessing.get_context("spawn")
    workers = [mp.Process(target=_worker, args=(blob, rng.randint(1, 30), rng.random() < 0.5))
               for _ in range(rng.choice([0, 0, 1, 2]))]
    kills = [rng.random() < 0.5 for _ in workers]
    for w in workers:
        w.start()
    threads = [threading.Thread(target=client, args=plan, daemon=True) for plan in plans]
    for t in threads:
        t.start()
    at = rng.randint(0, sum(r for r, _ in plans))
    with cond:  # the moment: after `at` requests came back (all, at most)
        cond.wait_for(lambda: count[0] >= at or not any(t.is_alive() for t in threads),
                      timeout=LIMIT_S)
    for w, kill in zip(workers, kills, strict=True):
        if kill and w.pid is not None:
            try:
                os.kill(w.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if how == "limiters":
        limiters.close()
    elif how == "cancel-close":
        limiter.cancel()
        limiter.close()
    elif how == "close":
        limiter.close()
    elif how == "twice":
        limiter.close()
        limiter.close()
    else:
        closers = [threading.Thread(target=limiter.close) for _ in range(2)]
        for c in closers:
            c.start()
        for c in closers:
            c.join(LIMIT_S)
        if any(c.is_alive() for c in closers):
            problems.append(f"{about}: a close never returned")
    for t in threads:
        t.join(LIMIT_S)
    if any(t.is_alive() for t in threads):
        problems.append(f"{about}: a client thread never ended")
    for w in workers:
        w.join(LIMIT_S)
        if w.exitcode is None:
            problems.append(f"{about}: a worker process never ended")
            w.kill()
            w.join()
        elif w.exitcode not in (0, -signal.SIGKILL):
            problems.append(f"{about}: a worker process exited {w.exitcode}")
    problems += [f"{about}: a client {end}" for end in ends
                 if end not in ("done", "interrupted", "closed")]
    if not _wait(lambda: _server_threads() <= before):
        problems.append(f"{about}: the accepting thread never ended")
    if cap is not None and not _wait(lambda: limiter.in_flight() == 0):
        problems.append(f"{about}: {limiter.in_flight()} slots still held after every "
                        "client ended")
    limiters.close()
    return problems


def main(seeds: list[int]) -> None:
    # Everything below is bounded by LIMIT_S per wait; a hang past this ends the process with
    # every thread's stack on stderr.
    faulthandler.dump_traceback_later(float(os.environ.get("GEN_CLOSE_HANG_S", "50")), exit=True)
    for seed in seeds:
        print(json.dumps({"seed": seed, "problems": run(seed)}), flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
