"""Shared by the tests/test_c11cache_*.py files: projects, and a probe that holds a build
or a gc at a named point inside the build cache so a test can SIGKILL it there.

Run as a script (`python tests/c11cache_support.py POINT MARKER dd-build-args...`), it is
`buildtool.cli.main` with one function of buildtool.cache wrapped: when the build reaches
POINT it writes MARKER and waits forever (the test kills it). Points:

* `store-object`: a store has made its first object, before its entry file;
* `gc-drop`: a gc has removed its first entry, before it removes any object.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

STAGES = '''
import os, time
from pathlib import Path

def _log(ctx):
    with open(Path(__file__).parent / "calls.log", "a") as fh:
        fh.write(f"{ctx.stage_name} {getattr(ctx, 'batch_index', 'all')}\\n")

def rows(ctx):
    _log(ctx)
    gate = os.environ.get("GATE_AT")
    if gate == f"{ctx.stage_name}:{getattr(ctx, 'batch_index', 0)}":
        here = Path(__file__).parent
        (here / "reached").write_text("x")
        while not (here / "go").exists():
            time.sleep(0.02)
    return [{"id": ctx.offset + i, "value": ctx.rng.randint(0, 10**6),
             "k": ctx.params.get("k", 0)} for i in range(ctx.size)]

def join(ctx):
    _log(ctx)
    import pyarrow as pa
    t = ctx.inputs["a"]
    return pa.table({"n": [t.num_rows], "total": [sum(t.column("value").to_pylist())],
                     "k": [ctx.params.get("k", 0)]})

def keep_even(ctx):
    _log(ctx)
    import pyarrow.parquet as pq, pyarrow.compute as pc
    t = pq.read_table(ctx.stage_output)
    out = os.path.join(ctx.out_dir, "even.parquet")
    pq.write_table(t.filter(pc.equal(pc.bit_wise_and(t.column("id"), 1), 0)), out)
    return out
'''

REPORT = '''
import sys, pyarrow.parquet as pq
from pathlib import Path
with open(Path(__file__).parent / "calls.log", "a") as fh:
    fh.write("report all\\n")
t = pq.read_table(sys.argv[1])
Path(sys.argv[2]).parent.mkdir(parents=True, exist_ok=True)
Path(sys.argv[2]).write_text(f"rows={t.num_rows} k={sys.argv[3]}\\n")
'''

WORKFLOW = '''
workflow: demo
stages:
  a:
    generate: code/stages.py:rows
    num_records: 40
    batch_size: 10
    params: {k: 5}
    processors:
      - filter: "id >= 0"
    on_success: code/stages.py:keep_even
    outputs: [out/a.csv]
  b:
    transform: code/stages.py:join
    inputs: [a]
    params: {k: 1}
  report:
    run: python code/report.py {inputs} {outputs} {params.k}
    inputs: [a]
    params: {k: 1}
    outputs: [out/report.txt]
'''


def make_project(root: Path, workflow: str = WORKFLOW) -> Path:
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "stages.py").write_text(STAGES)
    (root / "code" / "report.py").write_text(REPORT)
    (root / "Workflowfile").write_text(workflow)
    return root


def env(**extra: str) -> dict[str, str]:
    found = {k: v for k, v in os.environ.items()
             if k not in ("DD_BUILD_CACHE", "GATE_AT", "HANG_AT", "FAIL_AT")}
    found["PYTHONPATH"] = str(REPO) + os.pathsep + found.get("PYTHONPATH", "")
    found.update(extra)
    return found


def calls(root: Path) -> list[str]:
    log = root / "code" / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def clear_calls(root: Path) -> None:
    (root / "code" / "calls.log").unlink(missing_ok=True)


def set_param(root: Path, old: str, new: str) -> None:
    path = root / "Workflowfile"
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new, 1))


def outputs(root: Path, workflow: str = "demo") -> dict[str, Any]:
    """Everything a build leaves that a user reads: each stage's batch and step files'
    bytes, its record's output digest and rows, and the project's output files."""
    found: dict[str, Any] = {}
    arts = root / "artifacts" / workflow
    for stage_dir in sorted(p for p in arts.iterdir() if (p / "stage.json").is_file()):
        rec = json.loads((stage_dir / "stage.json").read_text())
        found[stage_dir.name] = {
            "status": rec["status"], "digest": rec["output"]["digest"],
            "rows": rec["output"]["rows"],
            "batches": [(b["file"], (arts / b["file"]).read_bytes()) for b in rec["batches"]],
            "steps": {k: [(f["path"], f["digest"]) for f in v["files"]]
                      for k, v in rec["steps"].items()}}
    out = root / "out"
    if out.is_dir():
        found["out"] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    return found


def _hold(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    while True:
        time.sleep(0.05)


def _probe(point: str, marker: str) -> None:
    from buildtool import cache

    if point == "store-object":
        keep = cache.Cache._keep_object

        def held_keep(self: Any, *args: Any, **kwargs: Any) -> list[str]:
            made = keep(self, *args, **kwargs)
            if made:
                _hold(marker)
            return made

        cache.Cache._keep_object = held_keep  # type: ignore[method-assign]
    elif point == "gc-drop":
        drop = cache.Cache.drop

        def held_drop(self: Any, entry_path: str) -> None:
            drop(self, entry_path)
            _hold(marker)

        cache.Cache.drop = held_drop  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown point {point}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    _probe(sys.argv[1], sys.argv[2])
    from buildtool.cli import main

    sys.exit(main(sys.argv[3:]))
