"""daskslots.py without a cluster: the client's split of a stage's concurrency into per-worker
shares (never more than `concurrency` over the live workers, a live worker's share never
lowered, a gone worker's share handed on), and the worker's side (no more batches hold a slot
than its share; a stop, a failed batch or Dask releasing a batch ends the wait without running
it; a raised share lets more start; a batch on a worker with no share comes back to be sent
elsewhere, unless a share comes first)."""

from __future__ import annotations

import threading
import types
from collections.abc import Iterator

import pytest
from c12dask_support import needs_dask
from hypothesis import example, given, settings
from hypothesis import strategies as st

pytestmark = needs_dask

WORKERS = [f"tcp://10.0.0.{n}:8786" for n in range(1, 7)]
# The worker the worker-side tests run on: its address and scratch folder (daskslots.worker_key).
HERE = types.SimpleNamespace(address=WORKERS[0], local_directory="/scratch/worker-a1")


@given(concurrency=st.integers(1, 40),
       moments=st.lists(st.dictionaries(st.sampled_from(WORKERS), st.integers(1, 8)),
                        min_size=1, max_size=8))
@settings(max_examples=300, deadline=None)
def test_shares_never_exceed_concurrency_and_a_live_workers_share_never_drops(
        concurrency: int, moments: list[dict[str, int]]) -> None:
    from buildtool.daskslots import Placement

    placement = Placement(concurrency, moments[0])
    before = dict(placement.share)
    for threads in [moments[0], *moments[1:]]:
        placement.workers_now(threads)
        share = placement.share
        assert set(share) == set(threads)
        assert sum(share.values()) <= concurrency
        if all(before.get(w, 0) <= threads[w] for w in threads):  # else one came back smaller
            assert sum(share.values()) == min(concurrency, sum(threads.values()))
        for worker, n in share.items():
            assert 0 <= n
            if worker in before:
                assert n >= before[worker]  # raised only: never more at once than concurrency
            else:
                assert n <= threads[worker]
        before = dict(share)


def test_a_gone_workers_share_goes_to_the_others() -> None:
    from buildtool.daskslots import Placement

    a, b, c = WORKERS[:3]
    placement = Placement(4, {a: 4, b: 4, c: 4})
    assert sorted(placement.share.values()) == [1, 1, 2]
    assert placement.workers_now({a: 4, b: 4})  # c left
    assert sum(placement.share.values()) == 4 and set(placement.share) == {a, b}
    assert not placement.workers_now({a: 4, b: 4})


def test_batches_go_where_most_room_is_left_of_twice_the_share() -> None:
    from buildtool.daskslots import Placement

    a, b = WORKERS[:2]
    placement = Placement(3, {a: 2, b: 1})
    assert placement.share == {a: 2, b: 1}
    placed = [placement.place() for _ in range(6)]
    assert placed.count(a) == 4 and placed.count(b) == 2
    placement.back(b)
    assert placement.place() == b
    assert Placement(3, {}).place() is None  # no worker yet: Dask places it


# ---------------------------------------------------------------- the worker's side


@pytest.fixture
def here(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from buildtool import daskslots

    monkeypatch.setattr(daskslots, "_here", lambda: daskslots._key(HERE))
    yield daskslots._key(HERE)


class Batches:
    """Threads that each take a slot, then hold it until let go; what each got."""

    def __init__(self, slots: list[object]) -> None:
        self.holding = 0
        self.most = 0
        self.took: dict[int, bool] = {}
        self.lock = threading.Lock()
        self.go = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(n, slot), daemon=True)
                        for n, slot in enumerate(slots)]
        for thread in self.threads:
            thread.start()

    def run(self, n: int, slot: object) -> None:
        from buildtool import daskslots

        took = daskslots.take(slot) == "run"  # type: ignore[arg-type]
        with self.lock:
            self.took[n] = took
            if took:
                self.holding += 1
                self.most = max(self.most, self.holding)
        if took:
            self.go.wait(30)
            with self.lock:
                self.holding -= 1
            daskslots.give_back(slot, failed=False)  # type: ignore[arg-type]

    def wait_took(self, count: int) -> None:
        """Until `count` threads have their answer (a synchronisation point)."""
        done = threading.Event()

        def check() -> None:
            while len(self.took) < count:
                threading.Event().wait(0.01)
            done.set()

        threading.Thread(target=check, daemon=True).start()
        assert done.wait(30), self.took

    def join(self) -> None:
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive()


def _slots(tag: str, count: int, share: int) -> list[object]:
    from buildtool.daskslots import Slot, _key, key_of

    return [Slot(tag, key_of("s", f"{n}.1", tag), ((_key(HERE), share), (WORKERS[1], 9)))
            for n in range(count)]


def test_no_more_batches_hold_a_slot_than_the_workers_share(here: str) -> None:
    batches = Batches(_slots("t1", 6, 2))
    batches.wait_took(2)
    assert batches.holding == 2 and len(batches.took) == 2
    batches.go.set()
    batches.join()
    assert batches.took == dict.fromkeys(range(6), True) and batches.most == 2


def test_a_stop_ends_the_waits_and_those_batches_are_not_run(here: str) -> None:
    from buildtool import daskslots

    batches = Batches(_slots("t2", 5, 2))
    batches.wait_took(2)
    daskslots.stop("t2")
    batches.wait_took(5)
    assert sorted(batches.took.values()) == [False, False, False, True, True]
    batches.go.set()
    batches.join()


def test_a_failed_batch_stops_the_attempt_on_its_worker(here: str) -> None:
    from buildtool import daskslots

    first, *rest = _slots("t3", 4, 1)
    assert daskslots.take(first) == "run"  # type: ignore[arg-type]
    batches = Batches(rest)
    daskslots.give_back(first, failed=True)  # type: ignore[arg-type]
    batches.wait_took(3)
    assert set(batches.took.values()) == {False}
    batches.join()


def test_a_batch_dask_released_while_it_waited_is_not_run(
        here: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from buildtool import daskslots

    gone: set[str] = set()  # the worker's own view: tasks Dask released (Ctrl-C, client gone)
    monkeypatch.setattr(daskslots, "_released", lambda key: key in gone)
    slots = _slots("t4", 3, 1)
    batches = Batches(slots)
    batches.wait_took(1)
    waiting = [n for n in range(3) if n not in batches.took]
    gone.add(slots[waiting[0]].key)  # type: ignore[attr-defined]
    batches.go.set()  # the slot comes free now: the wake-up may reach the released one first
    batches.wait_took(3)
    batches.join()
    assert batches.took[waiting[0]] is False
    assert batches.took[waiting[1]] is True  # the wake-up it took was handed on


def test_a_raised_share_lets_more_start(here: str) -> None:
    from buildtool import daskslots

    batches = Batches(_slots("t5", 3, 1))
    batches.wait_took(1)
    daskslots.raise_shares("t5", ((here, 3),), dask_worker=HERE)
    batches.wait_took(3)
    assert batches.holding == 3
    batches.go.set()
    batches.join()


def test_a_batch_on_a_worker_with_no_share_is_moved_unless_a_share_comes(
        here: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from buildtool import daskslots

    monkeypatch.setattr(daskslots, "MOVE_AFTER_S", 0.2)
    lone, *waiting = _slots("t6", 3, 0)
    assert daskslots.take(lone) == "moved"  # type: ignore[arg-type]
    monkeypatch.setattr(daskslots, "MOVE_AFTER_S", 30.0)
    batches = Batches(waiting)
    daskslots.raise_shares("t6", ((here, 2),), dask_worker=HERE)
    batches.wait_took(2)
    assert set(batches.took.values()) == {True}
    batches.go.set()
    batches.join()


def test_a_worker_started_again_at_the_same_address_takes_no_share_of_its_former_process(
        here: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch sent while the former process lived carries its share: the client may have
    handed that share on since (test_c12dask_restart.py), so the new one waits for its own."""
    from buildtool import daskslots
    from buildtool.daskslots import Slot, key_of, worker_key

    monkeypatch.setattr(daskslots, "MOVE_AFTER_S", 0.2)
    former = worker_key(HERE.address, "/scratch/worker-old")
    slot = Slot("t7", key_of("s", "0.1", "t7"), ((former, 2),))
    assert daskslots.take(slot) == "moved"
    daskslots.raise_shares("t7", ((former, 2),), dask_worker=HERE)
    assert daskslots.take(slot) == "moved"


def test_the_workers_as_the_scheduler_has_them_whatever_the_clients_own_refresh_does() -> None:
    """The client refreshes its cached scheduler info on its own, with no workers in it:
    read at the wrong moment, every worker looks gone and every share is split anew (a share
    raised meanwhile lowered, more at once than concurrency). Here that refresh runs every few
    ms, so a read of the cache would miss the workers in some of the asks."""
    import dask
    from distributed import Client, LocalCluster

    from buildtool.daskwork import worker_threads

    with dask.config.set({"distributed.client.scheduler-info-interval": "5ms"}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                         dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        seen = [len(worker_threads(client) or {}) for _ in range(400)]
    assert set(seen) == {2}, f"{seen.count(2)} of {len(seen)} asks saw both workers"


def test_a_failed_batch_tells_its_workers_waiting_batches_the_stage_stopped(here: str) -> None:
    from buildtool import daskslots

    first, second = _slots("t7", 2, 1)
    assert daskslots.take(first) == "run"  # type: ignore[arg-type]
    daskslots.give_back(first, failed=True)  # type: ignore[arg-type]
    assert daskslots.take(second) == "stopped"  # type: ignore[arg-type]


def test_a_batch_back_unrun_before_the_failure_that_stopped_it_is_sent_again() -> None:
    """Its worker stopped the stage because another batch failed there; when this one comes
    back first, the stage must not fail on it ("not run") instead of on the real failure."""
    from buildtool.batchexec import BatchTask
    from buildtool.daskslots import MOVED, STOPPED
    from buildtool.daskwork import DaskBatches

    batches = DaskBatches.__new__(DaskBatches)
    batches._stage, batches._stopped, batches._pending, batches._unsent = "s", False, 0, []
    task = BatchTask(3, 30, 10, None, 7)
    for output in (STOPPED, MOVED):
        assert batches._unrun(3, task, output) is None
    assert batches._unsent == [task, task] and batches._pending == 2
    released = batches._unrun(3, task, "")  # Dask released it, the stage not stopped: said
    assert released is not None and "not run" in str(released.error)
    batches._stopped = True
    assert batches._unrun(3, task, STOPPED) is None and batches._pending == 2


@given(concurrency=st.integers(1, 8), events=st.lists(st.tuples(
    st.sampled_from(["send", "deliver", "kill", "start", "follow"]),
    st.integers(0, 3), st.integers(0, 3)), max_size=30))
@example(concurrency=2, events=[("send", 0, 0), ("kill", 0, 0), ("follow", 0, 0),
                                 ("start", 0, 0), ("deliver", 0, 0)])  # a restart (the hunt)
@settings(max_examples=1000, deadline=None)
def test_no_sequence_of_sends_deaths_restarts_and_steals_gives_more_slots_than_concurrency(
        concurrency: int, events: list[tuple[str, int, int]]) -> None:
    """A model of the cluster around the real Placement and worker naming: worker processes
    (an address, which a restarted one may reuse, and a scratch folder of its own), batches
    carrying the shares they were sent with and delivered to any live process (Dask reruns a
    dead worker's batches elsewhere, and steals queued ones), and the client's view refreshed
    now and then (each live process then raised). A process's capacity is what take() and
    raise_shares give it: the most any share named it. Live capacities never add up to more
    than `concurrency`."""
    from buildtool.daskslots import Placement, worker_key

    addresses = [f"tcp://127.0.0.1:{9000 + n}" for n in range(3)]
    live: dict[str, int] = {}  # worker key -> capacity
    started = 0

    def start(address: str) -> None:
        nonlocal started
        started += 1
        live[worker_key(address, f"/scratch/worker-{started}")] = 0

    for address in addresses[:2]:
        start(address)
    placement = Placement(concurrency, dict.fromkeys(live, 4))
    queued: list[tuple[tuple[str, int], ...]] = []
    for kind, a, b in events:
        keys = sorted(live)
        if kind == "send":
            placement.place()
            queued.append(placement.shares())
        elif kind == "deliver" and queued and keys:
            shares = dict(queued.pop(a % len(queued)))
            key = keys[b % len(keys)]
            live[key] = max(live[key], shares.get(key, 0))
        elif kind == "kill" and keys:
            del live[keys[a % len(keys)]]
        elif kind == "start":
            start(addresses[a % len(addresses)])
        elif kind == "follow":
            placement.workers_now(dict.fromkeys(live, 4))
            shares = dict(placement.shares())
            for key in live:
                live[key] = max(live[key], shares.get(key, 0))
        assert sum(live.values()) <= concurrency, (live, placement.share)
