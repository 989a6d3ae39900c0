"""Null-build benchmark: how long `dd-build` takes when every stage is already up to date.

DESIGN.md §6 promises that a null build of 1,000 stages x 100 batch files takes well under a
second, and that `dd-build --version` starts fast. This script generates projects of N generate
stages with B one-row batches each, builds each once with the real CLI, then times R null
builds (wall time of the `python -m buildtool -q` subprocess) and prints one table.

Shapes:
  chain    s0000 <- s0001 <- ... : each stage lists the previous one in `inputs:`.
  layered  layers of ~sqrt(N) stages; each stage lists 1 or 2 stages of the previous layer
           in `inputs:` (fan-in). No `seed:`, so every stage keeps num_records = B.

Run by hand, e.g.:
  python benchmarks/null_build.py --stages 100,1000 --batches 100

The first build of 1000 x 100 writes 100k batch files with three fsyncs each (file, folder,
journal line): a few minutes on a disk, ~5x less on tmpfs (`--workdir /dev/shm/...`). With
`--workdir`, an unchanged project is kept and reused, so a second run only times null builds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STAGE_CODE = '''\
def one(ctx):
    return [{"i": ctx.offset}]
'''


def chain_inputs(n: int) -> list[list[int]]:
    return [[] if i == 0 else [i - 1] for i in range(n)]


def layered_inputs(n: int) -> list[list[int]]:
    """Stage indices each stage depends on: layers of ~sqrt(n), 1-2 parents each."""
    width = max(1, round(math.sqrt(n)))
    deps: list[list[int]] = []
    for i in range(n):
        layer, j = divmod(i, width)
        if layer == 0:
            deps.append([])
            continue
        prev_start = (layer - 1) * width
        prev_len = min(width, n - prev_start)
        first = prev_start + j % prev_len
        parents = [first]
        if j % 2 == 1 and prev_len > 1:  # every other stage fans in two parents
            parents.append(prev_start + (j + 1) % prev_len)
        deps.append(parents)
    return deps


def workflow_text(deps: list[list[int]], batches: int) -> str:
    lines = ["workflow: bench", "stages:"]
    for i, parents in enumerate(deps):
        lines += [f"  s{i:04d}:",
                  "    generate: code/gen.py:one",
                  f"    num_records: {batches}",
                  "    batch_size: 1"]
        if parents:
            lines.append("    inputs: [" + ", ".join(f"s{p:04d}" for p in parents) + "]")
    return "\n".join(lines) + "\n"


def make_project(root: Path, shape: str, n: int, batches: int) -> Path:
    project = root / f"{shape}-{n}x{batches}"
    deps = chain_inputs(n) if shape == "chain" else layered_inputs(n)
    text = workflow_text(deps, batches)
    wf = project / "Workflowfile"
    if wf.is_file() and wf.read_text() == text:
        return project  # same project as last time: its artifacts can be reused
    if project.exists():
        shutil.rmtree(project)
    (project / "code").mkdir(parents=True)
    (project / "code" / "gen.py").write_text(STAGE_CODE)
    wf.write_text(text)
    return project


def cli(project: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    # Bytecode caching on, as for an installed tool: without it every run recompiles buildtool.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=project, env=env,
                          capture_output=True, text=True)
    return time.perf_counter() - started, proc


def check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        sys.exit(f"{what} failed with exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")


def count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def bench_one(root: Path, shape: str, n: int, batches: int, repeat: int) -> dict[str, object]:
    project = make_project(root, shape, n, batches)
    print(f"[{shape} N={n} B={batches}] first build ...", file=sys.stderr, flush=True)
    first, proc = cli(project, "-q")
    check(proc, "first build")
    files = count_files(project / "artifacts")
    print(f"[{shape} N={n} B={batches}] first build {first:.1f}s, {files} files under "
          f"artifacts/ ({n * batches / first:.0f} batches/s)", file=sys.stderr, flush=True)

    # Not timed: prove the null build really does nothing.
    _, proc = cli(project, "--json")
    check(proc, "null build (--json)")
    actions = {s["action"] for s in json.loads(proc.stdout)["stages"]}
    if actions != {"up_to_date"}:
        sys.exit(f"[{shape} N={n}] null build was not null: actions {sorted(actions)}")

    times = []
    for _ in range(repeat):
        t, proc = cli(project, "-q")
        check(proc, "null build")
        times.append(t)
    return {"shape": shape, "stages": n, "batches": batches, "files": files, "first_s": first,
            "median_s": statistics.median(times), "min_s": min(times)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--stages", default="100,1000", help="stage counts, comma separated")
    ap.add_argument("--batches", type=int, default=100, help="batches (one row each) per stage")
    ap.add_argument("--shape", choices=("chain", "layered", "both"), default="both")
    ap.add_argument("--repeat", type=int, default=5, help="timed null builds per project")
    ap.add_argument("--workdir", help="where projects go (kept; reused when unchanged). "
                                      "Default: a temp dir, removed at the end")
    args = ap.parse_args()
    sizes = [int(s) for s in args.stages.split(",") if s.strip()]
    shapes = ["chain", "layered"] if args.shape == "both" else [args.shape]

    tmp = None
    if args.workdir:
        root = Path(args.workdir).resolve()
        root.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="dd-build-bench-")
        root = Path(tmp)
    try:
        version_times = []
        for _ in range(args.repeat):
            t, proc = cli(root, "--version")
            check(proc, "--version")
            version_times.append(t)
        rows = [bench_one(root, shape, n, args.batches, args.repeat)
                for n in sizes for shape in shapes]
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"\npython {sys.version.split()[0]}, repeat={args.repeat}, workdir={root}")
    print(f"{'shape':<8} {'stages':>6} {'batches':>7} {'files':>7} {'first build':>12} "
          f"{'null median':>12} {'null min':>9}")
    for r in rows:
        print(f"{r['shape']:<8} {r['stages']:>6} {r['batches']:>7} {r['files']:>7} "
              f"{r['first_s']:>11.1f}s {r['median_s']:>11.3f}s {r['min_s']:>8.3f}s")
    print(f"{'--version':<8} {'':>6} {'':>7} {'':>7} {'':>12} "
          f"{statistics.median(version_times):>11.3f}s {min(version_times):>8.3f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
