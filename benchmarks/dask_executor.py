"""The Dask executor: I/O-bound speed-up against local threads, and per-batch overhead.

Issue 12's benchmark (prints figures; not a timed test). It needs the dask extra. It starts
a LocalCluster of 2 worker processes itself (so a build's figures leave out starting one) and
builds fresh projects in a temp folder with `python -m buildtool -q --scheduler ADDRESS`:

1. The I/O-bound stage of benchmarks/concurrency.py (2,000 rows, each sleeping 20 ms, batches
   of 20: 40 s one batch at a time) at `concurrency:` 16 and 64, in local threads and on the
   cluster (2 workers with concurrency/2 threads each: the same number of batches computing
   at once). The stage's own time is read from its record. Target: the cluster within 20 %
   of local threads.
2. Per-batch overhead: instant one-row batches with 16 in flight, --tiny and 3 x --tiny of
   them (default 200 and 600), on the cluster and in local threads; the time per batch is
   the difference of the two stage times over the difference of batches (what a stage pays
   once, importing dask and connecting, drops out). Target: <= 5 ms per batch more than
   local threads.

    python benchmarks/dask_executor.py [--rows 2000] [--tiny 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concurrency import build, workflow  # noqa: E402 - the concurrency benchmark's pieces


def cluster(threads: int) -> tuple[object, str]:
    from distributed import LocalCluster

    local = LocalCluster(n_workers=2, threads_per_worker=threads, processes=True,
                         dashboard_address=None, silence_logs=40)
    return local, local.scheduler_address


def on_cluster(root: Path, text: str, threads: int) -> float:
    local, address = cluster(threads)
    try:
        return build(root, text, "--scheduler", address)[1]
    finally:
        local.close()  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--tiny", type=int, default=200)
    args = parser.parse_args()
    print(f"load average before: {_load()} (figures on a loaded machine are not a quiet one's)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "p"
        print(f"I/O-bound stage: {args.rows} rows x 20 ms, batches of 20")
        # what a stage on the cluster pays once (importing dask, connecting, sending the code):
        # the stage time of one instant batch
        fixed = on_cluster(root, workflow(1, 1, 1, 0.0, 1), 1)
        print(f"fixed cost of a stage on the cluster (one instant batch): {fixed:.2f}s")
        print(f"{'concurrency':>12} {'threads':>10} {'dask (2 workers)':>17} {'dask/threads':>13} "
              f"{'without the fixed cost':>23}")
        for concurrency in (16, 64):
            text = workflow(1, args.rows, 20, 0.02, concurrency)
            threads = build(root, text, "--executor", "local")[1]
            dask = on_cluster(root, text, concurrency // 2)
            print(f"{concurrency:>12} {threads:>9.2f}s {dask:>16.2f}s {dask / threads:>12.2f}x "
                  f"{(dask - fixed) / threads:>22.2f}x")
        print(f"\nper-batch time: {args.tiny} and {3 * args.tiny} instant one-row batches, "
              "16 in flight")
        per: dict[str, float] = {}
        small, large = workflow(1, args.tiny, 1, 0.0, 16), workflow(1, 3 * args.tiny, 1, 0.0, 16)
        for where in ("threads", "dask"):
            if where == "threads":
                times = [build(root, t, "--executor", "local")[1] for t in (small, large)]
            else:
                times = [on_cluster(root, t, 8) for t in (small, large)]
            per[where] = (times[1] - times[0]) / (2 * args.tiny) * 1000
            print(f"  {where:>7}: {times[0]:.2f}s and {times[1]:.2f}s: "
                  f"{per[where]:.2f} ms per batch")
        print(f"  the cluster's overhead: {per['dask'] - per['threads']:.2f} ms per batch")
    print(f"load average after: {_load()}")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
