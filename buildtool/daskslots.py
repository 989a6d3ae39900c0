"""A generate stage's `concurrency:` on a Dask cluster, held on the workers themselves.

The client sends twice a stage's concurrency (so a worker's thread starts the next batch the
moment one ends, instead of a round trip through the scheduler later) and splits the
concurrency itself into per-worker shares (`Placement`): each batch goes to a worker with room
in its share, and on the worker it computes only while it holds one of that worker's slots
(`take`). The shares add up to `concurrency` over the live workers, and a worker's share only
ever grows: when a worker leaves, its share goes to the others (`Placement.workers_now`, pushed
to them with `raise_shares`), so at no moment do more than `concurrency` batches compute at
once, and a lost worker costs no wait (its slots die with it). A batch waiting for a slot is
not run when the stage stopped meanwhile (`stop`: a failure) or when Dask no longer wants it
(`_released`: Ctrl-C cancelled it, or its client died). A batch on a worker with no share (Dask
moved it there when its worker died, or the worker is new) waits a little for one, then comes
back unrun to be sent where a share is (`MOVED`). Imported only where a stage meets Dask.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

# How long a batch waits for a slot before it looks again (a missed wake-up costs no more).
_WAIT_S = 1.0
# How long a batch waits on a worker with no share of its stage before it is sent elsewhere
# (longer than the client takes to see a new worker and give it a share: DaskBatches).
MOVE_AFTER_S = 4.0
# What a batch that was not run gives back instead of its result: sent again elsewhere when
# its worker had no share; passed over when the stage stopped (sent again if the client has not
# taken the failure that stopped it yet: that batch says why the stage fails, not this one).
MOVED = "dd-build: no share here"
STOPPED = "dd-build: the stage stopped here"
# Attempts kept before idle ones are dropped, and how long one must have been idle (a late
# batch of a stopped attempt must still see it stopped; a live one keeps its raised share).
_KEPT = 256
_IDLE_S = 600.0


@dataclass(frozen=True)
class Slot:
    """What a batch's task needs to take a slot: its stage attempt, its own Dask key, and each
    worker's share when it was sent."""

    tag: str
    key: str
    shares: tuple[tuple[str, int], ...]


def worker_key(address: str, local_directory: str) -> str:
    """A worker process as the shares name it: its address and its scratch folder (a folder of
    its own, made anew each time a worker starts). A worker started again at the same address
    is another worker: a batch sent while the former one lived carries that one's share, which
    the client may have handed to the others since (`Placement.workers_now`)."""
    return f"{address} {local_directory}"


def address_of(worker: str) -> str:
    """The address of a `worker_key` (an address has no space)."""
    return worker.split(" ", 1)[0]


def key_of(stage: str, sent: str, tag: str) -> str:
    """A batch's Dask key (`sent`: its index and which send it was; the tag comes last)."""
    return f"dd-build-{stage}-{sent}-{tag}"


def split(concurrency: int, threads: dict[str, int], given: dict[str, int]) -> dict[str, int]:
    """Each worker's share: what `given` gave the live ones, and what is left of `concurrency`
    handed out one at a time to the worker with a free thread and the smallest share per
    thread (more than a worker's threads could not compute at once there)."""
    share = {worker: given.get(worker, 0) for worker in threads}
    left = concurrency - sum(share.values())
    while left > 0:
        room = [w for w in threads if share[w] < threads[w]]
        if not room:
            break
        worker = min(room, key=lambda w: (share[w] / threads[w], w))
        share[worker] += 1
        left -= 1
    return share


class Placement:
    """The client's side: each worker's share of a stage attempt's concurrency, and how many of
    its batches each holds (sent, not back). A batch goes where most room is left of twice the
    share."""

    def __init__(self, concurrency: int, threads: dict[str, int]) -> None:
        self.concurrency = concurrency
        self.share = split(concurrency, threads, {})
        self.held: dict[str, int] = {}
        self._lock = threading.Lock()

    def place(self) -> str | None:
        """The worker for the next batch (None: no worker has a share yet; Dask places it, and
        it waits there until `workers_now` gives that worker one)."""
        with self._lock:
            shared = [w for w, share in self.share.items() if share > 0]
            if not shared:
                return None
            worker = max(shared, key=lambda w: 2 * self.share[w] - self.held.get(w, 0))
            self.held[worker] = self.held.get(worker, 0) + 1
            return worker

    def back(self, worker: str | None) -> None:
        with self._lock:
            if worker in self.held:
                self.held[worker] -= 1

    def workers(self) -> int:
        """How many workers the scheduler had when last asked (`workers_now`)."""
        with self._lock:
            return len(self.share)

    def shares(self) -> tuple[tuple[str, int], ...]:
        with self._lock:
            return tuple(sorted(self.share.items()))

    def workers_now(self, threads: dict[str, int]) -> bool:
        """The workers the scheduler has now: a gone one's share goes to the live ones (only
        ever raised). True when a share changed."""
        with self._lock:
            live = {w: share for w, share in self.share.items() if w in threads}
            share = split(self.concurrency, threads, live)
            changed = share != self.share
            self.share = share
            self.held = {w: n for w, n in self.held.items() if w in threads}
            return changed


# ---------------------------------------------------------------- on a worker


class _Attempt:
    """A stage attempt's slots on this worker."""

    def __init__(self) -> None:
        self.capacity = 0
        self.running = 0
        self.waiting = 0
        self.stopped = False
        self.ready = threading.Condition(_LOCK)
        self.touched = time.monotonic()


_LOCK = threading.Lock()
_ATTEMPTS: dict[str, _Attempt] = {}


def _attempt(tag: str) -> _Attempt:
    attempt = _ATTEMPTS.get(tag)
    if attempt is None:
        if len(_ATTEMPTS) >= _KEPT:  # attempts long over
            idle = time.monotonic() - _IDLE_S
            for old in [t for t, a in _ATTEMPTS.items()
                        if not (a.running or a.waiting) and a.touched < idle]:
                del _ATTEMPTS[old]
        attempt = _ATTEMPTS[tag] = _Attempt()
    attempt.touched = time.monotonic()
    return attempt


def _here() -> str:
    from distributed import get_worker

    return _key(get_worker())


def _key(worker: Any) -> str:
    return worker_key(str(worker.address), str(worker.local_directory))


Taken = Literal["run", "stopped", "released", "moved"]


def take(slot: Slot) -> Taken:
    """Wait for one of this worker's slots of the attempt: "run" once held; "stopped" when the
    stage stopped here meanwhile; "released" when Dask released the batch; "moved" when this
    worker has had no share of the stage for MOVE_AFTER_S (the client sends it where one is)."""
    here = dict(slot.shares).get(_here(), 0)
    with _LOCK:
        attempt = _attempt(slot.tag)
        attempt.capacity = max(attempt.capacity, here)
        attempt.waiting += 1
        try:
            outcome = _wait(attempt, slot.key)
        finally:
            attempt.waiting -= 1
        if outcome == "run":
            attempt.running += 1
        else:
            attempt.ready.notify()  # a wake-up meant for a batch that runs
        return outcome


def _wait(attempt: _Attempt, key: str) -> Taken:
    """Under _LOCK: until a slot is free, the attempt stopped or the batch released."""
    give_up = time.monotonic() + MOVE_AFTER_S
    while True:
        if attempt.stopped:
            return "stopped"
        if _released(key):
            return "released"
        if attempt.running < attempt.capacity:
            return "run"
        if attempt.capacity == 0 and time.monotonic() >= give_up:
            return "moved"
        attempt.ready.wait(timeout=_WAIT_S)


def give_back(slot: Slot, *, failed: bool) -> None:
    """The batch ended. A failed one stops the attempt here: no batch starts in its place (the
    stage stops on it; the client tells the other workers)."""
    with _LOCK:
        attempt = _attempt(slot.tag)
        attempt.running -= 1
        if failed:
            attempt.stopped = True
            attempt.ready.notify_all()
        else:
            attempt.ready.notify()


def stop(tag: str) -> None:
    """Run on every worker (`Client.run`) when the stage stops: the batches waiting for a slot
    are not run."""
    with _LOCK:
        attempt = _attempt(tag)
        attempt.stopped = True
        attempt.ready.notify_all()


def raise_shares(tag: str, shares: tuple[tuple[str, int], ...], dask_worker: Any = None
                 ) -> None:
    """Run on every worker (`Client.run`, which passes `dask_worker`) when the shares changed
    (a worker left or came)."""
    here = dict(shares).get(_key(dask_worker), 0)
    with _LOCK:
        attempt = _attempt(tag)
        if here > attempt.capacity:
            attempt.capacity = here
            attempt.ready.notify_all()


def _released(key: str) -> bool:
    """Whether Dask released this batch's task on this worker while it waited: the client
    cancelled it (Ctrl-C) or went away (killed). Read from the worker's own state at every
    wake-up, before a batch takes a slot, so none computes for nobody. (A WorkerPlugin would
    say it at once, but registered with the scheduler it stays there, and every worker that
    joins later must unpickle it: one without this dd-build fails to start.)"""
    from distributed import get_worker

    try:
        task = get_worker().state.tasks.get(key)
    except ValueError:  # not in a worker's task (the tests of this module)
        return False
    except AttributeError:  # a Dask whose worker keeps its tasks otherwise: it runs, as
        return False  # a batch did before it was sent ahead (README: Dask, what holds)
    return task is None or getattr(task, "state", "executing") != "executing"
