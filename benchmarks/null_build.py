"""Null-build benchmark: how long `dd-build` takes when every stage is already up to date.

Issue 14 sets targets for a null build (every stage up to date) and for start-up. With no
--stages/--batches/--shape, this script prints that table for dd-build, one row per workload,
each figure next to its target:

  null build, 1,000-stage layered DAG, 1 batch each     target <= 0.10 s
  null build, 1,000 stages x 100 batch files (layered)  target <= 0.45 s
  null build, 5,000-stage layered DAG, 1 batch each     target <= 0.35 s
  `dd-build --version`                                   target <= 0.04 s
  peak memory, null build at 5,000 stages               target <= 150 MiB
  `python -c pass`: the interpreter's own start-up, the floor of every row

    python benchmarks/null_build.py --workdir /dev/shm/nb-bench

Each figure is the median of --repeat runs of the real CLI (`python -m buildtool`, from the
checkout this script is in, or --repo), wall time of the child process (and its CPU time,
user + system: on a machine shared with other work, the steadier of the two), bytecode caching on as
for an installed tool. The runs go round-robin over the rows, so a burst of load elsewhere on the
machine spreads over every row instead of spoiling one. Peak RSS is exact for each run: every run
is a fresh child, spawned by a tiny launcher and reaped with os.wait4, whose ru_maxrss covers
that child (and any child of its own) alone. Before timing, each project is built once and a `--json` null build must report
every stage up to date, or the script stops. The load average is printed with the table: the
figures mean little on a busy machine.

With --stages/--batches/--shape (the older grid mode), it builds projects of N generate stages
with B one-row batches each, for every N and shape, and prints first-build and null-build times:

    python benchmarks/null_build.py --stages 100,1000 --batches 100 --shape both

Shapes:
  chain    s0000 <- s0001 <- ... : each stage lists the previous one in `inputs:`.
  layered  layers of ~sqrt(N) stages; each stage lists 1 or 2 stages of the previous layer
           in `inputs:` (fan-in). No `seed:`, so every stage keeps num_records = B.
benchmarks/peers/run.py builds the same layered DAG with make, doit, Snakemake and DVC.

A null build after a null build with the same command line is answered from the null-build
stamp (buildtool/nullstamp.py); the rows "first null build after a change" time the full path
instead (the stamp removed before each run, untimed), which also writes the stamp. The rows
"full path without the stamp" time the same full path with the stamp switched off (NO_STAMP:
neither read nor written, nor its stats kept), as dd-build was before the stamp: what the
stamp costs the first null build after a change is the difference, printed under the table.

The first build of 1,000 x 100 writes 100k batch files (synced in groups): ~40 s on tmpfs,
longer on a disk (`--workdir /dev/shm/...`). With
`--workdir`, an unchanged project is kept and reused, so a second run only times null builds.
Without it the projects go to a temporary folder (in /dev/shm where there is one), removed at
the end. --quick leaves out the 1,000 x 100 row.

To measure a change, time the checkout before it alongside (interleaved, each on its own copy
of the projects, so a burst of load elsewhere hits both alike):

    git worktree add /tmp/before HEAD~3
    python benchmarks/null_build.py --workdir /dev/shm/nb --against /tmp/before --repeat 7
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


@dataclass
class Measured:
    """One child process run to its end: wall time, its own peak RSS, what it printed."""

    seconds: float
    maxrss_mib: float
    returncode: int
    stdout: str
    stderr: str
    cpu: float = 0.0  # user + system CPU seconds of the child (and any child of its own)


# A child's ru_maxrss starts from the RSS of the process that spawned it (Linux keeps the
# high-water mark of the memory image that exec replaces), so a child spawned by this script
# would count this script's own memory. A tiny launcher (python -I -S, ~8 MiB, below any Python
# child) spawns each measured child instead: os.wait4 then gives that one child's peak RSS, and
# the launcher's own start-up is not in the wall time it reports.
LAUNCHER = """\
import os, sys, time
out, err, cwd, *argv = sys.argv[1:]
opened = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
           (os.POSIX_SPAWN_OPEN, 1, out, opened, 0o600),
           (os.POSIX_SPAWN_OPEN, 2, err, opened, 0o600)]
os.chdir(cwd)
started = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
print(seconds, os.waitstatus_to_exitcode(status), usage.ru_maxrss,
      usage.ru_utime + usage.ru_stime)
"""


def _maxrss_mib(ru_maxrss: int) -> float:
    # Linux reports KiB, macOS bytes.
    return ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def measure(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> Measured:
    """Run argv once in cwd, through LAUNCHER: its wall time and its own peak RSS."""
    with tempfile.TemporaryDirectory(prefix="dd-build-measure-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        launched = subprocess.run(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, str(out), str(err), str(cwd), *argv],
            env=env, capture_output=True, text=True)
        if launched.returncode != 0:
            sys.exit(f"could not run {list(argv)} in {cwd}:\n{launched.stderr}")
        seconds, returncode, maxrss, cpu = launched.stdout.split()
        return Measured(float(seconds), _maxrss_mib(int(maxrss)), int(returncode),
                        out.read_text(errors="replace"), err.read_text(errors="replace"),
                        float(cpu))


@functools.cache
def launcher_floor_mib() -> float:
    """The least peak RSS a child can show: that of `true`, i.e. the launcher's own."""
    return measure(["true"], Path.cwd()).maxrss_mib


def format_rss(mib: float) -> str:
    """A child near the launcher's floor (make, say) only shows that it is at most that big."""
    floor = launcher_floor_mib()
    return f"≤ {floor:.0f} MiB" if mib <= floor + 0.5 else f"{mib:.0f} MiB"


# `python -c NO_STAMP ARGS`: `python -m buildtool ARGS` with the null-build stamp switched off
# (cli._stamped runs the command in full and listens to nothing), for the rows "full path
# without the stamp". A checkout without the stamp runs as it is.
NO_STAMP = """\
import gc, runpy, sys
gc.disable()
from buildtool import cli
gc.freeze(); gc.unfreeze(); gc.enable()
if hasattr(cli, "_stamped"):
    def _full(command, args, out, run):
        return run(cli._load_at(args, out, *cli._locate(args, out)), None)
    cli._stamped = _full
sys.argv[0] = "buildtool"
runpy.run_module("buildtool", run_name="__main__", alter_sys=True)
"""


def cli_env(repo: Path = REPO) -> dict[str, str]:
    # Bytecode caching on, as for an installed tool: without it every run recompiles buildtool.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli(project: Path, *args: str, repo: Path = REPO) -> Measured:
    """The real CLI, `python -m buildtool ARGS`, of the checkout at `repo`, run in `project`."""
    return measure([sys.executable, "-m", "buildtool", *args], project, cli_env(repo))


def check(run: Measured, what: str) -> None:
    if run.returncode != 0:
        sys.exit(f"{what} failed with exit {run.returncode}:\n{run.stdout}\n{run.stderr}")


def count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def build_and_verify(project: Path, n: int, batches: int,
                     repo: Path = REPO) -> tuple[float, int]:
    """First build (or a reused one), then prove a null build does nothing. Not timed."""
    label = f"{project.name.split('-')[0]} N={n} B={batches}"
    reused = (project / "artifacts").exists()
    print(f"[{label}] {'build (reused project)' if reused else 'first build'} ...",
          file=sys.stderr, flush=True)
    first = cli(project, "-q", repo=repo)
    check(first, f"[{label}] first build")
    files = count_files(project / "artifacts")
    print(f"[{label}] {'build' if reused else 'first build'} {first.seconds:.1f}s, {files} "
          f"files under artifacts/" + ("" if reused else
                                       f" ({n * batches / first.seconds:.0f} batches/s)"),
          file=sys.stderr, flush=True)
    proc = cli(project, "--json", repo=repo)
    check(proc, f"[{label}] null build (--json)")
    actions = {s["action"] for s in json.loads(proc.stdout)["stages"]}
    if actions != {"up_to_date"}:
        sys.exit(f"[{label}] null build was not null: actions {sorted(actions)}")
    return first.seconds, files


# ---- grid mode (--stages/--batches/--shape) ----------------------------------------------

def bench_one(root: Path, shape: str, n: int, batches: int, repeat: int,
              repo: Path = REPO) -> dict[str, object]:
    project = make_project(root, shape, n, batches)
    first, files = build_and_verify(project, n, batches, repo)
    runs = []
    for _ in range(repeat):
        run = cli(project, "-q", repo=repo)
        check(run, "null build")
        runs.append(run)
    times = [r.seconds for r in runs]
    return {"shape": shape, "stages": n, "batches": batches, "files": files, "first_s": first,
            "median_s": statistics.median(times), "min_s": min(times),
            "rss": format_rss(statistics.median(r.maxrss_mib for r in runs))}


def grid(root: Path, args: argparse.Namespace) -> None:
    sizes = [int(s) for s in (args.stages or "100,1000").split(",") if s.strip()]
    shape = args.shape or "both"
    shapes = ["chain", "layered"] if shape == "both" else [shape]
    batches = 100 if args.batches is None else args.batches
    version_times = []
    for _ in range(args.repeat):
        run = cli(root, "--version", repo=args.repo)
        check(run, "--version")
        version_times.append(run.seconds)
    rows = [bench_one(root, shape, n, batches, args.repeat, args.repo)
            for n in sizes for shape in shapes]

    print(f"\npython {sys.version.split()[0]}, repeat={args.repeat}, workdir={root}, "
          f"load average {load_average()}")
    print(f"{'shape':<8} {'stages':>6} {'batches':>7} {'files':>7} {'first build':>12} "
          f"{'null median':>12} {'null min':>9} {'peak RSS':>9}")
    for r in rows:
        print(f"{r['shape']:<8} {r['stages']:>6} {r['batches']:>7} {r['files']:>7} "
              f"{r['first_s']:>11.1f}s {r['median_s']:>11.3f}s {r['min_s']:>8.3f}s "
              f"{r['rss']:>9}")
    print(f"{'--version':<8} {'':>6} {'':>7} {'':>7} {'':>12} "
          f"{statistics.median(version_times):>11.3f}s {min(version_times):>8.3f}s")


# ---- table mode (the table; the default) -----------------------------------------

@dataclass
class Row:
    """One row of the table: what to run, how its figure reads, and its target."""

    workload: str
    run: Callable[[], Measured]
    target: float | None  # seconds, or MiB when memory
    memory: bool = False
    runs: list[Measured] = field(default_factory=list)
    note: str = ""


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def table_rows(root: Path, repo: Path, quick: bool) -> list[Row]:
    """Build the projects (once; reused from --workdir) and return the rows to time."""
    py = sys.executable
    env = cli_env(repo)
    projects = {}
    sizes = [(1000, 1), (5000, 1)] if quick else [(1000, 1), (1000, 100), (5000, 1)]
    for n, b in sizes:
        projects[n, b] = make_project(root, "layered", n, b)
        build_and_verify(projects[n, b], n, b, repo)

    def null(n: int, b: int) -> Callable[[], Measured]:
        return lambda: measure([py, "-m", "buildtool", "-q"], projects[n, b], env)

    def first(n: int, b: int) -> Callable[[], Measured]:
        """The first null build after a change: no null-build stamp (the full path, which
        writes one); removing it is not timed."""
        def run() -> Measured:
            for stamp in (projects[n, b] / "artifacts" / ".compiled").glob("*.stamp"):
                stamp.unlink()
            return null(n, b)()
        return run

    def unstamped(n: int, b: int) -> Callable[[], Measured]:
        """The same full path with the stamp switched off (NO_STAMP)."""
        return lambda: measure([py, "-c", NO_STAMP, "-q"], projects[n, b], env)

    rows = [Row("null build, 1,000-stage layered DAG, 1 batch each", null(1000, 1), 0.10)]
    if quick:
        rows.append(Row("null build, 1,000 stages × 100 batch files", null(1000, 1), 0.45,
                        note="left out (--quick)"))
    else:
        rows.append(Row("null build, 1,000 stages × 100 batch files", null(1000, 100), 0.45))
    five = Row("null build, 5,000-stage layered DAG", null(5000, 1), 0.35)
    rows += [five,
             Row("`dd-build --version`",
                 lambda: measure([py, "-m", "buildtool", "--version"], root, env), 0.04),
             # Filled from the 5,000-stage runs above: each run's own peak RSS.
             Row("peak memory, null build at 5,000 stages", five.run, 150.0, memory=True,
                 runs=five.runs),
             Row("`python -c pass` (the floor: interpreter start-up)",
                 lambda: measure([py, "-c", "pass"], root, env), None)]
    for n, b in sizes:
        rows += [Row(f"first null build after a change (no stamp), {n:,} × {b}", first(n, b),
                     None),
                 Row(f"full path without the stamp, {n:,} × {b}", unstamped(n, b), None)]
    return rows


def stamp_costs(rows: list[Row]) -> list[str]:
    """What the stamp costs the first null build after a change: its median over that of the
    full path without the stamp, per workload."""
    by_name = {r.workload: r for r in rows}
    lines = []
    for row in rows:
        if not row.workload.startswith("first null build after a change"):
            continue
        size = row.workload.rsplit(", ", 1)[1]
        plain = by_name.get(f"full path without the stamp, {size}")
        if plain is None or not row.runs or not plain.runs:
            continue
        wall = statistics.median(r.seconds for r in row.runs) / \
            statistics.median(r.seconds for r in plain.runs)
        cpu = statistics.median(r.cpu for r in row.runs) / \
            statistics.median(r.cpu for r in plain.runs)
        lines.append(f"first null build after a change / full path without the stamp, {size}: "
                     f"CPU {cpu:.2f}, wall {wall:.2f}")
    return lines


def time_rows(rows: list[Row], repeat: int) -> None:
    """Round-robin: run r of every row before run r+1 of any, after one warm-up run each."""
    timed = [r for r in rows if not r.note and not r.memory]
    for row in timed:
        check(row.run(), f"warm-up of {row.workload}")
    for i in range(repeat):
        print(f"timing round {i + 1}/{repeat} ...", file=sys.stderr, flush=True)
        for row in timed:
            run = row.run()
            check(run, row.workload)
            row.runs.append(run)


def format_table(rows: list[Row], repeat: int) -> list[str]:
    header = ["workload", "dd-build (median)", f"min – max of {repeat}", "CPU (median)",
              "peak RSS (median)", "target", "meets target"]
    body = []
    for row in rows:
        if row.note:
            body.append([row.workload, row.note, "", "", "", _target(row), ""])
            continue
        if row.memory:
            values = [r.maxrss_mib for r in row.runs]
            fig = format_rss(statistics.median(values))
            spread = f"{min(values):.0f} – {max(values):.0f} MiB"
            rss = cpu = ""
        else:
            values = [r.seconds for r in row.runs]
            fig = f"{statistics.median(values):.3f} s"
            spread = f"{min(values):.3f} – {max(values):.3f} s"
            cpu = f"{statistics.median(r.cpu for r in row.runs):.3f} s"
            rss = format_rss(statistics.median(r.maxrss_mib for r in row.runs))
        meets = "" if row.target is None else (
            "yes" if statistics.median(values) <= row.target else "no")
        body.append([row.workload, fig, spread, cpu, rss, _target(row), meets])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(fmt(line) for line in body)]


def _target(row: Row) -> str:
    if row.target is None:
        return "–"
    return f"≤ {row.target:.0f} MiB" if row.memory else f"≤ {row.target:.2f} s"


def copy_project(project: Path, to: Path) -> Path:
    """A copy of `project` (file stats kept) under `to`, made again when its Workflowfile
    differs: each checkout keeps its own compiled workflow and planning index (two checkouts
    sharing one project would each find the other's caches stale on every run)."""
    copy = to / project.name
    wf = copy / "Workflowfile"
    if not (wf.is_file() and wf.read_bytes() == (project / "Workflowfile").read_bytes()):
        shutil.rmtree(copy, ignore_errors=True)
        to.mkdir(parents=True, exist_ok=True)
        shutil.copytree(project, copy, symlinks=True)
    return copy


def against(root: Path, args: argparse.Namespace) -> None:
    """--against REPO: the null-build rows timed for both checkouts, interleaved (run r of
    every row of both before run r+1 of any), each on its own copy of each project."""
    py = sys.executable
    sizes = [(1000, 1), (5000, 1)] if args.quick else [(1000, 1), (1000, 100), (5000, 1)]
    names = {(1000, 1): "1,000 stages × 1 batch", (1000, 100): "1,000 stages × 100 batch files",
             (5000, 1): "5,000 stages × 1 batch"}
    rows: list[tuple[str, Row, Row]] = []
    for n, b in sizes:
        project = make_project(root, "layered", n, b)
        build_and_verify(project, n, b, args.repo)
        other = copy_project(project, root / "against")
        build_and_verify(other, n, b, args.against)
        pair = [Row(str(repo), functools.partial(measure, [py, "-m", "buildtool", "-q"], where,
                                                 cli_env(repo)), None)
                for repo, where in ((args.against, other), (args.repo, project))]
        rows.append((names[n, b], pair[0], pair[1]))
    load_before = load_average()
    time_rows([r for _, before, now in rows for r in (before, now)], args.repeat)
    print(f"\nbefore: {args.against}\nnow:    {args.repo}\npython {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores, workdir {root}; {args.repeat} runs each, interleaved; "
          f"load average {load_before} before, {load_average()} after\n")
    print("| null build, layered DAG | before: wall median (min) | now: wall median (min) | "
          "now/before | before: CPU median | now: CPU median | now/before |")
    print("|---|---|---|---|---|---|---|")
    for name, before, now in rows:
        was = [r.seconds for r in before.runs]
        is_ = [r.seconds for r in now.runs]
        bc = statistics.median(r.cpu for r in before.runs)
        ac = statistics.median(r.cpu for r in now.runs)
        print(f"| {name} | {statistics.median(was):.3f} s ({min(was):.3f}) | "
              f"{statistics.median(is_):.3f} s ({min(is_):.3f}) | "
              f"{statistics.median(is_) / statistics.median(was):.2f} | {bc:.3f} s | "
              f"{ac:.3f} s | {ac / bc:.2f} |")


def table(root: Path, args: argparse.Namespace) -> None:
    version = cli(root, "--version", repo=args.repo)
    check(version, "--version")
    load_before = load_average()
    rows = table_rows(root, args.repo, args.quick)
    time_rows(rows, args.repeat)
    print(f"\n{version.stdout.strip()} from {args.repo}, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores, workdir {root}")
    print(f"medians of {args.repeat} runs each; load average (1, 5, 15 min) "
          f"{load_before} before, {load_average()} after\n")
    print("\n".join(format_table(rows, args.repeat)))
    costs = stamp_costs(rows)
    if costs:
        print("\n" + "\n".join(costs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--stages", help="grid mode: stage counts, comma separated (default 100,1000)")
    ap.add_argument("--batches", type=int,
                    help="grid mode: batches (one row each) per stage (default 100)")
    ap.add_argument("--shape", choices=("chain", "layered", "both"),
                    help="grid mode: DAG shape (default both)")
    ap.add_argument("--table", action="store_true",
                    help="print the issue's table (the default without --stages/--batches/--shape)")
    ap.add_argument("--quick", action="store_true", help="table: leave out 1,000 x 100")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per row (median; default 7)")
    ap.add_argument("--repo", type=Path, default=REPO,
                    help="the dd-build checkout to time (default: the one holding this script)")
    ap.add_argument("--against", type=Path,
                    help="table: time the null builds of this other checkout too (e.g. a "
                         "`git worktree` of the commit before a change), interleaved with "
                         "--repo's, each on its own copy of the projects")
    ap.add_argument("--workdir", help="where projects go (kept; reused when unchanged). "
                                      "Default: a temp dir (in /dev/shm where there is "
                                      "one), removed at the end")
    args = ap.parse_args()
    args.repo = args.repo.resolve()
    if args.against is not None:
        args.against = args.against.resolve()
    grid_mode = not args.table and any(
        v is not None for v in (args.stages, args.batches, args.shape))
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    tmp = None
    if args.workdir:
        root = Path(args.workdir).resolve()
        root.mkdir(parents=True, exist_ok=True)
    else:
        shm = Path("/dev/shm")
        tmp = tempfile.mkdtemp(prefix="dd-build-bench-", dir=shm if shm.is_dir() else None)
        root = Path(tmp)
    try:
        (grid if grid_mode else against if args.against else table)(root, args)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
