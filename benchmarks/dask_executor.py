"""The Dask executor: I/O-bound speed-up against local threads, and per-batch overhead.

Issue 12's benchmark (prints figures; not a timed test). It needs the dask extra. It starts
a LocalCluster of 2 worker processes itself (so a build's figures leave out starting one) and
builds fresh projects in a temp folder with `python -m buildtool -q --scheduler ADDRESS`:

0. The fixed cost of using the cluster: a build of one instant batch on the cluster against
   the same build in local threads (--repeat times each, the median): the whole build's wall
   time (what a user waits for: importing dask, connecting, the workers' first task, closing)
   and the stage's own time (from its record). The build's difference is the fixed cost.
1. The I/O-bound stage of benchmarks/concurrency.py (--rows rows, default 2,000, each sleeping
   20 ms, batches of 20: 40 s one batch at a time) at `concurrency:` 16 and 64, in local
   threads and on the cluster (2 workers with concurrency/2 threads each: the same number of
   batches computing at once): the stage's own time (from its record) and the whole build's
   wall time. Target: the cluster within 20 % of local threads. At 64 in flight the default
   stage lasts about a second in threads: the fixed cost alone is most of 20 % of that, so
   run --rows 20000 too for a stage long enough to show the cluster's own speed.
2. Steady state (--steady ROWS, default 10,000; 0 leaves it out): the same stage at 64 in
   flight with ROWS and 3 x ROWS rows; what the extra rows took, on the cluster against
   threads (the fixed cost drops out: this is the speed-up target's figure), beside a plain
   Dask loop of the same sleeps on the same kind of cluster (`as_completed`, the next task
   submitted as each comes back: the floor on the machine at hand).
3. Per-batch overhead: instant one-row batches with 16 in flight, --tiny and 3 x --tiny of
   them (default 200 and 600), on the cluster and in local threads; the time per batch is
   the difference of the two stage times over the difference of batches (what a stage pays
   once, importing dask and connecting, drops out). Target: <= 5 ms per batch more than
   local threads.

    python benchmarks/dask_executor.py [--rows 2000] [--steady 10000] [--tiny 200] [--repeat 3]
                                       [--no-per-batch]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concurrency import REPO, build, workflow  # noqa: E402 - the concurrency benchmark's pieces

# The LocalCluster's workers run the dd-build the builds run (this checkout's), not whichever
# one is installed: they are spawned with this process's sys.path and environment.
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])


def cluster(threads: int) -> tuple[object, str]:
    """A LocalCluster of 2 worker processes configured as the one dd-build starts (no
    statistical profiler: daskexec._open)."""
    import dask
    from distributed import LocalCluster

    dask.config.set({"distributed.worker.profile.enabled": False})
    local = LocalCluster(n_workers=2, threads_per_worker=threads, processes=True,
                         dashboard_address=None, silence_logs=40)
    return local, local.scheduler_address


def on_cluster(root: Path, text: str, threads: int) -> tuple[float, float]:
    """(the build's wall time, its stage's own time) on a fresh LocalCluster of 2 workers."""
    local, address = cluster(threads)
    try:
        return build(root, text, "--scheduler", address)
    finally:
        local.close()  # type: ignore[attr-defined]


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--steady", type=int, default=10000)
    parser.add_argument("--tiny", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3,
                        help="builds of the fixed-cost figure, each way (the median)")
    parser.add_argument("--no-per-batch", action="store_true",
                        help="leave out the per-batch overhead figures")
    args = parser.parse_args()
    print(f"load average before: {_load()} (figures on a loaded machine are not a quiet one's)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "p"
        # what using the cluster costs once (importing dask, connecting, sending the code, the
        # workers' first task, closing): one instant batch, on the cluster and in threads
        one = workflow(1, 1, 1, 0.0, 1)
        runs = {"threads": [build(root, one, "--executor", "local")
                            for _ in range(args.repeat)],
                "dask": [on_cluster(root, one, 1) for _ in range(args.repeat)]}
        wall = {k: median([w for w, _ in v]) for k, v in runs.items()}
        own = {k: median([o for _, o in v]) for k, v in runs.items()}
        print(f"one instant batch (median of {args.repeat}): build {wall['threads']:.2f}s in "
              f"threads, {wall['dask']:.2f}s on the cluster; stage {own['threads']:.2f}s and "
              f"{own['dask']:.2f}s")
        fixed = wall["dask"] - wall["threads"]
        print(f"fixed cost of using the cluster (the builds' difference): {fixed:.2f}s "
              f"(of which in the stage's own time: {own['dask'] - own['threads']:.2f}s)")
        print(f"\nI/O-bound stage: {args.rows} rows x 20 ms, batches of 20")
        print(f"{'concurrency':>12} {'':>6} {'threads':>9} {'dask':>9} {'dask/threads':>13}")
        for concurrency in (16, 64):
            text = workflow(1, args.rows, 20, 0.02, concurrency)
            threads = build(root, text, "--executor", "local")
            dask = on_cluster(root, text, concurrency // 2)
            for label, i in (("stage", 1), ("build", 0)):
                print(f"{concurrency if i else '':>12} {label:>6} {threads[i]:>8.2f}s "
                      f"{dask[i]:>8.2f}s {dask[i] / threads[i]:>12.2f}x")
        if args.steady:
            steady(root, args.steady)
        if not args.no_per_batch:
            per_batch(root, args.tiny)
    print(f"load average after: {_load()}")


def steady(root: Path, rows: int) -> None:
    print(f"\nsteady state: {rows} and {3 * rows} rows x 20 ms, batches of 20, 64 in flight")
    sizes = (rows, 3 * rows)
    threads = [build(root, workflow(1, n, 20, 0.02, 64), "--executor", "local")[1]
               for n in sizes]
    local, address = cluster(32)
    try:
        build(root, workflow(1, 1, 1, 0.0, 1), "--scheduler", address)  # the workers warm
        dask = [build(root, workflow(1, n, 20, 0.02, 64), "--scheduler", address)[1]
                for n in sizes]
        plain = [_plain_loop(address, n // 20, 64) for n in sizes]
    finally:
        local.close()  # type: ignore[attr-defined]
    extra = {"threads": threads[1] - threads[0], "dask": dask[1] - dask[0],
             "plain Dask": plain[1] - plain[0]}
    for label, times in (("threads", threads), ("dask", dask), ("plain Dask", plain)):
        print(f"  {label:>10}: {times[0]:.2f}s and {times[1]:.2f}s: the extra rows "
              f"{extra[label]:.2f}s ({extra[label] / extra['threads']:.2f}x threads)")


def _sleeps(_: int) -> int:
    import time

    for _ in range(20):
        time.sleep(0.02)
    return 0


def _plain_loop(address: str, tasks: int, in_flight: int) -> float:
    """Seconds for `tasks` tasks of 20 x 20 ms sleeps, `in_flight` at a time, in plain Dask."""
    import time

    from distributed import Client, as_completed

    with Client(address) as client:
        started = time.monotonic()
        todo = iter(range(tasks))
        running = as_completed([client.submit(_sleeps, next(todo), pure=False)
                                for _ in range(in_flight)], with_results=True)
        for _ in running:
            index = next(todo, None)
            if index is not None:
                running.add(client.submit(_sleeps, index, pure=False))
        return time.monotonic() - started


def per_batch(root: Path, tiny: int) -> None:
    print(f"\nper-batch time: {tiny} and {3 * tiny} instant one-row batches, "
          "16 in flight")
    per: dict[str, float] = {}
    small, large = workflow(1, tiny, 1, 0.0, 16), workflow(1, 3 * tiny, 1, 0.0, 16)
    for where in ("threads", "dask"):
        if where == "threads":
            times = [build(root, t, "--executor", "local")[1] for t in (small, large)]
        else:
            times = [on_cluster(root, t, 8)[1] for t in (small, large)]
        per[where] = (times[1] - times[0]) / (2 * tiny) * 1000
        print(f"  {where:>7}: {times[0]:.2f}s and {times[1]:.2f}s: "
              f"{per[where]:.2f} ms per batch")
    print(f"  the cluster's overhead: {per['dask'] - per['threads']:.2f} ms per batch")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
