"""Shared by the tests of in-stage concurrency (tests/test_c10a_*.py): a project whose stage
code logs every call (one write(2) per line, from any thread or process), can fail, fail once
(flaky), or hang at a batch after a number of the stage's batches are journaled (writing a
marker the test waits for), and the comparison of two builds' outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

STAGE_CODE = '''\
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _log(ctx):
    line = f"{os.environ.get('BUILD', '?')} {ctx.stage_name} {ctx.batch_index} {os.getpid()}\\n"
    fd = os.open(ROOT / "calls.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _journaled(stage):
    """Batches of `stage` its running journal lists so far."""
    found = set()
    for journal in (ROOT / "artifacts" / "demo" / stage).glob("journal-*.jsonl"):
        for line in journal.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "index" in entry:
                found.add(entry["index"])
    return found


def _hooks(ctx):
    here = f"{ctx.stage_name}:{ctx.batch_index}"
    if os.environ.get("FAIL_AT") == here:
        raise RuntimeError(f"boom at {here}")
    if os.environ.get("KILL_AT") == here:  # a worker process killed (out of memory, say)
        os.kill(os.getpid(), 9)
    if here in os.environ.get("FLAKY", "").split(","):
        marker = ROOT / f"flaky-{ctx.stage_name}-{ctx.batch_index}"
        if not marker.exists():
            ctx.rng.random()  # the retry must start from the seeded rng again
            ctx.params["tag"] = "spoilt"  # and from the params as written
            marker.write_text("x")
            raise ValueError(f"flaky at {here}")
    if here in os.environ.get("HANG_AT", "").split(","):
        wanted = int(os.environ.get("HANG_AFTER", "0"))
        while len(_journaled(ctx.stage_name)) < wanted:
            time.sleep(0.01)
        (ROOT / f"reached-{ctx.stage_name}-{ctx.batch_index}").write_text(str(os.getpid()))
        while True:
            time.sleep(0.05)


def rows(ctx):
    _log(ctx)
    _hooks(ctx)
    print(f"printed by batch {ctx.batch_index}")
    out = []
    for i in range(ctx.size):
        row = {"id": ctx.offset + i, "value": ctx.rng.randint(0, 10**6),
               "tag": ctx.params.get("tag", "t")}
        if ctx.seed_rows is not None:
            row["seed_id"] = ctx.seed_rows.column("id")[i].as_py()
        out.append(row)
    return out


def join(ctx):
    import pyarrow as pa

    tables = [t for t in ctx.inputs.values() if isinstance(t, pa.Table)]
    return pa.table({"n": [sum(t.num_rows for t in tables)]})
'''

FANOUT = """\
workflow: demo
stages:
  seeds:
    generate: stages/gen.py:rows
    num_records: 30
    batch_size: 4
  left:
    generate: stages/gen.py:rows
    seed: seeds
    num_records: 50
    batch_size: 3
    sampling: shuffle
    params: {tag: l}
    outputs: [exports/left.parquet, exports/left.jsonl]
  right:
    generate: stages/gen.py:rows
    seed: seeds
    num_records: 45
    batch_size: 5
    retries: 2
    params: {tag: r}
    processors: [{filter: "value % 2 == 0"}]
  middle:
    generate: stages/gen.py:rows
    seed: seeds
    num_records: 40
    batch_size: 7
  joined:
    transform: stages/gen.py:join
    inputs: [left, right, middle]
    outputs: [exports/joined.csv]
"""


def one_stage(batches: int, extra: str = "", batch_size: int = 2) -> str:
    """A workflow of one generate stage `a` of `batches` batches, `extra` keys added."""
    keys = textwrap.indent(textwrap.dedent(extra).strip(), "    ")
    return (f"workflow: demo\nstages:\n  a:\n    generate: stages/gen.py:rows\n"
            f"    num_records: {batches * batch_size}\n    batch_size: {batch_size}\n"
            + (keys + "\n" if keys else ""))


def with_defaults(workflow: str, concurrency: int, executor: str) -> str:
    """`workflow` with every generate stage at that concurrency and executor (defaults)."""
    head, sep, rest = workflow.partition("\nstages:\n")
    return (f"{head}\ndefaults:\n  concurrency: {concurrency}\n  executor: {executor}"
            f"{sep}{rest}")


class Proj:
    def __init__(self, root: Path, workflow: str) -> None:
        self.root = root
        (root / "stages").mkdir(parents=True, exist_ok=True)
        (root / "stages" / "gen.py").write_text(STAGE_CODE)
        (root / "Workflowfile").write_text(workflow)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("HANG_AT", "HANG_AFTER", "FAIL_AT", "FLAKY", "BUILD", "KILL_AT")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("DD_BUILD_RETRY_BASE_S", "0.01")
        env.update(extra)
        return env

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=self.root,
                              env=self.env(**env), capture_output=True, text=True, timeout=300)

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "buildtool", *args], cwd=self.root,
                                env=self.env(**env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    @property
    def artifacts(self) -> Path:
        text = (self.root / "Workflowfile").read_text()
        name = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                    if line.startswith("workflow:"))
        return self.root / "artifacts" / name

    def record(self, stage: str) -> dict[str, Any]:
        return json.loads((self.artifacts / stage / "stage.json").read_text())

    def calls(self, build: str | None = None) -> list[tuple[str, int]]:
        """(stage, batch) of each call logged (by the build named, or by any)."""
        log = self.root / "calls.log"
        lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
        return [(stage, int(index)) for b, stage, index, _ in lines if build in (None, b)]

    def pids(self, build: str) -> set[int]:
        log = self.root / "calls.log"
        return {int(pid) for b, _, _, pid in (line.split() for line in
                                              log.read_text().splitlines()) if b == build}


def outputs(proj: Proj) -> dict[str, Any]:
    """What must not depend on concurrency or executor: every stage's status, output and
    batch list (sorted by index) from its record, the bytes of every batch file and every
    export copy, and the processed/callback files the records list."""
    found: dict[str, Any] = {}
    for stage_dir in sorted(p for p in proj.artifacts.iterdir() if p.is_dir()):
        rec = json.loads((stage_dir / "stage.json").read_text())
        batches = [(b["index"], b["file"], b["rows"], b["bytes"], b["digest"])
                   for b in rec["batches"]]
        assert batches == sorted(batches)
        out = rec.get("output") or {}
        found[stage_dir.name] = (rec["status"], out.get("rows"), out.get("digest"), batches,
                                 {k: v.get("digest") for k, v in rec.get("steps", {}).items()})
        for b in rec["batches"]:
            found[b["file"]] = (proj.artifacts / b["file"]).read_bytes()
    exports = proj.root / "exports"
    for path in sorted(exports.rglob("*")) if exports.is_dir() else []:
        if path.is_file():
            found[str(path.relative_to(proj.root))] = path.read_bytes()
    return found
