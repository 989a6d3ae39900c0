"""Crash-safety fuzzing shared by tests/test_crash_safety.py and benchmarks/fuzz_crash.py.

A four-stage project (generate → generate with processors, an on_success callback and export
copies → transform → run) is built by the real CLI and SIGKILLed at random moments, then built
again (and maybe killed again) until a build completes; then the result is checked against an
uninterrupted build. Two kinds of kill, both a real SIGKILL of the build process:

* timer: the harness sends SIGKILL after a random delay (seeded RNG) from the start;
* event: the build SIGKILLs itself at its N-th probe event (random N, seeded). Events are the
  entries of the steps the fuzz aims at, every fsync and syncfs, and every rename into place,
  so these kills land inside the narrow windows (a temp file written but not renamed, a
  renamed file whose folder is not synced, a batch journaled but not yet synced, batches
  synced but not yet listed again), reproducibly and whatever the machine's speed.

Worker kills (`Config.worker_kill_share`, Fuzzer.worker_kill_once): a build running the
generate stages in worker processes is not killed itself; one of its workers is, once a stage
drawn has made K calls. The build must fail that stage cleanly or finish, and the next build
resume as after a kill.

Each killed build of a random round syncs a stage's batches either after every batch or once
a second (DD_BUILD_SYNC_INTERVAL_S 0 or 1, drawn from the seeded RNG), so kills land in both
ways of writing them.

The named windows (WINDOWS) are all deterministic: a probe event, or a hold inside user code
(the on_success callback, the run stage's command) that writes a marker file and waits; the
harness SIGKILLs the build once the marker exists. No kill there is timed by a delay.

The probe (`python tests/crash_support.py --dd-build ARGS`, i.e. `buildtool.cli.main` with a few
functions wrapped) writes "where am I" to a phase file with one pwrite per step, so after a kill
the harness knows where it landed. It can also slow every fsync, syncfs and rename down (a
slow disk), which widens the write windows for timer kills. Nothing else differs from
`python -m buildtool`.

Run as a script, this module is that probe; imported, it is the harness. Stdlib only at import.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()
WORKFLOW_NAME = "crash"

# ---------------------------------------------------------------- the project

WORKFLOW = """\
workflow: crash
stages:
  seeds:
    generate: code/stages.py:rows
    num_records: 40
    batch_size: 4
    params: {tag: s, work: 3000}
  enriched:
    generate: code/stages.py:rows
    seed: seeds
    num_records: 60
    batch_size: 5
    params: {tag: e, work: 3000, callback_work: 150000}
    processors:
      - filter: "value % 3 != 0"
      - drop: [work]
    on_success: code/stages.py:split
    outputs: [exports/enriched.parquet, exports/enriched.jsonl]
  summary:
    transform: code/stages.py:summarise
    inputs: [seeds, enriched]
  report:
    run: python code/report.py {params.pause} {inputs} {outputs}
    inputs: [summary, code/report.py]
    outputs: [reports/digests.txt, reports/count.txt]
    params: {pause: 0.08}
"""

# Every user call appends "<build id> <stage> <batch|callback|all>" with one write(2) on an
# O_APPEND descriptor, so a kill never leaves half a line. CRASH_BUILD names the build.
STAGE_CODE = '''\
import hashlib
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def hold(here):
    """With CRASH_HOLD_AT=<here>: write the marker CRASH_HOLD_FILE, then wait until the harness
    (which SIGKILLs the build meanwhile) writes <marker>.release."""
    if os.environ.get("CRASH_HOLD_AT") != here:
        return
    marker = Path(os.environ["CRASH_HOLD_FILE"])
    marker.write_text(str(os.getpid()))
    release = marker.with_name(marker.name + ".release")
    while not release.exists():
        time.sleep(0.01)


def log_call(stage, what):
    line = f"{os.environ.get('CRASH_BUILD', '?')} {stage} {what}\\n".encode()
    fd = os.open(HERE / "calls.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def work(text, rounds):
    """Deterministic CPU work, so that a batch takes a moment and its rows depend on it."""
    h = text.encode()
    for _ in range(rounds):
        h = hashlib.sha256(h).digest()
    return h.hex()[:16]


def rows(ctx):
    log_call(ctx.stage_name, ctx.batch_index)
    out = []
    for i in range(ctx.size):
        n = ctx.offset + i
        row = {"id": n, "value": ctx.rng.randint(0, 10**6), "tag": ctx.params["tag"],
               "work": work(f"{ctx.stage_name}:{n}", ctx.params["work"])}
        if ctx.seed_rows is not None:
            row["seed_id"] = ctx.seed_rows.column("id")[i].as_py()
        out.append(row)
    return out


def split(ctx):
    """on_success: takes a moment (timer kills may land in it), then writes its output as two
    parquet files."""
    import pyarrow.parquet as pq

    log_call(ctx.stage_name, "callback")
    hold(f"{ctx.stage_name}:callback")
    table = pq.read_table(ctx.stage_output)
    work(f"callback:{table.num_rows}", ctx.params["callback_work"])
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), Path(ctx.out_dir) / "part-0.parquet")
    pq.write_table(table.slice(half), Path(ctx.out_dir) / "part-1.parquet")
    return ctx.out_dir


def summarise(ctx):
    import pyarrow as pa

    log_call(ctx.stage_name, "all")
    seeds, enriched = ctx.inputs["seeds"], ctx.inputs["enriched"]
    return pa.table({
        "stage": ["seeds", "enriched"],
        "rows": [seeds.num_rows, enriched.num_rows],
        "value_sum": [sum(seeds.column("value").to_pylist()),
                      sum(enriched.column("value").to_pylist())],
    })
'''

# The run stage: hashes its inputs and writes its two outputs the way many scripts do, in
# place and a piece at a time, pausing in between (a command that takes a moment, so timer
# kills may land in it).
REPORT_CODE = '''\
import hashlib
import os
import sys
import time
from pathlib import Path

here = Path(__file__).resolve().parent


def hold(where):
    """As in stages.py: with CRASH_HOLD_AT=<where>, a marker, then wait for its release."""
    if os.environ.get("CRASH_HOLD_AT") != where:
        return
    marker = Path(os.environ["CRASH_HOLD_FILE"])
    marker.write_text(str(os.getpid()))
    release = marker.with_name(marker.name + ".release")
    while not release.exists():
        time.sleep(0.01)


line = f"{os.environ.get('CRASH_BUILD', '?')} report all\\n".encode()
fd = os.open(here / "calls.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, line)
os.close(fd)

pause = float(sys.argv[1])
inputs, outputs = sys.argv[2:-2], sys.argv[-2:]
lines = []
for arg in inputs:
    path = Path(arg)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        data = f.read_bytes()
        lines.append(f"{path.name}/{f.name} {len(data)} {hashlib.sha256(data).hexdigest()}\\n")
for out in outputs:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
with open(outputs[0], "w") as fh:
    for n, text in enumerate(lines):
        fh.write(text)
        fh.flush()
        if n == 0:
            hold("report:command")  # its first output half written
        time.sleep(pause)
with open(outputs[1], "w") as fh:
    fh.write(f"{len(lines)} files\\n")
'''

GENERATE_BATCHES = {"seeds": 10, "enriched": 12}
STAGE_NAMES = ("seeds", "enriched", "summary", "report")
# The user calls each stage makes in one fresh run of it: (stage, what) as logged.
STAGE_CALLS: dict[str, tuple[tuple[str, str], ...]] = {
    "seeds": tuple(("seeds", str(i)) for i in range(10)),
    "enriched": (*(("enriched", str(i)) for i in range(12)), ("enriched", "callback")),
    "summary": (("summary", "all"),),
    "report": (("report", "all"),),
}
RUN_OUTPUTS = ("reports/digests.txt", "reports/count.txt")
EXPORTS = ("exports/enriched.parquet", "exports/enriched.jsonl")


# One kill in each window the fuzz aims at, in the order a build reaches them: each build of
# a sequence resumes the one before and is killed at the next target: a probe event
# STAGE:LABEL#K (the K-th event with that stage and label, counted within that build), or
# hold:STAGE:WHAT (user code writes a marker and waits; the harness kills the build then).
# Each entry: (target, where the kill must land as STAGE:LABEL, why). A batch write is: the
# fsync of the parent of batches/ when the first batch makes it, the temp file renamed into
# place (`replace`), its journal line (`journal-append`, not fsynced). A sync of the batches
# (`batch-sync`: every second of a stage's work, before each record write, and in `finish`) is
# `make-durable` (a syncfs, or fsyncs), then the batches listed again (`journal-append`).
WINDOWS: tuple[tuple[str, str, str], ...] = (
    ("seeds:begin>record-write>fsync#1", "", "first record: temp written, not renamed"),
    ("seeds:batch-code", "", "about to call the first batch"),
    ("seeds:batch-write>replace#1", "", "batch 0: temp file written, not renamed"),
    ("seeds:batch-write>journal-append#1", "", "batch 0: renamed into place, not yet journaled"),
    ("seeds:batch-code#3", "", "batch 1 journaled, not synced; batch 2 about to be called"),
    ("seeds:finish>batch-sync>make-durable#1", "", "every batch journaled, none synced"),
    ("seeds:begin>batch-sync>make-durable#1", "", "a resume: the batches it keeps were "
     "checked by content, not yet made durable"),
    ("seeds:finish>record-write>fsync#2", "", "completed record renamed; journal still there"),
    ("enriched:begin>record-write>fsync#2", "", "running record renamed, old state not cleared"),
    ("enriched:batch-write>journal-append#6", "", "batch 5: about to append its journal line"),
    ("enriched:processors>fsync#2", "", "processed output: temp written"),
    ("hold:enriched:callback", "enriched:callback", "inside the on_success callback"),
    ("enriched:export>fsync#2", "", "first export copy: temp written"),
    ("enriched:export>fsync#4", "", "second export copy renamed, folder not synced"),
    ("enriched:finish>record-write>fsync#1", "", "completed record: temp, not renamed"),
    ("summary:finish>batch-sync>journal-append#1", "", "the transform's one batch synced, "
     "not yet listed again"),
    ("hold:report:command", "report:run-command", "inside the run stage's command, its first "
     "output half written"),
    ("-:summary-write>fsync#1", "", "workflow.json: temp written, not renamed"),
)


# Concurrent builds (issue 10): a killed build may run the generate stages with batches in
# flight, in threads or worker processes; the build that completes runs them one at a time.
# Neither key is part of the fingerprint, so a concurrent build's batches are resumed by a
# serial one, and the output must be the same.
CONCURRENT_VARIANTS: tuple[tuple[int, str], ...] = (
    (2, "thread"), (4, "thread"), (16, "thread"), (2, "process"), (4, "process"))


def set_concurrency(root: Path, concurrency: int, executor: str) -> None:
    """The project's Workflowfile with every generate stage at that concurrency (defaults)."""
    text = WORKFLOW if concurrency == 1 else WORKFLOW.replace(
        "\nstages:\n", f"\ndefaults:\n  concurrency: {concurrency}\n  executor: {executor}"
                       "\nstages:\n", 1)
    (root / "Workflowfile").write_text(text)


def listed_batches(root: Path) -> set[tuple[str, str]]:
    """(stage, batch index) of every batch a record (with its journal) lists now."""
    from buildtool.records import read_record

    base = artifacts(root)
    found: set[tuple[str, str]] = set()
    for stage in GENERATE_BATCHES:
        rec = read_record(base / stage).record if (base / stage).is_dir() else None
        if rec is not None:
            found.update((stage, str(b.index)) for b in rec.batches)
    return found


def landing_of(target: str, expected: str) -> tuple[str, str]:
    """(stage, label) where a kill at a WINDOWS target must land."""
    stage, _, label = (expected or target.split("#")[0]).partition(":")
    return stage, label


def make_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "code").mkdir(exist_ok=True)
    (root / "Workflowfile").write_text(WORKFLOW)
    (root / "code" / "stages.py").write_text(STAGE_CODE)
    (root / "code" / "report.py").write_text(REPORT_CODE)
    return root


def artifacts(root: Path) -> Path:
    return root / "artifacts" / WORKFLOW_NAME


# ---------------------------------------------------------------- the probe (build side)

PHASE_WIDTH = 240


class Probe:
    """Wraps a few buildtool functions to note, with one pwrite each, which step is running.

    A label is the path of steps below the stage being run ("batch-write>journal-append>fsync"),
    or the build-level step ("startup", "building", "summary-write", "exit"). Every step entry
    and every fsync is an event; CRASH_KILL_AT_EVENT=N SIGKILLs the process at the N-th one,
    CRASH_KILL_AT=STAGE:LABEL[#K] at the K-th event with that stage and label. (Kills inside
    user code, a callback or a run command, use a hold in that code instead: see WINDOWS.)
    At exit the phase file gets a second line: the events per stage, as JSON.
    """

    def __init__(self) -> None:
        env = os.environ
        path = env.get("CRASH_PHASE_FILE")
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if path else None
        self.kill_at_event = int(env.get("CRASH_KILL_AT_EVENT") or 0)
        target = env.get("CRASH_KILL_AT") or ""
        target, _, nth = target.partition("#")
        self.kill_at_label = target
        self.kill_at_nth = int(nth or 1)
        self.fsync_delay = float(env.get("CRASH_FSYNC_DELAY_S") or 0)
        self.events = 0
        self.per_stage: Counter[str] = Counter()
        self.matched = 0
        self.stack: list[tuple[str, str, str]] = [("-", "startup", "")]

    def where(self, extra: str = "") -> tuple[str, str, str]:
        stage = self.stack[-1][0]
        inner = [p for _, p, _ in self.stack]
        if "stage-run" in inner:
            inner = inner[inner.index("stage-run") + 1:] or ["stage-run"]
        else:
            inner = inner[-1:]
        if extra:
            inner.append(extra)
        return stage, ">".join(inner), self.stack[-1][2]

    def note(self, extra: str = "") -> None:
        if self.fd is None:
            return
        stage, label, detail = self.where(extra)
        line = f"{self.events}\t{stage}\t{label}\t{detail}"[:PHASE_WIDTH - 1]
        os.pwrite(self.fd, line.ljust(PHASE_WIDTH - 1).encode() + b"\n", 0)

    def event(self, extra: str = "") -> None:
        self.events += 1
        self.per_stage[self.stack[-1][0]] += 1
        self.note(extra)
        if self.events == self.kill_at_event:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kill_at_label:
            stage, label, _ = self.where(extra)
            if f"{stage}:{label}" == self.kill_at_label:
                self.matched += 1
                if self.matched == self.kill_at_nth:
                    os.kill(os.getpid(), signal.SIGKILL)

    def enter(self, phase: str, stage: str | None = None, detail: object = "") -> None:
        self.stack.append((stage or self.stack[-1][0], phase, str(detail)))
        self.event()

    def leave(self) -> None:
        self.stack.pop()
        self.note()

    def step(self, fn: Callable[..., Any], phase: str,
             stage_of: Callable[..., str] | None = None,
             detail_of: Callable[..., object] | None = None) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                return fn(*args, **kwargs)  # a batch thread (concurrency): one stack, the writer's
            self.enter(phase, stage_of(*args) if stage_of else None,
                       detail_of(*args) if detail_of else "")
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave()

        return wrapper

    def slow(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` behind an event named `name` and the slow disk's delay."""
        def wrapper(*args: Any) -> Any:
            self.event(name)
            if self.fsync_delay:
                time.sleep(self.fsync_delay)
            return fn(*args)

        return wrapper

    def install(self) -> None:
        from buildtool import artifacts, boundary, execute, fsutil, stagerun
        from buildtool.kinds import command, generate, transform

        os.fsync = self.slow("fsync", os.fsync)
        # A rename into place (batch files are written with none of the above until a sync).
        os.replace = self.slow("replace", os.replace)
        real_syncfs = fsutil._syncfs()
        if real_syncfs is not None:  # Linux: one syncfs per sync of a stage's batches
            slow_syncfs = self.slow("syncfs", real_syncfs)
            fsutil._syncfs = lambda: slow_syncfs
        b = execute._Builder
        b.run = self.step(b.run, "building")
        b._execute = self.step(b._execute, "stage-run", stage_of=lambda s, planned, *a: planned.stage)
        b._write_summary = self.step(b._write_summary, "summary-write", stage_of=lambda *a: "-")
        execute.write_record = self.step(execute.write_record, "record-write")
        r = stagerun.StageRun
        r.begin = self.step(r.begin, "begin")
        r.finish = self.step(r.finish, "finish")
        r.write_batch = self.step(r.write_batch, "batch-write", detail_of=lambda s, i, *a: i)
        stagerun.write_record = self.step(stagerun.write_record, "record-write")
        j = stagerun.JournalWriter
        j.batch = self.step(j.batch, "journal-append")
        j.batches = self.step(j.batches, "journal-append")
        r.sync = self.step(r.sync, "batch-sync")
        stagerun.make_durable = self.step(stagerun.make_durable, "make-durable")
        generate._call = self.step(generate._call, "batch-code",
                                   detail_of=lambda fn, ctx, *a: ctx.batch_index)
        load = transform.load_callable

        def load_transform(*args: Any) -> Callable[..., Any]:
            return self.step(load(*args), "batch-code", detail_of=lambda *a: 0)

        transform.load_callable = load_transform
        boundary._process = self.step(boundary._process, "processors")
        boundary._callback = self.step(boundary._callback, "callback")
        boundary._export = self.step(boundary._export, "export")
        command._run_logged = self.step(command._run_logged, "run-command")
        # `dd-build override` (outside a build: stage "-").
        artifacts.atomic_write_bytes = self.step(artifacts.atomic_write_bytes, "override-write")
        artifacts.write_exports = self.step(artifacts.write_exports, "override-export")
        artifacts.write_record = self.step(artifacts.write_record, "record-write")
        artifacts.remove_unlisted_overrides = self.step(artifacts.remove_unlisted_overrides,
                                                        "override-cleanup")


def probed_main(argv: list[str]) -> int:
    probe = Probe()
    probe.install()
    from buildtool.cli import main

    code = main(argv)
    probe.stack = [("-", "exit", "")]
    probe.note()
    if probe.fd is not None:
        os.pwrite(probe.fd, json.dumps(probe.per_stage).encode() + b"\n", PHASE_WIDTH)
    return code


@dataclass(frozen=True)
class Landing:
    """Where a kill landed, from the phase file: events so far, stage, label, detail."""

    events: int
    stage: str
    label: str
    detail: str

    @property
    def mid_stage(self) -> bool:
        return self.label not in ("startup", "building", "summary-write", "exit") and \
            not self.label.startswith("summary-write>")

    @classmethod
    def read(cls, path: Path) -> Landing:
        try:
            text = path.read_text().split("\n")[0].strip()
        except FileNotFoundError:
            text = ""
        if not text:
            return cls(0, "-", "startup", "")
        events, stage, label, detail = (text.split("\t") + ["", "", ""])[:4]
        return cls(int(events), stage, label.strip(), detail.strip())

    @staticmethod
    def per_stage(path: Path) -> dict[str, int]:
        """The events per stage of a build that ran to its end."""
        lines = path.read_text().split("\n")
        return json.loads(lines[1]) if len(lines) > 1 and lines[1].strip() else {}


# ---------------------------------------------------------------- checks (harness side)


def _digest_file(path: Path) -> str:
    from buildtool.fingerprint import digest_bytes

    return digest_bytes(path.read_bytes())


def check_records(root: Path) -> tuple[list[str], list[str]]:
    """(unreadable, inconsistent): every stage.json must be readable JSON of the current
    format; everything a record lists (batches, also from its journal; a done stage's output
    and steps) must exist with the recorded digest. workflow.json must be readable JSON."""
    from buildtool.fingerprint import FORMAT_VERSION
    from buildtool.records import DONE_STATUSES, read_record

    unreadable: list[str] = []
    inconsistent: list[str] = []
    base = artifacts(root)
    summary = base / "workflow.json"
    if summary.exists():
        try:
            json.loads(summary.read_bytes())
        except ValueError as exc:
            unreadable.append(f"workflow.json: {exc}")
    if not base.is_dir():
        return unreadable, inconsistent
    for stage_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        path = stage_dir / "stage.json"
        if not path.exists():
            continue
        name = stage_dir.name
        try:
            data = json.loads(path.read_bytes())
        except ValueError as exc:
            unreadable.append(f"{name}/stage.json is not JSON: {exc}")
            continue
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            unreadable.append(f"{name}/stage.json has format {data.get('format')!r}")
            continue
        read = read_record(stage_dir)
        if read.record is None:
            unreadable.append(f"{name}/stage.json: {read.problem}")
            continue
        rec = read.record
        for b in rec.batches:
            f = base / b.file
            if not f.is_file():
                inconsistent.append(f"{name} ({rec.status}) lists {b.file}, which is missing")
            elif f.stat().st_size != b.size or _digest_file(f) != b.digest:
                inconsistent.append(f"{name} ({rec.status}) lists {b.file}, which differs")
        if rec.status in DONE_STATUSES:
            outs = [rec.output] if rec.output and rec.output.kind != "batches" else []
            for out in outs + list(rec.steps.values()):
                for fs in out.files:
                    f = root / fs.path
                    if not f.is_file() or _digest_file(f) != fs.digest:
                        inconsistent.append(f"{name} ({rec.status}) lists {out.kind} file "
                                            f"{fs.path}, which is missing or differs")
    return unreadable, inconsistent


def leftovers(root: Path) -> list[str]:
    """What a completed build must not leave behind: temp files anywhere in the project,
    journals beside records that are not running, batch files no record lists."""
    from buildtool.records import read_record

    # Not the compiled workflow's cache (compiled.py): a kill while it is stored leaves its
    # temp file, which nothing removes; harmless (a cache, never read), and only seen when the
    # Workflowfile changes between killed builds (the concurrent variants).
    found = [str(p.relative_to(root)) for p in root.rglob("*")
             if ".tmp." in p.name and ".compiled" not in p.parts]
    base = artifacts(root)
    for stage_dir in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
        rec = read_record(stage_dir).record
        if rec is None:
            continue
        journals = sorted(p.name for p in stage_dir.glob("journal-*"))
        if rec.status != "running" and journals:
            found += [f"{stage_dir.name}/{j}" for j in journals]
        listed = {Path(b.file).name for b in rec.batches}
        batches = stage_dir / "batches"
        if batches.is_dir():
            found += [f"{stage_dir.name}/batches/{p.name}" for p in batches.iterdir()
                      if p.name not in listed]
    return found


def snapshot(root: Path) -> dict[str, Any]:
    """The final outputs: each stage's status, rows, output digest and table; the run stage's
    and the export copies' bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from buildtool.records import read_record

    snap: dict[str, Any] = {}
    base = artifacts(root)
    for name in STAGE_NAMES:
        rec = read_record(base / name).record
        if rec is None:
            snap[f"record:{name}"] = None
            continue
        out = rec.output
        snap[f"record:{name}"] = (rec.status, out.kind if out else None,
                                  out.rows if out else None, out.digest if out else None)
        if out is None or out.kind == "files":
            continue
        files = [base / b.file for b in rec.batches] if out.kind == "batches" else \
            [root / f.path for f in out.files]
        snap[f"table:{name}"] = pa.concat_tables([pq.read_table(f) for f in files])
    for rel in RUN_OUTPUTS + EXPORTS:
        path = root / rel
        snap[f"file:{rel}"] = path.read_bytes() if path.is_file() else None
    return snap


def compare(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    diffs = []
    for key in sorted(set(got) | set(want)):
        a, b = got.get(key), want.get(key)
        same = a.equals(b) if hasattr(a, "equals") and b is not None else a == b
        if not same:
            diffs.append(f"{key} differs from an uninterrupted build's")
    return diffs


def read_calls(root: Path) -> list[tuple[str, str, str]]:
    log = root / "code" / "calls.log"
    if not log.exists():
        return []
    return [tuple(line.split(" ")) for line in log.read_text().splitlines()]  # type: ignore[misc]


def excess_calls(calls: list[tuple[str, str, str]], base: Counter[tuple[str, str]],
                 killed: list[str], in_flight: dict[str, set[tuple[str, str]]] | None = None
                 ) -> tuple[list[str], int]:
    """Calls beyond the allowance, and calls within it beyond `base` (the fresh runs).

    A serial build runs one user call at a time, so at any instant at most one call is in
    flight: the last one the build logged (a batch until its journal line is written, a
    callback until the stage's record is, the run stage's command until the record is). A
    concurrent build (`in_flight`, by build) had in flight every batch it called that no
    record or journal listed after its kill. A call may repeat once for each killed build that
    had it in flight, and never otherwise.
    """
    count = Counter((stage, what) for _, stage, what in calls)
    last: dict[str, tuple[str, str]] = {}
    for build, stage, what in calls:
        last[build] = (stage, what)
    allow = Counter(base)
    for build in killed:
        flying = set((in_flight or {}).get(build, ()))
        if build in last:
            flying.add(last[build])
        allow.update(flying)
    beyond = [f"{stage} {what}: called {n} times, allowed {allow[(stage, what)]}"
              for (stage, what), n in sorted(count.items()) if n > allow[(stage, what)]]
    within = sum(max(0, min(n, allow[k]) - base[k]) for k, n in count.items())
    return beyond, within


# ---------------------------------------------------------------- processes


def orphans(token: str) -> list[int]:
    """Pids of the running processes (not zombies) started under CRASH_TOKEN=`token`: what a
    killed build left running. A run stage's command is in a session of its own, so it is found
    by the environment it inherits, not by the build's process group. Needs /proc: elsewhere
    nothing is found (and a rebuild may then meet the command's lock)."""
    needle = f"\0CRASH_TOKEN={token}\0".encode()
    found = []
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()  # a zombie's reads empty
        except OSError:  # ended meanwhile, or another user's
            continue
        if needle in b"\0" + environ + b"\0":
            found.append(int(entry.name))
    return found


def spawned_children(pid: int) -> list[int]:
    """The worker processes of a build: its children running multiprocessing's spawn_main
    (not its resource tracker, nor a run stage's command). Needs /proc: elsewhere none."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def wait_orphans(token: str, limit: float) -> bool:
    """Wait until what a killed build left running has ended; SIGKILL it (by pid) when `limit`
    runs out. True when it ended by itself."""
    deadline = time.monotonic() + limit
    while pids := orphans(token):
        if time.monotonic() > deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------- the fuzzer


@dataclass
class Figures:
    rounds: int = 0
    kills: int = 0  # kill attempts: a SIGKILL scheduled (timer) or armed (event)
    timer_kills: int = 0
    event_kills: int = 0
    mid_stage: int = 0
    between_stages: int = 0
    after_end: int = 0  # the build had finished before its kill came
    builds: int = 0  # dd-build processes started
    phases: Counter[str] = field(default_factory=Counter)
    regenerated_within_allowance: int = 0
    regenerated_beyond_allowance: int = 0
    unreadable_records: int = 0
    inconsistent_records: int = 0
    leftover_files: int = 0
    output_mismatches: int = 0
    null_build_failures: int = 0
    failed_builds: int = 0
    orphans_outliving_kill: int = 0  # killed builds whose children still ran afterwards
    worker_kills: int = 0  # builds with a worker process SIGKILLed (the build itself not)
    worker_kills_landed: int = 0  # of them, a worker was found and killed
    worker_kill_failed_stage: int = 0  # ... and the build failed the stage (exit 1)
    bad_worker_kill_ends: int = 0  # ... and the build ended otherwise than 0 or 1 and said so
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return (self.regenerated_beyond_allowance + self.unreadable_records
                + self.inconsistent_records + self.leftover_files + self.output_mismatches
                + self.null_build_failures + self.failed_builds + self.bad_worker_kill_ends)

    def lines(self) -> Iterator[str]:
        yield f"rounds (fresh project, kills, a completed build, checks): {self.rounds}"
        yield (f"kills: {self.kills} ({self.timer_kills} by timer, {self.event_kills} at a "
               f"probe event)")
        yield f"  landed mid-stage: {self.mid_stage}"
        yield f"  landed between stages (start-up, planning, summary): {self.between_stages}"
        yield f"  landed after the end (build already finished): {self.after_end}"
        yield f"builds started: {self.builds}"
        yield ("batches regenerated within the in-flight allowance (any user call: batch, "
               f"callback, transform, run command): {self.regenerated_within_allowance}")
        yield ("batches regenerated beyond the in-flight allowance: "
               f"{self.regenerated_beyond_allowance}")
        yield f"unreadable records seen after kills: {self.unreadable_records}"
        yield f"records listing a missing or changed file after kills: {self.inconsistent_records}"
        yield f"leftover temp/journal/unlisted files after completed builds: {self.leftover_files}"
        yield f"final output mismatches: {self.output_mismatches}"
        yield f"null builds that ran something: {self.null_build_failures}"
        yield f"builds that should have completed but failed: {self.failed_builds}"
        yield f"killed builds whose run-stage command outlived them: {self.orphans_outliving_kill}"
        yield (f"worker kills (a worker process of an executor: process stage, not the build): "
               f"{self.worker_kills}, {self.worker_kills_landed} found a worker to kill, "
               f"{self.worker_kill_failed_stage} failed the stage cleanly")
        yield f"builds that ended badly after a worker kill: {self.bad_worker_kill_ends}"
        yield f"wall time: {self.wall_s:.1f} s"
        yield "where the mid-stage kills landed (stage: step):"
        for label, n in sorted(self.phases.items(), key=lambda kv: (-kv[1], kv[0])):
            yield f"  {n:4d}  {label}"


@dataclass
class Config:
    kills: int = 30
    seed: int = 0
    max_delay: float = 1.5  # timer kills: SIGKILL after uniform(0, max_delay) seconds
    timer_share: float = 0.5  # the rest are event kills
    max_kills_per_round: int = 4
    force_share: float = 0.4  # rounds that then force one stage to rerun, and kill that too
    fsync_delay: float = 0.003  # a slow disk: each fsync (syncfs, rename) sleeps this long first
    # Seconds between syncs of a stage's batches (DD_BUILD_SYNC_INTERVAL_S) of the builds a
    # random round kills, each drawn from these; of targeted kills (None: dd-build's default).
    sync_intervals: tuple[float, ...] = (0.0, 1.0)
    window_sync: float | None = None
    timeout: float = 120.0
    # Share of the killed builds of random rounds that run the generate stages concurrently
    # (one of CONCURRENT_VARIANTS, drawn from an RNG of its own: the other draws stay as
    # they were); the builds that complete are serial.
    concurrency_share: float = 0.0
    # Share of the killed builds of random rounds that are not killed themselves: they run the
    # generate stages in worker processes, and one worker is SIGKILLed (worker_kill_once).
    worker_kill_share: float = 0.0


class Fuzzer:
    """Runs rounds of kills on fresh copies of the project and keeps the figures."""

    def __init__(self, workdir: Path, config: Config,
                 progress: Callable[[str], None] | None = None) -> None:
        self.workdir = workdir
        self.config = config
        self.rng = random.Random(config.seed)
        self.progress = progress or (lambda line: None)
        self.figures = Figures()
        self.reference: dict[str, Any] | None = None
        self.full_events = 0  # probe events of an uninterrupted build
        self.stage_events: dict[str, int] = {}
        self.startup_s = 0.5  # an uninterrupted build's time to its first stage, and in all
        self.full_s = 2.0
        self.remaining = 0  # estimated probe events left before the round's work is done
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.token = uuid.uuid4().hex  # marks the processes of this fuzzer's builds
        self.variant_rng = random.Random(f"{config.seed}:concurrency")
        self.in_flight: dict[str, set[tuple[str, str]]] = {}  # killed build -> its lost batches
        self.concurrent_kills = 0
        self.worker_rng = random.Random(f"{config.seed}:workers")

    # -- processes

    def env(self, build: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRASH_")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env["CRASH_BUILD"] = build
        env["CRASH_TOKEN"] = self.build_token(build)
        env["CRASH_PHASE_FILE"] = str(self.logs / f"phase-{build}")
        env["CRASH_FSYNC_DELAY_S"] = str(self.config.fsync_delay)
        env.update(extra)
        return env

    def build_token(self, build: str) -> str:
        return f"{self.token}-{build}"

    def start(self, root: Path, build: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """A build in its own session, as a user's terminal would start it."""
        self.figures.builds += 1
        with open(self.logs / f"stderr-{build}", "wb") as err:
            return subprocess.Popen([sys.executable, str(THIS), "--dd-build", "-q", *args],
                                    cwd=root, env=self.env(build, **env),
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)

    def run(self, root: Path, build: str, *args: str) -> tuple[int, str]:
        self.figures.builds += 1
        proc = subprocess.run([sys.executable, str(THIS), "--dd-build", *args], cwd=root,
                              env=self.env(build), capture_output=True, text=True,
                              timeout=self.config.timeout)
        return proc.returncode, proc.stdout + proc.stderr

    def problem(self, text: str) -> None:
        self.figures.problems.append(text)
        self.progress(f"  PROBLEM: {text}")

    # -- the reference

    def prepare(self) -> None:
        """An uninterrupted build: the outputs to compare with, its probe events and times."""
        root = make_project(self.workdir / "reference")
        phase = self.logs / "phase-ref"
        started = time.monotonic()
        proc = self.start(root, "ref")
        first_stage = None
        while proc.poll() is None:
            if first_stage is None and Landing.read(phase).label != "startup":
                first_stage = time.monotonic() - started
            time.sleep(0.005)
        if proc.returncode != 0:
            raise RuntimeError(f"the uninterrupted build failed ({proc.returncode}):\n"
                               f"{(self.logs / 'stderr-ref').read_text()}")
        self.full_s = time.monotonic() - started
        self.startup_s = min(first_stage or self.full_s, self.full_s)
        self.full_events = Landing.read(phase).events
        self.stage_events = Landing.per_stage(phase)
        self.reference = snapshot(root)
        self.progress(f"uninterrupted build: {self.full_s:.2f} s ({self.startup_s:.2f} s to its "
                      f"first stage), {self.full_events} probe events")

    def adopt(self, other: Fuzzer) -> None:
        """Reuse another fuzzer's uninterrupted build (same project, same machine)."""
        self.reference, self.full_events = other.reference, other.full_events
        self.stage_events = dict(other.stage_events)
        self.startup_s, self.full_s = other.startup_s, other.full_s

    # -- one kill

    def timer_bound(self) -> float:
        """Timer kills wait uniform(0, bound): up to max_delay, less when little work is left."""
        share = min(1.0, self.remaining / max(1, self.full_events))
        guess = 1.15 * (self.startup_s + share * (self.full_s - self.startup_s))
        return min(self.config.max_delay, guess)

    def kill_once(self, root: Path, build: str, killed: list[str], *args: str,
                  target: str | None = None) -> Landing:
        """Start a build and SIGKILL it: by timer or at a random probe event (or at `target`,
        a STAGE:LABEL[#K] of the probe or a hold:STAGE:WHAT in user code); then wait for what
        it left running and check the records."""
        cfg, fig = self.config, self.figures
        fig.kills += 1
        self.variant = "" if target is not None else self._concurrency(root)
        if target is not None and target.startswith("hold:"):
            how = f"at {target}"
            fig.event_kills += 1
            proc = self.kill_at_hold(root, build, target.removeprefix("hold:"), *args)
        elif target is not None:
            how = f"at {target}"
            fig.event_kills += 1
            sync = {} if cfg.window_sync is None else \
                {"DD_BUILD_SYNC_INTERVAL_S": str(cfg.window_sync)}
            proc = self.start(root, build, *args, CRASH_KILL_AT=target, **sync)
            proc.wait(timeout=cfg.timeout)
        elif self.rng.random() < cfg.timer_share:
            fig.timer_kills += 1
            after = self.rng.uniform(0.0, self.timer_bound())
            sync = str(self.rng.choice(cfg.sync_intervals))
            how = f"timer {after:.2f}s, sync {sync}s"
            proc = self.start(root, build, *args, DD_BUILD_SYNC_INTERVAL_S=sync)
            try:
                proc.wait(timeout=after)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=cfg.timeout)
        else:
            fig.event_kills += 1
            n = self.rng.randint(1, max(1, self.remaining))
            sync = str(self.rng.choice(cfg.sync_intervals))
            how = f"event {n}, sync {sync}s"
            proc = self.start(root, build, *args, CRASH_KILL_AT_EVENT=str(n),
                              DD_BUILD_SYNC_INTERVAL_S=sync)
            proc.wait(timeout=cfg.timeout)
        landing = Landing.read(self.logs / f"phase-{build}")
        where = f"{landing.stage}: {landing.label} {landing.detail}".strip()
        listed = listed_batches(root)
        self.in_flight[build] = {(stage, what) for b, stage, what in read_calls(root)
                                 if b == build and stage in GENERATE_BATCHES
                                 and (stage, what) not in listed}
        how += self.variant
        if proc.returncode != -signal.SIGKILL:
            fig.after_end += 1
            where = f"after the end (exit {proc.returncode})"
            if proc.returncode != 0:
                fig.failed_builds += 1
                self.problem(f"build {build} exited {proc.returncode}: "
                             f"{(self.logs / f'stderr-{build}').read_text()[-2000:]}")
        else:
            killed.append(build)
            # The next attempt redoes what this one did not finish, plus a few events to begin.
            self.remaining = max(8, self.remaining - landing.events + 8)
            if orphans(self.build_token(build)):
                fig.orphans_outliving_kill += 1
                where += " (its command runs on)"
                # It holds the build lock (a rebuild would exit 4): wait, as a user would.
                wait_orphans(self.build_token(build), 30.0)
            if landing.label == "exit":
                fig.after_end += 1  # killed while the interpreter shut down: its work was done
            elif landing.mid_stage:
                fig.mid_stage += 1
                fig.phases[f"{landing.stage}: {landing.label}"] += 1
            else:
                fig.between_stages += 1
        unreadable, inconsistent = check_records(root)
        fig.unreadable_records += len(unreadable)
        fig.inconsistent_records += len(inconsistent)
        for text in unreadable + inconsistent:
            self.problem(f"after kill {build}: {text}")
        self.progress(f"  kill {build} ({how}{' ' + ' '.join(args) if args else ''}): {where}")
        return landing

    variant = ""  # how the last killed build ran its batches, when concurrently

    def _concurrency(self, root: Path) -> str:
        """Before a random kill: the Workflowfile, concurrent for `concurrency_share` of the
        builds; how (for the progress line)."""
        concurrency, executor = 1, "thread"
        if self.config.concurrency_share and \
                self.variant_rng.random() < self.config.concurrency_share:
            concurrency, executor = self.variant_rng.choice(CONCURRENT_VARIANTS)
            self.concurrent_kills += 1
        set_concurrency(root, concurrency, executor)
        return f", concurrency {concurrency} {executor}" if concurrency > 1 else ""

    def worker_kill_once(self, root: Path, build: str, killed: list[str]) -> bool:
        """A build running the generate stages in 2-4 worker processes; SIGKILL one worker (a
        child of the build running multiprocessing's spawn_main) once the stage drawn has
        logged K calls in this build (K drawn: 0 kills a worker as it starts). The build must
        fail the stage cleanly (exit 1, saying a worker process ended) or finish (exit 0: the
        stage's batches had all come back), leave every record consistent and no temp file
        or worker behind; what was in flight may be made again by the next build, nothing
        else. True when a worker was killed."""
        fig, rng = self.figures, self.worker_rng
        fig.kills += 1
        fig.worker_kills += 1
        concurrency = rng.choice((2, 3, 4))
        set_concurrency(root, concurrency, "process")
        stage = rng.choice(tuple(GENERATE_BATCHES))
        after = rng.randint(0, GENERATE_BATCHES[stage] - 1)
        proc = self.start(root, build, DD_BUILD_SYNC_INTERVAL_S=str(rng.choice((0, 1))))
        victim = None
        deadline = time.monotonic() + self.config.timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if victim is None:
                calls = sum(1 for b, s, _ in read_calls(root) if b == build and s == stage)
                workers = spawned_children(proc.pid) if calls >= after else []
                if workers:
                    victim = rng.choice(workers)
                    try:
                        os.kill(victim, signal.SIGKILL)
                    except ProcessLookupError:  # it ended meanwhile: the next one
                        victim = None
            time.sleep(0.005)
        if proc.poll() is None:
            proc.kill()
        code = proc.wait(timeout=self.config.timeout)
        err = (self.logs / f"stderr-{build}").read_text()
        how = f"worker kill in {stage} after {after} calls, concurrency {concurrency}"
        listed = listed_batches(root)
        self.in_flight[build] = {(s, w) for b, s, w in read_calls(root)
                                 if b == build and s in GENERATE_BATCHES and (s, w) not in listed}
        killed.append(build)  # what it had in flight may be made again
        if victim is not None:
            fig.worker_kills_landed += 1
        if code == 1 and victim is not None and "worker process" in err:
            fig.worker_kill_failed_stage += 1
        elif code != 0:
            fig.bad_worker_kill_ends += 1
            self.problem(f"build {build} ({how}, worker {victim}) exited {code}: {err[-2000:]}")
        if not wait_orphans(self.build_token(build), 15.0):
            fig.bad_worker_kill_ends += 1
            self.problem(f"build {build} ({how}) exited, its worker processes ran on")
        temps = [str(p.relative_to(root)) for p in root.rglob("*")
                 if ".tmp." in p.name and ".compiled" not in p.parts]
        unreadable, inconsistent = check_records(root)
        fig.unreadable_records += len(unreadable)
        fig.inconsistent_records += len(inconsistent)
        fig.leftover_files += len(temps)
        for text in unreadable + inconsistent + [f"a temp file left: {t}" for t in temps]:
            self.problem(f"after build {build} ({how}): {text}")
        self.progress(f"  worker kill {build} ({how}): "
                      f"{'no worker found' if victim is None else f'exit {code}'}")
        return victim is not None

    def kill_at_hold(self, root: Path, build: str, hold: str, *args: str
                     ) -> subprocess.Popen[bytes]:
        """A build whose user code holds at `hold` (STAGE:WHAT): SIGKILL it once the code has
        written its marker, then release the code (a run stage's command goes on, orphaned)."""
        marker = self.logs / f"held-{build}"
        proc = self.start(root, build, *args, CRASH_HOLD_AT=hold, CRASH_HOLD_FILE=str(marker))
        deadline = time.monotonic() + self.config.timeout
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=self.config.timeout)
        marker.with_name(marker.name + ".release").write_text("")
        return proc

    def complete(self, root: Path, build: str) -> bool:
        set_concurrency(root, 1, "thread")  # a serial build completes what the killed ones began
        code, out = self.run(root, build, "-q")
        if code != 0:
            self.figures.failed_builds += 1
            self.problem(f"build {build} exited {code}: {out[-2000:]}")
            return False
        return True

    # -- rounds

    def round(self, index: int, kills: int) -> None:
        """A fresh project: 1..max_kills_per_round killed builds, then a build that completes;
        sometimes then a build forcing one stage, killed too, and builds until one completes.
        Then every check."""
        cfg = self.config
        root = self.fresh_project(index)
        base = fresh_calls()
        killed: list[str] = []
        serial = iter(range(1_000_000))
        fresh = min(kills, self.rng.randint(1, cfg.max_kills_per_round))
        self.remaining = self.full_events
        for _ in range(fresh):
            if cfg.worker_kill_share and self.worker_rng.random() < cfg.worker_kill_share:
                self.worker_kill_once(root, f"{index}.{next(serial)}", killed)
            else:
                self.kill_once(root, f"{index}.{next(serial)}", killed)
        done = self.complete(root, f"{index}.{next(serial)}")
        left = kills - fresh
        if done and left and self.rng.random() < cfg.force_share:
            stage = self.rng.choice(STAGE_NAMES)
            base.update(STAGE_CALLS[stage])  # forcing reruns the stage once more
            self.remaining = self.stage_events.get(stage, 0) + 8
            for i in range(min(left, self.rng.randint(1, cfg.max_kills_per_round))):
                args = ("--force", stage) if i == 0 else ()
                self.kill_once(root, f"{index}.{next(serial)}", killed, *args)
            done = self.complete(root, f"{index}.{next(serial)}")
        self.end_round(root, index, base, killed, done, next(serial))

    def kill_sequence(self, index: int, targets: list[str]) -> list[Landing]:
        """A fresh project, one build per target, each killed there (a probe STAGE:LABEL[#K]
        or a hold:STAGE:WHAT); then a build that completes, and every check."""
        root = self.fresh_project(index)
        killed: list[str] = []
        landings = []
        for n, target in enumerate(targets):
            landing = self.kill_once(root, f"{index}.{n}", killed, target=target)
            if killed[-1:] != [f"{index}.{n}"]:
                self.problem(f"build {index}.{n} was not killed at {target}")
            landings.append(landing)
        done = self.complete(root, f"{index}.{len(targets)}")
        self.end_round(root, index, fresh_calls(), killed, done, len(targets) + 1)
        return landings

    def fresh_project(self, index: int) -> Path:
        root = self.workdir / f"round-{index:04d}"
        shutil.rmtree(root, ignore_errors=True)
        return make_project(root)

    def end_round(self, root: Path, index: int, base: Counter[tuple[str, str]],
                  killed: list[str], done: bool, serial: int) -> None:
        self.figures.rounds += 1
        if done:
            self.check_round(root, index, base, killed, serial)

    def check_round(self, root: Path, index: int, base: Counter[tuple[str, str]],
                    killed: list[str], serial: int) -> None:
        fig = self.figures
        unreadable, inconsistent = check_records(root)
        fig.unreadable_records += len(unreadable)
        fig.inconsistent_records += len(inconsistent)
        for text in unreadable + inconsistent:
            self.problem(f"round {index}, after the completed build: {text}")
        left = leftovers(root)
        fig.leftover_files += len(left)
        for text in left:
            self.problem(f"round {index}: left after a completed build: {text}")
        assert self.reference is not None
        diffs = compare(snapshot(root), self.reference)
        fig.output_mismatches += len(diffs)
        for text in diffs:
            self.problem(f"round {index}: {text}")
        beyond, within = excess_calls(read_calls(root), base, killed, self.in_flight)
        fig.regenerated_beyond_allowance += len(beyond)
        fig.regenerated_within_allowance += within
        for text in beyond:
            self.problem(f"round {index}: {text}")
        self.null_build(root, f"{index}.{serial}")

    def null_build(self, root: Path, build: str) -> None:
        """Nothing runs: every stage up to date, no user call, no output rewritten."""
        calls_before = read_calls(root)
        outputs = {rel: (root / rel).stat().st_mtime_ns for rel in RUN_OUTPUTS + EXPORTS}
        code, out = self.run(root, build, "--json")
        try:
            doc = json.loads(out[:out.rindex("}") + 1]) if code == 0 else None
        except ValueError:
            doc = None
        ran = [] if doc is None else [
            s["stage"] for s in doc["stages"]
            if s.get("result") != "up_to_date" or s.get("batches_run")]
        changed = [rel for rel, m in outputs.items() if (root / rel).stat().st_mtime_ns != m]
        if doc is None or ran or changed or read_calls(root) != calls_before:
            self.figures.null_build_failures += 1
            self.problem(f"null build {build} (exit {code}) ran {ran}, changed {changed}: "
                         f"{out[-1500:]}")

    def fuzz(self) -> Figures:
        """Rounds until `config.kills` kills were made."""
        started = time.monotonic()
        if self.reference is None:
            self.prepare()
        index = 0
        while self.figures.kills < self.config.kills:
            self.round(index, self.config.kills - self.figures.kills)
            fig = self.figures
            self.progress(f"round {index}: {fig.kills}/{self.config.kills} kills, "
                          f"{fig.mid_stage} mid-stage, {fig.violations} violations, "
                          f"{time.monotonic() - started:.0f} s")
            index += 1
        self.figures.wall_s = time.monotonic() - started
        return self.figures


def fresh_calls() -> Counter[tuple[str, str]]:
    """Each user call once: what one uninterrupted build of a fresh project makes."""
    base: Counter[tuple[str, str]] = Counter()
    for calls in STAGE_CALLS.values():
        base.update(calls)
    return base


if __name__ == "__main__":
    if sys.argv[1:2] != ["--dd-build"]:
        sys.exit("usage: crash_support.py --dd-build [dd-build arguments]")
    sys.exit(probed_main(sys.argv[2:]))
