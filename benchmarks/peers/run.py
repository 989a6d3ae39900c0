"""Null builds of dd-build side by side with make, doit, Snakemake and DVC, on one workload.

Issue 14 compares dd-build's null build (every stage up to date) with its peers'. This script
builds the same layered DAG with each tool, once, then times --repeat null builds of each and
prints one side-by-side table (median seconds, tool versions, peak RSS). It is a tool to run by
hand: CI does not run it and no test imports the tools.

    python benchmarks/peers/run.py --install          # first time: peers into scratch venvs
    python benchmarks/peers/run.py                    # 1,000 stages, every tool
    python benchmarks/peers/run.py --stages 1000,5000 --skip dvc --repeat 7

The workload is the layered DAG of benchmarks/null_build.py (the same generator): N stages in
layers of ~sqrt(N), each stage depending on 1 or 2 stages of the layer before and on its code.
Each tool gets it in its own idiom:

  make       Makefile: one rule per stage, `out/sNNNN.txt: code/stage.sh <parents' outputs>`
             with `sh code/stage.sh $@`; the system's make (not installed by --install).
  doit       dodo.py: one task per stage with file_dep (code and parents' outputs) and targets;
             doit's default checker (MD5, with the mtime shortcut) and default dbm database.
  Snakemake  Snakefile: `rule all` over every output and one wildcard rule whose input
             function gives a stage's code and parents; null build `snakemake --cores 1`.
  DVC        dvc.yaml: one stage per stage, deps (code, parents' outputs) and outs (cached, the
             default), in a git repository (`git init`, `dvc init`); null build `dvc repro`.
             Analytics and the update check are off (DVC_NO_ANALYTICS, core.check_update).
  dd-build   Workflowfile: one generate stage per stage, 1 batch of 1 row, `inputs:` the
             parents; run as `python -m buildtool -q` from this checkout (or --repo).

The stage command of the peers, `sh code/stage.sh OUT`, writes one line to OUT: the first build
runs it once per stage; a null build must run nothing. Before timing, the script checks for each
tool that the first build made every stage's output and that the tool itself says there is
nothing to do (make -q, `doit list --status`, `snakemake -n`, `dvc status`, dd-build --json);
after timing, that no output was rewritten (mtimes unchanged) and again that nothing is to do.
A tool that fails a check gets FAILED in its column instead of a figure, the reason under the
table, and the script exits 1. --write-only writes the projects and runs no tool (to read them).

--install creates one venv per peer under ~/.cache/dd-build-peers/ (doit, snakemake, dvc) and
pip-installs the newest version of the tool there (--upgrade: rerun to update). A peer that is
not installed gets "not installed: run with --install" in its column; a peer found neither
there nor on PATH is not run. --skip TOOL leaves a tool out: DVC's first build of 1,000 stages
took 36 minutes on a 2-core machine (each stage costs more the more stages there are: at 5,000,
--skip dvc), and each of its null builds ~10-20 s. Projects go to --workdir (default
/dev/shm/dd-build-peers, else ~/.cache/dd-build-peers/work; /dev/shm is emptied on reboot) and
are reused while unchanged, so only the first run pays the first builds.

The machine should be otherwise idle: the load average is printed with the table, and runs go
round-robin over the tools so that a burst of load elsewhere spreads over every column.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCHMARKS))
import null_build  # noqa: E402  (benchmarks/ is no package: the shared generator lives there)

CACHE = Path.home() / ".cache" / "dd-build-peers"
STAGE_SCRIPT = 'printf "%s\\n" "$1" > "$1"\n'
NOT_INSTALLED = "not installed: run with --install"

Files = dict[str, str]  # path relative to the project -> text


def name(i: int) -> str:
    return f"s{i:04d}"


def out(i: int) -> str:
    return f"out/{name(i)}.txt"


# ---- workload generators: DAG -> the files of one tool's project --------------------------

def make_files(deps: list[list[int]]) -> Files:
    lines = [f"# {len(deps)}-stage layered DAG, written by benchmarks/peers/run.py", "",
             ".PHONY: all", "all: " + " ".join(out(i) for i in range(len(deps))), ""]
    for i, parents in enumerate(deps):
        lines += [f"{out(i)}: " + " ".join(["code/stage.sh", *(out(p) for p in parents)]),
                  "\tsh code/stage.sh $@", ""]
    return {"Makefile": "\n".join(lines), "code/stage.sh": STAGE_SCRIPT}


def doit_files(deps: list[list[int]]) -> Files:
    dodo = f'''"""{len(deps)}-stage layered DAG, written by benchmarks/peers/run.py."""

DEPS = {deps!r}


def task_stages():
    for i, parents in enumerate(DEPS):
        yield {{
            "basename": f"s{{i:04d}}",
            "actions": [f"sh code/stage.sh out/s{{i:04d}}.txt"],
            "file_dep": ["code/stage.sh", *(f"out/s{{p:04d}}.txt" for p in parents)],
            "targets": [f"out/s{{i:04d}}.txt"],
        }}
'''
    return {"dodo.py": dodo, "code/stage.sh": STAGE_SCRIPT}


def snakemake_files(deps: list[list[int]]) -> Files:
    snakefile = f'''# {len(deps)}-stage layered DAG, written by benchmarks/peers/run.py

DEPS = {deps!r}

wildcard_constraints:
    name="s[0-9]+"


rule all:
    input:
        [f"out/s{{i:04d}}.txt" for i in range(len(DEPS))],


def stage_inputs(wildcards):
    parents = DEPS[int(wildcards.name[1:])]
    return ["code/stage.sh", *(f"out/s{{p:04d}}.txt" for p in parents)]


rule stage:
    input:
        stage_inputs,
    output:
        "out/{{name}}.txt",
    shell:
        "sh code/stage.sh {{output}}"
'''
    return {"Snakefile": snakefile, "code/stage.sh": STAGE_SCRIPT}


def dvc_files(deps: list[list[int]]) -> Files:
    lines = [f"# {len(deps)}-stage layered DAG, written by benchmarks/peers/run.py", "stages:"]
    for i, parents in enumerate(deps):
        lines += [f"  {name(i)}:",
                  f"    cmd: sh code/stage.sh {out(i)}",
                  "    deps:",
                  "      - code/stage.sh",
                  *(f"      - {out(p)}" for p in parents),
                  "    outs:",
                  f"      - {out(i)}"]
    return {"dvc.yaml": "\n".join(lines) + "\n", "code/stage.sh": STAGE_SCRIPT}


def ddbuild_files(deps: list[list[int]]) -> Files:
    return {"Workflowfile": null_build.workflow_text(deps, 1),
            "code/gen.py": null_build.STAGE_CODE}


def materialize(project: Path, files: Files) -> bool:
    """Write the project; keep it (and what was built in it) if it holds these files already.

    True when it was written anew."""
    if all((project / rel).is_file() and (project / rel).read_text() == text
           for rel, text in files.items()):
        return False
    if project.exists():
        shutil.rmtree(project)
    for rel, text in files.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    (project / "out").mkdir(exist_ok=True)
    return True


# ---- the tools -----------------------------------------------------------------------------

def tool_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> null_build.Measured:
    return null_build.measure(argv, cwd, tool_env() if env is None else env)


def find_exe(exe: str, venv: str | None) -> str | None:
    if venv is not None:
        candidate = CACHE / venv / "bin" / exe
        if candidate.is_file():
            return str(candidate)
    return shutil.which(exe)


@dataclass
class Tool:
    """One build tool: how to lay out the workload, build, null-build and check it."""

    key: str
    title: str
    package: str | None  # PyPI name installed by --install; None: not ours to install
    exe: str | None  # path, once found
    files: Callable[[list[list[int]]], Files]
    version_args: list[str]

    def argv(self, *args: str) -> list[str]:
        assert self.exe is not None
        return [self.exe, *args]

    def version(self) -> str:
        got = run(self.argv(*self.version_args), Path.cwd())
        text = (got.stdout or got.stderr).strip().splitlines()
        return text[0] if text else "?"

    def setup(self, project: Path) -> None:
        """Once, after the project was written anew (DVC: git and dvc init)."""

    def build(self) -> list[str]:
        return self.null()

    def null(self) -> list[str]:
        raise NotImplementedError

    def nothing_to_do(self, project: Path) -> str | None:
        """None if the tool itself says the project is up to date, else what it says."""
        raise NotImplementedError


class Make(Tool):
    def null(self) -> list[str]:
        return self.argv()

    def nothing_to_do(self, project: Path) -> str | None:
        got = run(self.argv("-q"), project)
        return None if got.returncode == 0 else f"make -q exited {got.returncode}"


class Doit(Tool):
    def null(self) -> list[str]:
        return self.argv()

    def nothing_to_do(self, project: Path) -> str | None:
        got = run(self.argv("list", "--status"), project)
        listed = [ln for ln in got.stdout.split("\n") if ln.strip()]
        stale = [ln for ln in listed if not ln.startswith("U ")]
        if got.returncode != 0 or stale or not listed:
            return f"doit list --status: exit {got.returncode}, {stale[:3]} {got.stderr[-300:]}"
        return None


class Snakemake(Tool):
    def null(self) -> list[str]:
        return self.argv("--cores", "1")

    def nothing_to_do(self, project: Path) -> str | None:
        got = run(self.argv("--cores", "1", "--dry-run"), project)
        said = got.stdout + got.stderr
        if got.returncode == 0 and "Nothing to be done" in said:
            return None
        return f"snakemake --dry-run: exit {got.returncode}: {said[-300:]}"


class Dvc(Tool):
    def setup(self, project: Path) -> None:
        for argv in (["git", "init", "-q"], self.argv("init", "-q"),
                     self.argv("config", "core.analytics", "false"),
                     self.argv("config", "core.check_update", "false")):
            got = run(argv, project)
            if got.returncode != 0:
                sys.exit(f"[dvc] {' '.join(argv)} failed in {project}:\n{got.stderr}")

    def null(self) -> list[str]:
        return self.argv("repro")

    def nothing_to_do(self, project: Path) -> str | None:
        got = run(self.argv("status"), project)
        said = got.stdout + got.stderr
        if got.returncode == 0 and "up to date" in said:
            return None
        return f"dvc status: exit {got.returncode}: {said[-300:]}"


class DdBuild(Tool):
    repo: Path = null_build.REPO

    def version(self) -> str:
        got = null_build.cli(Path.cwd(), "--version", repo=self.repo)
        return got.stdout.strip() or "?"

    def null(self) -> list[str]:
        return [sys.executable, "-m", "buildtool", "-q"]

    def nothing_to_do(self, project: Path) -> str | None:
        import json

        got = null_build.cli(project, "--json", repo=self.repo)
        if got.returncode != 0:
            return f"dd-build --json exited {got.returncode}: {got.stderr[-300:]}"
        actions = {s["action"] for s in json.loads(got.stdout)["stages"]}
        return None if actions == {"up_to_date"} else f"actions {sorted(actions)}"

    def run_env(self) -> dict[str, str]:
        return null_build.cli_env(self.repo)


def all_tools(repo: Path) -> list[Tool]:
    dd = DdBuild("dd-build", "dd-build", None, sys.executable, ddbuild_files, [])
    dd.repo = repo
    return [Make("make", "make", None, find_exe("make", None), make_files, ["--version"]),
            Doit("doit", "doit", "doit", find_exe("doit", "doit"), doit_files, ["--version"]),
            Snakemake("snakemake", "Snakemake", "snakemake", find_exe("snakemake", "snakemake"),
                      snakemake_files, ["--version"]),
            Dvc("dvc", "DVC", "dvc", find_exe("dvc", "dvc"), dvc_files, ["--version"]),
            dd]


def env_for(tool: Tool) -> dict[str, str]:
    return tool.run_env() if isinstance(tool, DdBuild) else tool_env()


# ---- install -------------------------------------------------------------------------------

def install(tool: Tool) -> None:
    assert tool.package is not None
    venv = CACHE / tool.key
    if not (venv / "bin" / "python").is_file():
        print(f"[{tool.key}] creating venv {venv}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    print(f"[{tool.key}] pip install --upgrade {tool.package}", file=sys.stderr, flush=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--upgrade", tool.package], check=True)
    tool.exe = find_exe(tool.key, tool.key)


# ---- one workload size ---------------------------------------------------------------------

@dataclass
class Cell:
    """One tool at one size: its first build, its timed null builds, or why there are none."""

    problem: str = ""
    first_build: str = ""
    runs: list[null_build.Measured] = field(default_factory=list)
    outputs: dict[str, int] = field(default_factory=dict)  # out/ file -> mtime_ns


def output_mtimes(project: Path) -> dict[str, int]:
    folder = project / "out"
    if not folder.is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.suffix == ".txt"}


def prepare(tool: Tool, project: Path, n: int) -> Cell:
    """Write the project, build it once, check that a null build has nothing to do."""
    deps = null_build.layered_inputs(n)
    # Beside the project, not in it: the first build's time, shown again while it is reused.
    record = project.with_name(f"{project.name}.first-build")
    if materialize(project, tool.files(deps)):
        record.write_text("pending\n")
        tool.setup(project)
    before = record.read_text().strip() if record.is_file() else "pending"
    print(f"[{tool.key} N={n}] " + ("first build" if before == "pending" else
                                    "build (reused project)") + " ...",
          file=sys.stderr, flush=True)
    first = null_build.measure(tool.build(), project, env_for(tool))
    if first.returncode != 0:
        return Cell(problem=f"first build failed (exit {first.returncode})")
    print(f"[{tool.key} N={n}] build {first.seconds:.1f}s", file=sys.stderr, flush=True)
    if before == "pending":  # built here (the rest of it, if an earlier run was stopped)
        record.write_text(f"{first.seconds:.1f}\n")
        cell = Cell(first_build=f"{first.seconds:.1f} s")
    else:
        cell = Cell(first_build=f"{before} s (earlier run)")
    if not isinstance(tool, DdBuild):
        cell.outputs = output_mtimes(project)
        if len(cell.outputs) != n:
            cell.problem = f"first build made {len(cell.outputs)} of {n} outputs"
            return cell
    said = tool.nothing_to_do(project)
    if said is not None:
        cell.problem = f"not a null build: {said}"
    return cell


def after_timing(tool: Tool, project: Path, cell: Cell) -> None:
    """The timed runs were null builds: no output rewritten, still nothing to do."""
    if cell.outputs and output_mtimes(project) != cell.outputs:
        cell.problem = "a null build rewrote outputs"
        return
    said = tool.nothing_to_do(project)
    if said is not None:
        cell.problem = f"after the null builds: {said}"


def bench_size(tools: list[Tool], root: Path, n: int, repeat: int) -> dict[str, Cell]:
    cells: dict[str, Cell] = {}
    projects = {t.key: root / f"layered-{n}" / t.key for t in tools}
    for tool in tools:
        cells[tool.key] = prepare(tool, projects[tool.key], n)
    live = [t for t in tools if not cells[t.key].problem]
    for i in range(repeat):
        print(f"[N={n}] null builds, round {i + 1}/{repeat} ...", file=sys.stderr, flush=True)
        for tool in live:
            if cells[tool.key].problem:
                continue
            got = null_build.measure(tool.null(), projects[tool.key], env_for(tool))
            if got.returncode != 0:
                cells[tool.key].problem = f"null build failed (exit {got.returncode})"
                continue
            cells[tool.key].runs.append(got)
    for tool in live:
        if not cells[tool.key].problem:
            after_timing(tool, projects[tool.key], cells[tool.key])
    return cells


# ---- the table -----------------------------------------------------------------------------

def table(tools: list[Tool], missing: dict[str, str], versions: dict[str, str],
          results: dict[int, dict[str, Cell]], repeat: int) -> list[str]:
    keys = [t.key for t in tools]
    titles = {t.key: f"{t.title} {short_version(versions.get(t.key, ''))}".strip()
              for t in tools}
    header = ["workload", *(titles[k] for k in keys)]
    body: list[list[str]] = []
    for n, cells in results.items():
        def row(label: str, figure: Callable[[Cell], str], cells: dict[str, Cell] = cells,
                first: bool = False) -> list[str]:
            line = [label]
            for k in keys:
                cell = cells.get(k)
                if k in missing:
                    line.append(missing[k] if first else "")
                elif cell is None:
                    line.append("")
                elif cell.problem:
                    line.append("FAILED (see below)" if first else "")
                else:
                    line.append(figure(cell))
            return line

        body.append(row(f"null build, {n:,}-stage layered DAG (median of {repeat})",
                        lambda c: f"{statistics.median(r.seconds for r in c.runs):.3f} s",
                        first=True))
        body.append(row(f"  min – max of {repeat}", lambda c: (
            f"{min(r.seconds for r in c.runs):.3f} – {max(r.seconds for r in c.runs):.3f} s")))
        body.append(row(f"  peak RSS, null build at {n:,} stages", lambda c: (
            null_build.format_rss(statistics.median(r.maxrss_mib for r in c.runs)))))
        body.append(row(f"  first build, {n:,} stages (once)", lambda c: c.first_build))
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(fmt(line) for line in body)]


def short_version(text: str) -> str:
    """'GNU Make 4.3' -> '4.3', 'dd-build 0.1.0' -> '0.1.0', '9.27.1' -> '9.27.1'."""
    words = text.split()
    return words[-1] if words else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--install", action="store_true",
                    help=f"pip-install (upgrade) doit, snakemake, dvc into venvs under {CACHE}")
    ap.add_argument("--stages", default="1000", help="stage counts, comma separated (1000)")
    ap.add_argument("--repeat", type=int, default=5, help="timed null builds per tool (5)")
    ap.add_argument("--skip", action="append", default=[], metavar="TOOL",
                    help="leave a tool out: make, doit, snakemake, dvc, dd-build (repeatable, "
                         "or comma separated)")
    ap.add_argument("--workdir", help="where the projects go (kept; reused while unchanged). "
                                      "Default /dev/shm/dd-build-peers or "
                                      f"{CACHE}/work")
    ap.add_argument("--write-only", action="store_true",
                    help="write every tool's project into --workdir and stop: run no tool")
    ap.add_argument("--repo", type=Path, default=null_build.REPO,
                    help="the dd-build checkout to time (default: the one holding this script)")
    args = ap.parse_args()
    skip = {s.strip() for arg in args.skip for s in arg.split(",") if s.strip()}
    tools = all_tools(args.repo.resolve())
    unknown = skip - {t.key for t in tools}
    if unknown:
        ap.error(f"--skip: no tool {sorted(unknown)}; the tools are "
                 + ", ".join(t.key for t in tools))
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    sizes = [int(s) for s in args.stages.split(",") if s.strip()]

    if args.write_only:
        root = Path(args.workdir or ".").resolve()
        for n in sizes:
            for tool in tools:
                if tool.key not in skip:
                    materialize(root / f"layered-{n}" / tool.key,
                                tool.files(null_build.layered_inputs(n)))
                    print(root / f"layered-{n}" / tool.key)
        return 0

    missing: dict[str, str] = {}
    for tool in tools:
        if tool.key in skip:
            missing[tool.key] = "skipped (--skip)"
        elif args.install and tool.package is not None:
            install(tool)
        if tool.key not in missing and tool.exe is None:
            missing[tool.key] = NOT_INSTALLED if tool.package else "not found on PATH"
    live = [t for t in tools if t.key not in missing]
    versions = {t.key: t.version() for t in live}

    if args.workdir:
        root = Path(args.workdir)
    else:
        root = Path("/dev/shm/dd-build-peers") if Path("/dev/shm").is_dir() else CACHE / "work"
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    load_before = null_build.load_average()
    results = {n: bench_size(live, root, n, args.repeat) for n in sizes}

    print(f"\npython {sys.version.split()[0]}, {os.cpu_count()} cores, workdir {root}")
    for t in tools:
        where = missing.get(t.key) or f"{versions[t.key]} ({t.exe})"
        print(f"  {t.title}: {where}")
    print(f"load average (1, 5, 15 min) {load_before} before, {null_build.load_average()} "
          "after\n")
    print("\n".join(table(tools, missing, versions, results, args.repeat)))
    failed = [(n, key, cell.problem) for n, cells in results.items()
              for key, cell in cells.items() if cell.problem]
    for n, key, problem in failed:
        print(f"{key} at {n:,} stages FAILED: {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
