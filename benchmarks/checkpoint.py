"""Checkpointing and run-stage start-up: dd-build against the same work done by hand.

Prints three tables (medians of --repeat runs, and the load average before and after):

(a) big batches: a generate stage of --rows rows (default 1M) in --batches batches (100),
    built with `dd-build --force big`, against a script that makes the same tables with the
    same function and writes each with `pq.write_table` to a file of its own. Two ratios: the
    stage alone (the record's started_at → finished_at, against the script's loop from its
    first call to its last write, both including the import of the stage's module) and the
    whole process (`dd-build` start-up and planning included, against `python script.py`).
(b) tiny batches: a generate stage of --tiny one-row batches; batches per second of the stage
    alone and of the whole `dd-build --force tiny` process, and of the raw-pyarrow script's
    loop on the same one-row tables (each file's creation is what a disk makes slow).
(c) run-stage start-up: a run stage whose script imports pandas (when installed) or pyarrow's
    parquet, compute, dataset and csv modules with numpy, plus a helper module of the project;
    `dd-build --force report` against the same command by hand, and against `dd-build --force
    noop` (the same stage running `true`: what dd-build itself costs). The first run is the
    first after the project is made (no __pycache__ of the project yet); then --repeat more.
    The ratio that the start-up target is about is the stage's own time under dd-build (the
    record's started_at → finished_at: outputs cleared, bytecode checked, the command run and
    its outputs hashed) against the same command by hand.

(a) and (b) run once per --workdir (default: /dev/shm and the disk's /tmp, as both matter:
tmpfs has free fsyncs, a disk does not). Run by hand:

  PYTHONPATH=$PWD python3 benchmarks/checkpoint.py
  PYTHONPATH=$PWD python3 benchmarks/checkpoint.py --workdir /tmp/ckpt --repeat 7 --rows 1000000
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
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BIG_CODE = '''\
import pyarrow as pa
import pyarrow.compute as pc


def make(ctx):
    ids = pa.array(range(ctx.offset, ctx.offset + ctx.size), pa.int64())
    value = pc.multiply(pc.cast(ids, pa.float64()), 0.5)
    text = pc.binary_join_element_wise("row-", pc.cast(ids, pa.string()), "")
    kind = pc.cast(pc.bit_wise_and(ids, 7), pa.string())
    return pa.table({"id": ids, "value": value, "text": text, "kind": kind})
'''

TINY_CODE = '''\
def make(ctx):
    return [{"id": ctx.offset + i, "v": ctx.rng.random()} for i in range(ctx.size)]
'''

# What the raw-pyarrow side runs: the same function, the same tables, pq.write_table per batch
# (a list of rows made a table as pyarrow does it).
RAW_SCRIPT = '''\
import random, sys, time
from pathlib import Path
from types import SimpleNamespace

started = time.perf_counter()
sys.path.insert(0, "code")
module = __import__(sys.argv[1])
import pyarrow as pa
import pyarrow.parquet as pq

rows, size, out = int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
out.mkdir(parents=True, exist_ok=True)
for index, offset in enumerate(range(0, rows, size)):
    ctx = SimpleNamespace(batch_index=index, offset=offset, size=min(size, rows - offset),
                          rng=random.Random(index))
    table = module.make(ctx)
    if isinstance(table, list):
        table = pa.Table.from_pylist(table)
    pq.write_table(table, out / f"batch-{index:06d}.parquet")
print(time.perf_counter() - started)
'''

REPORT_SCRIPT = '''\
import os
import sys
import helpers
try:
    import pandas
except ImportError:
    pandas = None
try:
    import numpy
except ImportError:
    numpy = None
import pyarrow.compute
import pyarrow.csv
import pyarrow.dataset
import pyarrow.parquet as pq

table = pq.read_table(sys.argv[1])
rows = table.to_pandas().shape[0] if pandas is not None else table.num_rows
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
open(sys.argv[2], "w").write(helpers.line(rows))
'''

HELPERS = '''\
def line(rows):
    return f"{rows} rows\\n"
'''


def env() -> dict[str, str]:
    """Bytecode caching on, as for an installed tool and a user's shell."""
    out = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out["PYTHONPATH"] = str(REPO) + os.pathsep + out.get("PYTHONPATH", "")
    return out


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed with exit {proc.returncode}:\n{proc.stdout}\n"
                 f"{proc.stderr}")
    return took, proc.stdout


def dd_build(project: Path, *args: str) -> float:
    return timed([sys.executable, "-m", "buildtool", "-q", *args], project)[0]


def stage_seconds(project: Path, workflow: str, stage: str) -> float:
    record = json.loads((project / "artifacts" / workflow / stage / "stage.json").read_text())
    return float(record["finished_at"]) - float(record["started_at"])


def medians(runs: int, one: Callable[[], tuple[float, ...]]) -> tuple[float, ...]:
    samples = [one() for _ in range(runs)]
    return tuple(statistics.median(column) for column in zip(*samples, strict=True))


def project(root: Path, name: str, workflow: str, files: dict[str, str]) -> Path:
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    for rel, text in {"Workflowfile": workflow, **files}.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    return path


def bench_big(root: Path, rows: int, batches: int, repeat: int) -> tuple[float, ...]:
    size = -(-rows // batches)
    wf = (f"workflow: ckpt\nstages:\n  big:\n    generate: code/big.py:make\n"
          f"    num_records: {rows}\n    batch_size: {size}\n")
    path = project(root, "big", wf, {"code/big.py": BIG_CODE, "raw.py": RAW_SCRIPT})
    dd_build(path)  # warm: the stage's first build, caches of the OS

    def one() -> tuple[float, ...]:
        shutil.rmtree(path / "raw-out", ignore_errors=True)
        raw_wall, out = timed([sys.executable, "raw.py", "big", str(rows), str(size), "raw-out"],
                              path)
        dd_build(path, "clean", "big")  # not timed: both sides write into an empty folder
        wall = dd_build(path, "--force", "big")
        return wall, stage_seconds(path, "ckpt", "big"), raw_wall, float(out)

    wall, stage, raw_wall, raw_loop = medians(repeat, one)
    same = all((path / "raw-out" / f"batch-{i:06d}.parquet").read_bytes() ==
               (path / "artifacts/ckpt/big/batches" / f"batch-{i:06d}.parquet").read_bytes()
               for i in range(batches))
    if not same:
        sys.exit("dd-build's batch files differ from pyarrow's own")
    return stage, raw_loop, stage / raw_loop, wall, raw_wall, wall / raw_wall


def bench_tiny(root: Path, n: int, repeat: int) -> tuple[float, ...]:
    wf = (f"workflow: ckpt\nstages:\n  tiny:\n    generate: code/tiny.py:make\n"
          f"    num_records: {n}\n    batch_size: 1\n")
    path = project(root, "tiny", wf, {"code/tiny.py": TINY_CODE, "raw.py": RAW_SCRIPT})
    dd_build(path)

    def one() -> tuple[float, ...]:
        shutil.rmtree(path / "raw-out", ignore_errors=True)
        raw = float(timed([sys.executable, "raw.py", "tiny", str(n), "1", "raw-out"], path)[1])
        dd_build(path, "clean", "tiny")  # not timed: the last run's batch files are not removed
        wall = dd_build(path, "--force", "tiny")
        return wall, stage_seconds(path, "ckpt", "tiny"), raw

    wall, stage, raw = medians(repeat, one)
    return n / stage, n / wall, stage, wall, n / raw


def bench_startup(root: Path, repeat: int) -> tuple[list[float], ...]:
    python = sys.executable
    wf = f"""workflow: ckpt
stages:
  report:
    run: {python} code/report.py {{inputs}} {{outputs}}
    inputs: [data/in.parquet]
    code: [code/report.py]
    outputs: [out/report.txt]
  noop:
    run: ": > {{outputs}}"
    inputs: [data/in.parquet]
    outputs: [noop.txt]
"""
    path = project(root, "startup", wf, {"code/report.py": REPORT_SCRIPT,
                                          "code/helpers.py": HELPERS})
    (path / "data").mkdir()
    timed([python, "-c", "import pyarrow as pa, pyarrow.parquet as pq; "
           "pq.write_table(pa.table({'a': [1, 3], 'b': [2, 4]}), 'data/in.parquet')"], path)
    hand_cmd = [python, "code/report.py", "data/in.parquet", "out/hand.txt"]
    hand, under, stage, noop = [], [], [], []
    for _ in range(repeat + 1):
        under.append(dd_build(path, "--force", "report"))
        stage.append(stage_seconds(path, "ckpt", "report"))
        hand.append(timed(hand_cmd, path)[0])
        noop.append(dd_build(path, "--force", "noop"))
    return hand, under, stage, noop


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", action="append",
                    help="where projects go (repeatable; default: /dev/shm and /tmp)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--tiny", type=int, default=2000, help="one-row batches of (b)")
    ap.add_argument("--only", choices=("big", "tiny", "startup"), action="append")
    args = ap.parse_args()
    parts = args.only or ["big", "tiny", "startup"]
    dirs = args.workdir or [d for d in ("/dev/shm", tempfile.gettempdir()) if os.path.isdir(d)]
    print(f"python {sys.version.split()[0]}, repeat={args.repeat}, load average {load()}")
    roots = []
    try:
        for base in dirs:
            Path(base).mkdir(parents=True, exist_ok=True)
            roots.append(Path(tempfile.mkdtemp(prefix="dd-build-ckpt-", dir=base)))
        for root in roots:
            if "big" in parts:
                s, r, q, w, rw, wq = bench_big(root, args.rows, args.batches, args.repeat)
                print(f"(a) {root.parent}: {args.rows:,} rows in {args.batches} batches: stage "
                      f"{s:.3f}s vs raw pyarrow loop {r:.3f}s = {q:.2f}x; whole process "
                      f"{w:.3f}s vs {rw:.3f}s = {wq:.2f}x  (load {load()})")
            if "tiny" in parts:
                rate, wall_rate, s, w, raw = bench_tiny(root, args.tiny, args.repeat)
                print(f"(b) {root.parent}: {args.tiny} one-row batches: {rate:,.0f} batches/s "
                      f"in the stage ({s:.3f}s), {wall_rate:,.0f}/s for the whole process "
                      f"({w:.3f}s); raw pyarrow loop {raw:,.0f}/s  (load {load()})")
        if "startup" in parts:
            hand, under, stage, noop = bench_startup(roots[0], args.repeat)
            try:
                import pandas  # noqa: F401
                what = "pandas + pyarrow"
            except ImportError:
                what = "pyarrow (parquet, compute, dataset, csv) + numpy; pandas not installed"
            print(f"(c) run stage importing {what}:")
            med = statistics.median
            for label, a, b, s, c in (
                    ("first", hand[0], under[0], stage[0], noop[0]),
                    ("then (median)", med(hand[1:]), med(under[1:]), med(stage[1:]),
                     med(noop[1:]))):
                print(f"    {label}: by hand {a:.3f}s; the stage under dd-build {s:.3f}s "
                      f"({s / a:.2f}x by hand); whole `dd-build --force report` {b:.3f}s "
                      f"({b / a:.2f}x), of a `true` command {c:.3f}s  (load {load()})")
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
