"""Restoring a stage from the build cache against running it (issue 11).

A generate stage of --batches batches (default 100) of --rows rows each (default 10), whose
rows cost --row-ms milliseconds each (default 20: a stand-in for an LLM call), is built once
(filling the cache), then its param is changed and built (a second entry), then changed back:
that third build restores the stage. Timed, as medians of --repeat runs of each:

  run       `dd-build --force big` (every batch runs: batches x rows x row-ms of work)
  restore   the revert build: `dd-build` with the param back (every batch file linked back
            from the cache, each checked against its digest, the record written)
  null      `dd-build` once it is up to date (what a build that restores nothing costs)
  alone     the restore itself (the restored record's started_at → finished_at)

Prints the times, the ratio run/restore, and the load average. Run by hand:

  PYTHONPATH=$PWD python3 benchmarks/cache_restore.py
  PYTHONPATH=$PWD python3 benchmarks/cache_restore.py --batches 100 --rows 10 --row-ms 20 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CODE = '''
import time

def make(ctx):
    out = []
    for i in range(ctx.size):
        time.sleep(ctx.params["row_ms"] / 1000)  # a row's call
        out.append({"id": ctx.offset + i, "text": f"row {ctx.offset + i} k={ctx.params['k']}",
                    "score": ctx.rng.random()})
    return out
'''

WORKFLOW = '''
workflow: bench
stages:
  big:
    generate: code/stage.py:make
    num_records: {records}
    batch_size: {rows}
    params: {{k: 1, row_ms: {row_ms}}}
'''


def dd(root: Path, *args: str) -> tuple[float, dict]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("DD_BUILD_CACHE", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "buildtool", "--json", *args], cwd=root,
                          env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"dd-build {' '.join(args)} failed:\n{done.stderr}")
    return took, json.loads(done.stdout)["stages"][0]


def set_k(root: Path, k: int) -> None:
    path = root / "Workflowfile"
    text = path.read_text()
    head, _, rest = text.partition("{k: ")
    path.write_text(head + "{k: " + str(k) + rest[rest.index(","):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10, help="rows per batch")
    parser.add_argument("--row-ms", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where the project goes (default: tmp)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="dd-cache-bench-", dir=args.workdir))
    try:
        root = base / "proj"
        (root / "code").mkdir(parents=True)
        (root / "code" / "stage.py").write_text(CODE)
        (root / "Workflowfile").write_text(WORKFLOW.format(
            records=args.batches * args.rows, rows=args.rows, row_ms=args.row_ms))
        load_before = os.getloadavg()[0]
        runs, restores, nulls, alone = [], [], [], []
        dd(root)  # k=1 built and kept
        for i in range(args.repeat):
            took, stage = dd(root, "--force", "big")
            assert stage["result"] == "completed" and stage["batches_run"] == args.batches
            runs.append(took)
            set_k(root, 2 + i)
            dd(root)  # another entry
            set_k(root, 1)
            took, stage = dd(root)
            assert stage["result"] == "restored" and stage["batches_run"] == 0, stage
            restores.append(took)
            record = json.loads((root / "artifacts" / "bench" / "big" / "stage.json").read_text())
            alone.append(record["finished_at"] - record["started_at"])
            took, stage = dd(root)
            assert stage["result"] == "up_to_date"
            nulls.append(took)
        run, restore, null, own = (statistics.median(x) for x in (runs, restores, nulls, alone))
        work = args.batches * args.rows * args.row_ms / 1000
        print(f"stage: {args.batches} batches x {args.rows} rows x {args.row_ms:g} ms "
              f"= {work:.1f} s of row work; medians of {args.repeat}")
        print(f"  run (--force)   {run:8.3f} s")
        print(f"  restore         {restore:8.3f} s   ({run / restore:.0f}x faster than running)")
        print(f"  null build      {null:8.3f} s   (the revert build costs {restore - null:.3f} s "
              "more: the edited Workflowfile is read again, then the restore)")
        print(f"  restore alone   {own:8.3f} s   (the record's start to its end: objects "
              "checked and linked, the record written)")
        print(f"  load average    {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
