"""Shared fixtures: temp project folders and the real CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

# Deterministic stage code used by most end-to-end tests. `rows` draws from ctx.rng, so a
# resumed batch must equal an uninterrupted one. HANG_AT=<stage>:<batch> makes that batch write
# `code/<stage>-reached-<batch>` and then block, so a test can kill it there.
# FAIL_AT=<stage>:<batch> makes that batch raise. CALLS logs each call as one line.
STAGE_CODE = '''
import os, time
from pathlib import Path

def _hook(ctx):
    with open(Path(__file__).parent / "calls.log", "a") as fh:
        fh.write(f"{ctx.stage_name} {getattr(ctx, 'batch_index', 'all')}\\n")
    here = f"{ctx.stage_name}:{getattr(ctx, 'batch_index', 0)}"
    if os.environ.get("FAIL_AT") == here:
        raise RuntimeError(f"boom at {here}")
    if os.environ.get("HANG_AT") == here:
        (Path(__file__).parent / f"{ctx.stage_name}-reached-{ctx.batch_index}").write_text("x")
        while True:
            time.sleep(0.05)

def rows(ctx):
    _hook(ctx)
    out = []
    for i in range(ctx.size):
        row = {"id": ctx.offset + i, "value": ctx.rng.randint(0, 10**6),
               "tag": ctx.params.get("tag", "t")}
        if ctx.seed_rows is not None:
            row["seed_id"] = ctx.seed_rows.column("id")[i].as_py()
        out.append(row)
    return out

def join(ctx):
    _hook(ctx)
    import pyarrow as pa
    tables = [t for t in ctx.inputs.values() if isinstance(t, pa.Table)]
    return pa.table({"n": [sum(t.num_rows for t in tables)], "tag": [ctx.params.get("tag", "j")]})
'''

CHAIN = """
workflow: demo
stages:
  a:
    generate: code/stages.py:rows
    num_records: 20
    batch_size: 5
    params: {tag: x}
  b:
    generate: code/stages.py:rows
    seed: a
    num_records: 60
    batch_size: 10
  c:
    transform: code/stages.py:join
    inputs: [a, b]
"""


def reason_codes(stage: dict[str, Any]) -> list[str]:
    """The reason codes of one stage of a `--json` document."""
    return [r["code"] for r in stage["reasons"]]


def find_reason(stage: dict[str, Any], code: str) -> dict[str, Any]:
    """The first reason of that code; fails the test when there is none."""
    found = [r for r in stage["reasons"] if r["code"] == code]
    assert found, f"no reason {code!r} in {stage['reasons']}"
    return found[0]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)

    def stage(self, name: str) -> dict[str, Any]:
        return next(s for s in self.json()["stages"] if s["stage"] == name)


@dataclass
class Project:
    root: Path

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("HANG_AT", "FAIL_AT")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(extra)
        return env

    def run(self, *args: str, **env: str) -> Result:
        proc = subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=self.root,
                              env=self.env(**env), capture_output=True, text=True, timeout=300)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "buildtool", *args], cwd=self.root,
                                env=self.env(**env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def wait_for(self, rel: str, proc: subprocess.Popen[str] | None = None,
                 limit: float = 60.0) -> None:
        """Block until `rel` exists (a synchronisation point, not a timing assertion)."""
        deadline = time.monotonic() + limit
        while not (self.root / rel).exists():
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"process ended before {rel}: {proc.communicate()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{rel} never appeared")
            time.sleep(0.02)

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts" / "demo"

    def record(self, stage: str) -> dict[str, Any]:
        return json.loads((self.artifacts / stage / "stage.json").read_text())

    def table(self, stage: str) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rec = self.record(stage)
        return pa.concat_tables([pq.read_table(self.artifacts / b["file"]) for b in rec["batches"]])

    def calls(self) -> list[str]:
        log = self.root / "code" / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def clear_calls(self) -> None:
        (self.root / "code" / "calls.log").unlink(missing_ok=True)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A project folder with the shared stage code and the three-stage CHAIN workflow."""
    proj = Project(tmp_path / "proj")
    proj.write("code/stages.py", STAGE_CODE)
    proj.write("Workflowfile", CHAIN)
    return proj
