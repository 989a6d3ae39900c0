"""Batches in flight: wall time and speed-up of an I/O-bound generate stage; per-batch overhead.

Issue 10's benchmark (prints figures; not a timed test). Each figure is one real build
(`python -m buildtool -q`) of a fresh project in a temp folder:

1. One generate stage whose every row sleeps 20 ms (2,000 rows in batches of 20: 40 s one
   batch at a time) at `concurrency:` 1, 4, 16 and 64 (threads), and at the CPU count with
   `executor: process`. The stage's own time is read from its record (started_at to
   finished_at), so interpreter start-up and planning are left out; the build's wall time is
   printed too. Targets: >= 12x at 16, >= 40x at 64.
2. `-j 1` and `-j 4` on 8 independent such stages (--j-rows rows each, default 200: 8 x 4 s
   serial). Skipped, with a line saying so, while the CLI has no `-j`.
3. The overhead of the concurrent path: --tiny instant batches of one row (default 2,000),
   one at a time (the serial path) and with 4 in flight in threads, and in 2 worker processes;
   (concurrent - serial) / batches. Target: <= 1 ms per batch (threads).

    python benchmarks/concurrency.py [--rows 2000] [--j-rows 200] [--tiny 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STAGE_CODE = '''\
import time


def sleepy(ctx):
    out = []
    for i in range(ctx.size):
        time.sleep(ctx.params["sleep_s"])
        out.append({"id": ctx.offset + i, "value": ctx.rng.randint(0, 10**6)})
    return out
'''


def workflow(stages: int, rows: int, batch_size: int, sleep_s: float, concurrency: int,
             executor: str = "thread") -> str:
    text = "workflow: bench\nstages:\n"
    for n in range(stages):
        text += (f"  s{n}:\n    generate: code/stages.py:sleepy\n    num_records: {rows}\n"
                 f"    batch_size: {batch_size}\n    params: {{sleep_s: {sleep_s}}}\n"
                 f"    concurrency: {concurrency}\n    executor: {executor}\n")
    return text


def build(root: Path, text: str, *args: str) -> tuple[float, float]:
    """(the build's wall time, the sum of its stages' own times) of a fresh build."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "code").mkdir(parents=True)
    (root / "code" / "stages.py").write_text(STAGE_CODE)
    (root / "Workflowfile").write_text(text)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "buildtool", "-q", *args], cwd=root, env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"the build failed ({done.returncode}):\n{done.stderr}")
    own = 0.0
    for record in (root / "artifacts" / "bench").glob("*/stage.json"):
        data = json.loads(record.read_text())
        own += data["finished_at"] - data["started_at"]
    return wall, own


def has_jobs_flag() -> bool:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "buildtool", "--help"], env=env,
                          capture_output=True, text=True)
    return "--jobs" in done.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2000, help="rows of the stage (default 2000)")
    ap.add_argument("--j-rows", type=int, default=200,
                    help="rows of each of the 8 stages of the -j figures (default 200)")
    ap.add_argument("--tiny", type=int, default=2000,
                    help="instant one-row batches of the overhead figure (default 2000)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dd-bench-concurrency-"))
    cpus = os.cpu_count() or 1
    print(f"machine: {cpus} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    try:
        print(f"\n1. one stage: {args.rows} rows x 20 ms, batches of 20")
        print("   (stage s: the stage's own time, from its record; fixed s: the same stage with "
              "no sleep, i.e. imports, records, writes; sleep speed-up: of stage - fixed)")
        print(f"   {'concurrency':<18}{'stage s':>9}{'build s':>9}{'speed-up':>10}"
              f"{'fixed s':>9}{'sleep speed-up':>16}")
        base = fixed_base = None
        for concurrency, executor in [(1, "thread"), (4, "thread"), (16, "thread"),
                                      (64, "thread"), (cpus, "process")]:
            wall, own = build(work / "one", workflow(1, args.rows, 20, 0.02, concurrency,
                                                     executor))
            _, fixed = build(work / "one", workflow(1, args.rows, 20, 0.0, concurrency,
                                                    executor))
            base, fixed_base = base or own, fixed_base or fixed
            label = f"{concurrency} ({executor})"
            print(f"   {label:<18}{own:9.2f}{wall:9.2f}{base / own:9.1f}x{fixed:9.2f}"
                  f"{(base - fixed_base) / max(own - fixed, 1e-3):15.1f}x", flush=True)

        print(f"\n2. 8 independent stages of {args.j_rows} rows x 20 ms, -j 1 and -j 4")
        if has_jobs_flag():
            first = None
            for jobs in (1, 4):
                wall, _ = build(work / "jobs", workflow(8, args.j_rows, 20, 0.02, 1),
                                "-j", str(jobs))
                first = first or wall
                print(f"   -j {jobs}: {wall:7.2f} s build, {first / wall:5.1f}x", flush=True)
        else:
            print("   skipped: this dd-build has no -j/--jobs yet (issue 10, slice B)")

        print(f"\n3. overhead: {args.tiny} instant batches of one row")
        _, serial = build(work / "tiny", workflow(1, args.tiny, 1, 0.0, 1))
        print(f"   serial path: {serial:.2f} s, {serial / args.tiny * 1000:.3f} ms per batch")
        for concurrency, executor in [(4, "thread"), (min(2, cpus), "process")]:
            _, own = build(work / "tiny", workflow(1, args.tiny, 1, 0.0, concurrency, executor))
            extra = (own - serial) / args.tiny * 1000
            print(f"   {concurrency} in flight ({executor}): {own:.2f} s, "
                  f"{own / args.tiny * 1000:.3f} ms per batch, {extra:+.3f} ms per batch "
                  "over the serial path", flush=True)
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
