"""The Dask executor: I/O-bound speed-up against local threads, and per-batch overhead.

Issue 12's benchmark (prints figures; not a timed test). It needs the dask extra. It starts
a LocalCluster of 2 worker processes itself (so a build's figures leave out starting one) and
builds fresh projects in a temp folder with `python -m buildtool -q --scheduler ADDRESS`:

1. The I/O-bound stage of benchmarks/concurrency.py (2,000 rows, each sleeping 20 ms, batches
   of 20: 40 s one batch at a time) at `concurrency:` 16 and 64, in local threads and on the
   cluster (2 workers with concurrency/2 threads each: the same number of batches computing
   at once). The stage's own time is read from its record. Target: the cluster within 20 %
   of local threads.
2. Per-batch overhead: --tiny instant one-row batches (default 1,000) with 16 in flight, on
   the cluster and in local threads; (cluster - threads) / batches, and the cluster's time
   per batch. Target: <= 5 ms per batch.

    python benchmarks/dask_executor.py [--rows 2000] [--tiny 1000]
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--tiny", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "p"
        print(f"I/O-bound stage: {args.rows} rows x 20 ms, batches of 20")
        print(f"{'concurrency':>12} {'threads':>10} {'dask (2 workers)':>17} {'dask/threads':>13}")
        for concurrency in (16, 64):
            text = workflow(1, args.rows, 20, 0.02, concurrency)
            threads = build(root, text, "--executor", "local")[1]
            dask = on_cluster(root, text, concurrency // 2)
            print(f"{concurrency:>12} {threads:>9.2f}s {dask:>16.2f}s {dask / threads:>12.2f}x")
        print(f"\nper-batch overhead: {args.tiny} instant one-row batches, 16 in flight")
        text = workflow(1, args.tiny, 1, 0.0, 16)
        threads = build(root, text, "--executor", "local")[1]
        dask = on_cluster(root, text, 8)
        print(f"  threads {threads:.2f}s, dask {dask:.2f}s: "
              f"{(dask - threads) / args.tiny * 1000:.2f} ms more per batch on the cluster "
              f"({dask / args.tiny * 1000:.2f} ms per batch in all)")


if __name__ == "__main__":
    main()
