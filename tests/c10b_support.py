"""Shared pieces of the `-j/--jobs` tests (tests/test_c10b_*.py): stage code that meets other
stages through marker files, and what a build leaves, as comparable data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from conftest import Project

# Stage code for the -j tests. Every wait is on a file another stage writes, with a limit
# (WAIT_S, default 60 s) past which the stage raises: a test fails, it never hangs.
#   meet(ctx):  write `marks/<stage>-in`, then wait for `marks/<params.other>-in`, then rows.
#   rows(ctx):  deterministic rows from ctx.rng; prints to stdout and stderr;
#               with params.hold: batch 1 writes `marks/<stage>-reached` and waits for
#               `marks/go`; with params.wait_failed: waits for that stage's failed record.
#   check_inputs(ctx): raises unless every input stage's record is `completed`.
#   fail(ctx):  raises.
JOBS_CODE = '''
import json, os, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARKS = ROOT / "marks"


def _wait(path, what):
    limit = float(os.environ.get("WAIT_S", "60"))
    deadline = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {path.name} did not appear within {limit}s")
        time.sleep(0.01)


def _mark(name):
    MARKS.mkdir(exist_ok=True)
    (MARKS / name).write_text("x")


def _rows(ctx):
    out = []
    for i in range(ctx.size):
        out.append({"id": ctx.offset + i, "value": ctx.rng.randint(0, 10**6),
                    "stage": ctx.stage_name})
    return out


def rows(ctx):
    print(f"out {ctx.stage_name} {ctx.batch_index}")
    print(f"err {ctx.stage_name} {ctx.batch_index}", file=sys.stderr)
    if ctx.params.get("hold") and ctx.batch_index == 1:
        _mark(f"{ctx.stage_name}-reached")
        _wait(MARKS / "go", ctx.stage_name)
    if ctx.params.get("wait_failed"):
        record = ROOT / "artifacts" / "demo" / ctx.params["wait_failed"] / "stage.json"
        deadline = time.monotonic() + float(os.environ.get("WAIT_S", "60"))
        while not (record.exists() and json.loads(record.read_text())["status"] == "failed"):
            if time.monotonic() > deadline:
                raise TimeoutError("the failing stage never failed")
            time.sleep(0.01)
    if ctx.params.get("fd"):
        os.write(1, f"fd {ctx.stage_name} {ctx.batch_index}\\n".encode())
    return _rows(ctx)


def meet(ctx):
    print(f"meet {ctx.stage_name} {ctx.batch_index}")
    if ctx.batch_index == 0:
        _mark(f"{ctx.stage_name}-in")
        _wait(MARKS / f"{ctx.params['other']}-in", ctx.stage_name)
    return _rows(ctx)


def check_inputs(ctx):
    for name in ctx.inputs:
        record = ROOT / "artifacts" / "demo" / name / "stage.json"
        status = json.loads(record.read_text())["status"]
        if status != "completed":
            raise RuntimeError(f"{name} is {status} while {ctx.stage_name} runs")
    import pyarrow as pa
    tables = [t for t in ctx.inputs.values() if isinstance(t, pa.Table)]
    return pa.table({"n": [sum(t.num_rows for t in tables)],
                     "names": [",".join(sorted(ctx.inputs))]})


def fail(ctx):
    raise RuntimeError(f"{ctx.stage_name} fails on purpose")
'''


def jobs_project(root: Path, workflowfile: str) -> Project:
    proj = Project(root)
    proj.write("code/jobs.py", JOBS_CODE)
    proj.write("Workflowfile", workflowfile)
    return proj


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def built_state(root: Path, workflow: str, files: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a build leaves that must not depend on -j: each record's status, batch list
    (index, rows, file, digest) and output (rows, digest); each batch file's bytes; and the
    bytes of `files` (export copies, run stage outputs)."""
    folder = root / "artifacts" / workflow
    state: dict[str, Any] = {}
    for record_file in sorted(folder.glob("*/stage.json")):
        record = json.loads(record_file.read_text())
        batches = [(b["index"], b["rows"], b["file"], b["digest"]) for b in record["batches"]]
        output = record.get("output") or {}
        state[record["stage"]] = {
            "status": record["status"], "batches": batches,
            "output": (output.get("rows"), output.get("digest")),
            "batch_bytes": [digest(folder / b[2]) for b in batches],
            "steps": sorted((k, v.get("digest")) for k, v in record.get("steps", {}).items()),
        }
    for rel in files:
        path = root / rel
        state[rel] = sorted((str(p.relative_to(root)), digest(p)) for p in path.rglob("*")
                            if p.is_file()) if path.is_dir() else digest(path)
    return state
