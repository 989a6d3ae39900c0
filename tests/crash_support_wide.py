"""Crash safety on a wider project: a flaky batch retried, a callback switched, a folder output.

A second crash scenario beside tests/crash_support.py (whose probe, record checks and call
allowance it reuses; its own project, rounds and references are here). The project:

  seeds     generate, `retries: 2`; in the project under test each batch's first attempt in a
            build draws from ctx.rng and raises (a marker file per build and batch), so every
            batch is retried; the references are built without that, untroubled
  enriched  generate seeded from seeds, with an on_success callback and an export copy
  report    run stage whose output is a folder of `params.parts` part files

and an edit between builds: the callback is switched (`split`, two files → `halve`, one) and
`parts: 3` becomes `parts: 2`. A round: a fresh project at version 1, 1-3 SIGKILLed builds
(each resuming the one before), a build that completes, checked against an untroubled fresh
build of version 1; then the edit, 1-3 more kills, a completed build, checked against an
untroubled fresh build of version 2 (so part-2 of the old folder must be gone, and the rows
of a retried batch must be those of an untroubled one). Checks as in crash_support: records
readable after every kill, nothing left over, no user call repeated beyond the one in flight
at each kill, and a null build that runs nothing.

Kills: by timer, at a random probe event, or at a named step (`WIDE_WINDOWS`: step entries of
the probe, never a timed delay).

Stdlib only at import, like crash_support.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crash_support as cs

STAGES = ("seeds", "enriched", "report")
PARTS = "reports/parts"
EXPORT = "exports/enriched.parquet"

WORKFLOW_V1 = """\
workflow: crash
stages:
  seeds:
    generate: code/stages.py:rows
    num_records: 18
    batch_size: 3
    retries: 2
    params: {tag: s, work: 2000, flaky: true}
  enriched:
    generate: code/stages.py:rows
    seed: seeds
    num_records: 24
    batch_size: 4
    params: {tag: e, work: 2000}
    on_success: code/stages.py:split
    outputs: [exports/enriched.parquet]
  report:
    run: python code/report.py {params.parts} {params.pause} {outputs} {inputs}
    inputs: [enriched, code/report.py]
    outputs: [reports/parts]
    params: {parts: 3, pause: 0.05}
"""

# Version 2: the callback switched, one part file fewer.
WORKFLOW_V2 = WORKFLOW_V1.replace("code/stages.py:split", "code/stages.py:halve") \
    .replace("parts: 3,", "parts: 2,")

STAGE_CODE = '''\
import hashlib
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


def log_call(stage, what):
    line = f"{os.environ.get('CRASH_BUILD', '?')} {stage} {what}\\n".encode()
    fd = os.open(HERE / "calls.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def work(text, rounds):
    h = text.encode()
    for _ in range(rounds):
        h = hashlib.sha256(h).digest()
    return h.hex()[:16]


def flaky(ctx):
    """With params.flaky and code/flaky.on (the project under test, not the references): the
    first attempt of each batch in a build draws from ctx.rng, then raises; `retries` calls
    it again."""
    if not ctx.params.get("flaky") or not (HERE / "flaky.on").exists():
        return
    marker = HERE / "flaky" / f"{os.environ.get('CRASH_BUILD', '?')}-{ctx.stage_name}-{ctx.batch_index}"
    if marker.exists():
        return
    marker.parent.mkdir(exist_ok=True)
    marker.write_text("")
    ctx.rng.random()
    raise RuntimeError("flaky: the first attempt fails")


def rows(ctx):
    flaky(ctx)  # a failed attempt logs no call: its retry does
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


def _table(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
    return pa.concat_tables([pq.read_table(f) for f in files])


def split(ctx):
    """on_success, version 1: the output in two parquet files."""
    import pyarrow.parquet as pq

    log_call(ctx.stage_name, "callback")
    table = _table(ctx.stage_output)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), Path(ctx.out_dir) / "part-0.parquet")
    pq.write_table(table.slice(half), Path(ctx.out_dir) / "part-1.parquet")
    return ctx.out_dir


def halve(ctx):
    """on_success, version 2: every other row, in one file."""
    import pyarrow.parquet as pq

    log_call(ctx.stage_name, "callback")
    table = _table(ctx.stage_output)
    pq.write_table(table.take(list(range(0, table.num_rows, 2))),
                   Path(ctx.out_dir) / "data.parquet")
    return ctx.out_dir
'''

# Writes its part files one at a time, pausing in between (timer kills land inside).
REPORT_CODE = '''\
import hashlib
import os
import sys
import time
from pathlib import Path

here = Path(__file__).resolve().parent
line = f"{os.environ.get('CRASH_BUILD', '?')} report all\\n".encode()
fd = os.open(here / "calls.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, line)
os.close(fd)

parts, pause, out, inputs = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
h = hashlib.sha256()
for arg in inputs:
    path = Path(arg)
    for f in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        h.update(f.name.encode() + b"\\0" + f.read_bytes())
out.mkdir(parents=True, exist_ok=True)
for i in range(parts):
    (out / f"part-{i}.txt").write_text(f"{i} of {parts}: {h.hexdigest()}\\n")
    time.sleep(pause)
'''

# Named kills in version 2's build, in the order it reaches them (probe STAGE:STEP entries,
# the same in every version of the probe): (target, why).
WIDE_WINDOWS: tuple[tuple[str, str], ...] = (
    ("enriched:callback", "the switched callback about to run; the old one's output there"),
    ("enriched:export", "the export copy of the new callback's output about to be written"),
    ("report:run-command", "the command about to write 2 parts where 3 are"),
)


def make_project(root: Path, version: int = 1, flaky: bool = True) -> Path:
    (root / "code").mkdir(parents=True, exist_ok=True)
    set_version(root, version)
    (root / "code" / "stages.py").write_text(STAGE_CODE)
    (root / "code" / "report.py").write_text(REPORT_CODE)
    if flaky:
        (root / "code" / "flaky.on").write_text("")
    return root


def set_version(root: Path, version: int) -> None:
    (root / "Workflowfile").write_text(WORKFLOW_V1 if version == 1 else WORKFLOW_V2)


def snapshot(root: Path) -> dict[str, Any]:
    """Each stage's status, output rows and digest, and table; the run stage's folder and the
    export copy, file by file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from buildtool.records import read_record

    snap: dict[str, Any] = {}
    base = cs.artifacts(root)
    for name in STAGES:
        rec = read_record(base / name).record
        out = rec.output if rec else None
        snap[f"record:{name}"] = None if rec is None else (
            rec.status, out.kind if out else None, out.rows if out else None,
            out.digest if out else None)
        if out is not None and out.kind != "files":
            files = [base / b.file for b in rec.batches] if out.kind == "batches" else \
                [root / f.path for f in out.files]
            snap[f"table:{name}"] = pa.concat_tables([pq.read_table(f) for f in files])
    folder = root / PARTS
    snap[f"files:{PARTS}"] = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        snap[f"file:{PARTS}/{path.name}"] = path.read_bytes()
    snap[f"file:{EXPORT}"] = (root / EXPORT).read_bytes() if (root / EXPORT).is_file() else None
    return snap


def _orphans(token: str) -> list[int]:
    """Running processes started under CRASH_WIDE_TOKEN=`token` (what a killed build left)."""
    needle = f"\0CRASH_WIDE_TOKEN={token}\0".encode()
    found = []
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in b"\0" + environ + b"\0":
            found.append(int(entry.name))
    return found


def _wait_orphans(token: str, limit: float = 30.0) -> bool:
    deadline = time.monotonic() + limit
    while pids := _orphans(token):
        if time.monotonic() > deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return False
        time.sleep(0.02)
    return True


@dataclass
class WideConfig:
    kills: int = 12
    seed: int = 0
    max_delay: float = 1.5
    timer_share: float = 0.5
    max_kills_per_phase: int = 3
    fsync_delay: float = 0.002
    timeout: float = 120.0
    sync_intervals: tuple[float, ...] = (0.0, 1.0)  # as crash_support.Config's


class WideFuzzer:
    """Rounds of kills on fresh copies of the wide project, across the version 1 → 2 edit."""

    def __init__(self, workdir: Path, config: WideConfig,
                 progress: Callable[[str], None] | None = None) -> None:
        self.workdir = workdir
        self.config = config
        self.rng = random.Random(config.seed)
        self.progress = progress or (lambda line: None)
        self.figures = cs.Figures()
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.token = uuid.uuid4().hex
        self.reference: dict[int, dict[str, Any]] = {}
        self.events: dict[int, int] = {}  # probe events of an uninterrupted build of each phase
        self.seconds: dict[int, float] = {}
        self.fresh_calls: Counter[tuple[str, str]] = Counter()  # one fresh v1 build's
        self.switch_calls: Counter[tuple[str, str]] = Counter()  # the v1 → v2 build's
        self.landings: list[cs.Landing] = []  # where each kill landed, in order

    # -- processes

    def env(self, build: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRASH_")}
        env["PYTHONPATH"] = str(cs.REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env["DD_BUILD_RETRY_BASE_S"] = "0.001"
        env["CRASH_BUILD"] = build
        env["CRASH_WIDE_TOKEN"] = f"{self.token}-{build}"
        env["CRASH_PHASE_FILE"] = str(self.logs / f"phase-{build}")
        env["CRASH_FSYNC_DELAY_S"] = str(self.config.fsync_delay)
        env.update(extra)
        return env

    def start(self, root: Path, build: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        self.figures.builds += 1
        with open(self.logs / f"stderr-{build}", "wb") as err:
            return subprocess.Popen([sys.executable, str(cs.THIS), "--dd-build", "-q", *args],
                                    cwd=root, env=self.env(build, **env),
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)

    def run(self, root: Path, build: str, *args: str) -> tuple[int, str, str]:
        self.figures.builds += 1
        proc = subprocess.run([sys.executable, str(cs.THIS), "--dd-build", *args], cwd=root,
                              env=self.env(build), capture_output=True, text=True,
                              timeout=self.config.timeout)
        return proc.returncode, proc.stdout, proc.stderr

    def problem(self, text: str) -> None:
        self.figures.problems.append(text)
        self.progress(f"  PROBLEM: {text}")

    # -- references

    def prepare(self) -> None:
        """Untroubled, uninterrupted builds: version 1 fresh, then edited to version 2 (its
        calls are the edit's allowance, and its result must equal a fresh version 2's), and
        version 2 fresh."""
        for version in (1, 2):
            root = make_project(self.workdir / f"reference-{version}", version, flaky=False)
            started = time.monotonic()
            code, _, err = self.run(root, f"ref{version}", "-q")
            if code != 0:
                raise RuntimeError(f"the uninterrupted build of version {version} failed "
                                   f"({code}):\n{err}")
            self.seconds[version] = time.monotonic() - started
            self.events[version] = cs.Landing.read(self.logs / f"phase-ref{version}").events
            self.reference[version] = snapshot(root)
        root = self.workdir / "reference-1"
        self.fresh_calls = Counter((s, w) for _, s, w in cs.read_calls(root))
        set_version(root, 2)
        before = len(cs.read_calls(root))
        code, _, err = self.run(root, "ref1to2", "-q")
        if code != 0:
            raise RuntimeError(f"the build after the edit failed ({code}):\n{err}")
        self.switch_calls = Counter((s, w) for _, s, w in cs.read_calls(root)[before:])
        self.events[2] = cs.Landing.read(self.logs / "phase-ref1to2").events
        for text in cs.compare(snapshot(root), self.reference[2]):
            self.figures.output_mismatches += 1
            self.problem(f"without any kill, version 1 built then version 2: {text} "
                         "(a fresh version 2 build's)")
        self.progress(f"uninterrupted builds: v1 {self.seconds[1]:.2f} s, {self.events[1]} "
                      f"probe events; v1 → v2 calls {sorted(self.switch_calls)}")

    def adopt(self, other: WideFuzzer) -> None:
        """Reuse another fuzzer's references (same project, same machine)."""
        self.reference, self.events, self.seconds = other.reference, other.events, other.seconds
        self.fresh_calls, self.switch_calls = other.fresh_calls, other.switch_calls

    # -- kills

    def kill_once(self, root: Path, build: str, killed: list[str], version: int,
                  target: str | None = None) -> None:
        cfg, fig = self.config, self.figures
        fig.kills += 1
        if target is not None or self.rng.random() >= cfg.timer_share:
            fig.event_kills += 1
            if target is None:
                target_env = {"CRASH_KILL_AT_EVENT": str(self.rng.randint(1, self.events[version])),
                              "DD_BUILD_SYNC_INTERVAL_S": str(self.rng.choice(cfg.sync_intervals))}
            else:
                target_env = {"CRASH_KILL_AT": target}
            how = f"at {target or 'event ' + target_env['CRASH_KILL_AT_EVENT']}"
            proc = self.start(root, build, **target_env)
            proc.wait(timeout=cfg.timeout)
        else:
            fig.timer_kills += 1
            after = self.rng.uniform(0.0, min(cfg.max_delay, 1.2 * self.seconds[version]))
            sync = str(self.rng.choice(cfg.sync_intervals))
            how = f"timer {after:.2f}s, sync {sync}s"
            proc = self.start(root, build, DD_BUILD_SYNC_INTERVAL_S=sync)
            try:
                proc.wait(timeout=after)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=cfg.timeout)
        landing = cs.Landing.read(self.logs / f"phase-{build}")
        self.landings.append(landing)
        where = f"{landing.stage}: {landing.label}"
        if proc.returncode != -signal.SIGKILL:
            fig.after_end += 1
            where = f"after the end (exit {proc.returncode})"
            if proc.returncode != 0:
                fig.failed_builds += 1
                self.problem(f"build {build} exited {proc.returncode}: "
                             f"{(self.logs / f'stderr-{build}').read_text()[-2000:]}")
        else:
            killed.append(build)
            if _orphans(f"{self.token}-{build}"):
                fig.orphans_outliving_kill += 1
                _wait_orphans(f"{self.token}-{build}")
            if landing.mid_stage:
                fig.mid_stage += 1
                fig.phases[where] += 1
            else:
                fig.between_stages += 1
        unreadable, inconsistent = cs.check_records(root)
        fig.unreadable_records += len(unreadable)
        fig.inconsistent_records += len(inconsistent)
        for text in unreadable + inconsistent:
            self.problem(f"after kill {build}: {text}")
        self.progress(f"  kill {build} (v{version}, {how}): {where}")

    def complete(self, root: Path, build: str) -> bool:
        code, out, err = self.run(root, build, "-q")
        if code != 0:
            self.figures.failed_builds += 1
            self.problem(f"build {build} exited {code}: {(out + err)[-2000:]}")
        return code == 0

    # -- rounds

    def round(self, index: int, targets: list[str] | None = None) -> None:
        """Version 1: kills, a completed build, checks; the edit; version 2: kills (at
        `targets` when given), a completed build, checks."""
        root = self.workdir / f"round-{index:04d}"
        shutil.rmtree(root, ignore_errors=True)
        make_project(root, 1)
        killed: list[str] = []
        serial = iter(range(1_000_000))
        base = Counter(self.fresh_calls)
        for version in (1, 2):
            if version == 2:
                set_version(root, 2)
                base.update(self.switch_calls)
            kills = [None] * self.rng.randint(1, self.config.max_kills_per_phase) \
                if targets is None or version == 1 else list(targets)
            for target in kills:
                self.kill_once(root, f"{index}.{next(serial)}", killed, version, target)
            if not self.complete(root, f"{index}.{next(serial)}"):
                break
            self.check(root, index, version, base, killed, f"{index}.{next(serial)}")
        self.figures.rounds += 1

    def check(self, root: Path, index: int, version: int, base: Counter[tuple[str, str]],
              killed: list[str], null_build: str) -> None:
        fig = self.figures
        unreadable, inconsistent = cs.check_records(root)
        fig.unreadable_records += len(unreadable)
        fig.inconsistent_records += len(inconsistent)
        left = cs.leftovers(root)
        fig.leftover_files += len(left)
        diffs = cs.compare(snapshot(root), self.reference[version])
        fig.output_mismatches += len(diffs)
        beyond, within = cs.excess_calls(cs.read_calls(root), base, killed)
        fig.regenerated_beyond_allowance += len(beyond)
        fig.regenerated_within_allowance += within
        for text in unreadable + inconsistent + [f"left: {t}" for t in left] + beyond + \
                [f"{t} (an untroubled, uninterrupted build's of version {version})"
                 for t in diffs]:
            self.problem(f"round {index}, version {version}: {text}")
        self.null_build(root, null_build)

    def null_build(self, root: Path, build: str) -> None:
        calls = cs.read_calls(root)
        mtimes = {p: p.stat().st_mtime_ns for p in [root / EXPORT, *(root / PARTS).glob("*")]}
        code, out, err = self.run(root, build, "--json")
        try:
            doc = json.loads(out) if code == 0 else None
        except ValueError:
            doc = None
        ran = [] if doc is None else [s["stage"] for s in doc["stages"]
                                      if s.get("result") != "up_to_date" or s.get("batches_run")]
        changed = [str(p) for p, m in mtimes.items() if not p.exists() or p.stat().st_mtime_ns != m]
        if doc is None or ran or changed or cs.read_calls(root) != calls:
            self.figures.null_build_failures += 1
            self.problem(f"null build {build} (exit {code}) ran {ran}, changed {changed}: "
                         f"{(out + err)[-1500:]}")

    def fuzz(self) -> cs.Figures:
        started = time.monotonic()
        if not self.reference:
            self.prepare()
        index = 0
        while self.figures.kills < self.config.kills:
            self.round(index)
            self.progress(f"round {index}: {self.figures.kills}/{self.config.kills} kills, "
                          f"{self.figures.violations} violations")
            index += 1
        self.figures.wall_s = time.monotonic() - started
        return self.figures
