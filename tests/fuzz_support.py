"""Correctness fuzzing of dd-build: random workflows, random edits, and the model that checks them.

Shared by `tests/test_fuzz_correctness.py` (a few examples, seeds picked by hypothesis) and
`benchmarks/fuzz_correctness.py` (many, with figures). Everything random in an example is drawn
from one `random.Random(seed)` (`run_seed`), so a seed (and a focus) replays the same example
anywhere.

An example: a random workflow (`fuzz_workflows.random_workflow`: 2-6 stages with the hard
edges of issue 7, see that module), then rounds of 0-3 random edits each followed by a
`dd-build` with random targets and flags (`Sequence`). Edits: a param (also type-only: `1` →
`1.0` → `true` → `"1"`, bare or nested), a spec key (num_records, batch_size, sampling), a
code constant (changes the output) or a comment (does not), a helper module the code imports,
the callbacks' code, an `on_success` callback added, switched or removed, processors and
export copies changed, `description`/`retries` (not fingerprinted), a run stage's number of
output files or a command that writes nothing, a file input's content, a file matching
`data/*.txt` added or removed, a glob/path touching another stage's outputs added, touching a
file (same bytes, new mtime), deleting, garbling, replacing or touching a batch file, damaging
a run stage's or a callback's output, `dd-build clean S`. Code and data edits sometimes keep
the file's size and land in the same second as its last write.

The property (Build Systems à la Carte, STYLE.md), checked after every `dd-build`:

(a) never stale: every stage in the build's closure has a selected output (read from its
    record: its batch files, boundary output or run outputs, with their paths) and export
    copies equal to that stage's in a from-scratch build (`dd-build -k`) of the current
    project files in a fresh folder. A stage the from-scratch build fails (only a run stage
    whose command writes nothing may) must be recorded failed, not completed. From-scratch
    builds are cached by a hash of the project's source files and run in parallel with the
    build under test. When a stage touches another's outputs through a glob or path:
      - dd-build may refuse the Workflowfile (exit 2, both builds, the message naming the
        glob or path): accepted; the touches are then removed and the sequence goes on;
      - else the from-scratch build must be a fixpoint (a second build runs nothing: no stage
        ran before what it reads), and a dry run after the build under test must find every
        stage of the closure up to date.

(b) never wasteful: every user call (batch, transform, run command, callback) appends a line
    to `calls.log`. The model (`Model`) remembers per stage the key of its last completed
    build, in two parts: what its batches depend on (its spec as written minus
    `description`, `retries` and the boundary keys; the sha256 of its code file and of the
    helper modules it imports; of each file its inputs, seed and `code:` entries match; the
    identity of each upstream stage's selected output: its files' paths and bytes) and what
    only its boundary steps depend on (`processors`, `on_success`, export `outputs`, the
    callback's file). A
    call in a build is a violation when it was not forced (`--force`, `--rerun-from`,
    `--resume never`), the sequence damaged none of the stage's outputs since (a damaged
    batch allows only that batch; a damaged callback output only the callback), and: for a
    batch call, the batch part of the key is unchanged (upstream identities as read after
    this build: early cutoff); for a callback call, both parts are. Also a violation: a call
    of a stage outside the build's closure, or of one batch twice.

The model knows only what the generator makes: deterministic stages, no overrides or kills
(other tests cover those).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuzz_workflows import (
    CALLBACK_CONSTS,
    CALLBACK_FILES,
    CALLBACKS,
    FOCUS,
    HELPER_CONSTS,
    HELPER_FILES,
    PROCESSOR_CHOICES,
    SOURCE_GLOBS,
    WORDS,
    WORKFLOW,
    Mix,
    Rng,
    StageGen,
    notes_of,
    random_text,
    random_workflow,
    type_edit,
)

REPO = Path(__file__).resolve().parents[1]
__all__ = ["FOCUS", "ReferenceBuilds", "SequenceResult", "Violation", "run_seed"]


# ----------------------------------------------------------------------------- reading outputs


@dataclass(frozen=True)
class Selected:
    """A stage's selected output as its record names it, and its export copies."""

    status: str
    identity: tuple[str, ...]  # each output file's path and the sha256 of its bytes, in order
    content: tuple[Any, ...]  # ("table", schema, rows) or ("files", ((path, bytes), ...))
    exports: tuple[tuple[str, bytes], ...] = ()


def _record(root: Path, stage: str) -> dict[str, Any] | str:
    try:
        rec = json.loads((root / "artifacts" / WORKFLOW / stage / "stage.json").read_text())
    except (OSError, ValueError) as exc:
        return f"no readable record ({exc})"
    return rec if isinstance(rec, dict) else "a record that is no JSON object"


def record_status(root: Path, stage: str) -> str:
    rec = _record(root, stage)
    return "absent" if isinstance(rec, str) else str(rec.get("status"))


def read_selected(root: Path, stage: str) -> Selected | str:
    """The selected output of `stage` in the project at `root`, or why it cannot be read."""
    art = root / "artifacts" / WORKFLOW
    rec = _record(root, stage)
    if isinstance(rec, str):
        return rec
    out = rec.get("output")
    if rec.get("status") not in ("completed", "completed_empty") or not out:
        return f"record status {rec.get('status')!r}, output {out!r}"
    if out["kind"] == "batches":
        names = [b["file"] for b in sorted(rec["batches"], key=lambda b: b["index"])]
        files = [art / name for name in names]
    else:
        names = [f["path"] for f in out["files"]]
        files = [root / name for name in names]
    exported = (rec.get("steps") or {}).get("exports") or {}
    try:
        blobs = [f.read_bytes() for f in files]
        exports = tuple((f["path"], (root / f["path"]).read_bytes())
                        for f in exported.get("files", []))
    except OSError as exc:
        return f"an output file of the record cannot be read: {exc}"
    # Where and what: a dependant gets the paths (batches/ or processed/ or callback/), so
    # the same bytes moved to another file are another input.
    identity = tuple(f"{name}:{hashlib.sha256(b).hexdigest()}"
                     for name, b in zip(names, blobs, strict=True))
    if out["kind"] == "files":
        paths = tuple(Path(os.path.relpath(f, root)).as_posix() for f in files)
        return Selected(rec["status"], identity, ("files", tuple(zip(paths, blobs, strict=True))),
                        exports)
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        tables = [pq.read_table(pa.BufferReader(b)) for b in blobs]
        table = pa.concat_tables(tables)
    except (OSError, pa.ArrowException) as exc:
        return f"an output file of the record is not readable parquet: {exc}"
    return Selected(rec["status"], identity, table_content(table), exports)


def table_content(table: Any) -> tuple[Any, ...]:
    schema = tuple((f.name, str(f.type)) for f in table.schema)
    return ("table", schema, tuple(tuple(sorted(r.items())) for r in table.to_pylist()))


def show_content(content: tuple[Any, ...], limit: int = 6) -> str:
    if content[0] == "files":
        return " | ".join(f"{p}: {b.decode('utf-8', 'replace').strip()}" for p, b in content[1])
    rows = content[2]
    shown = ", ".join(str(dict(r)) for r in rows[:limit])
    return f"{len(rows)} rows [{shown}{', ...' if len(rows) > limit else ''}]"


def diff_content(got: tuple[Any, ...], want: tuple[Any, ...]) -> str:
    if got[0] == "table" and want[0] == "table":
        if got[1] != want[1]:
            return f"schema {got[1]} vs from-scratch {want[1]}"
        for i, (a, b) in enumerate(zip(got[2], want[2], strict=False)):
            if a != b:
                return (f"{len(got[2])} vs {len(want[2])} rows; first difference at row {i}: "
                        f"{dict(a)} vs from-scratch {dict(b)}")
        return f"{len(got[2])} rows vs from-scratch {len(want[2])} rows"
    return f"{show_content(got)} vs from-scratch {show_content(want)}"


# ----------------------------------------------------------------------------- the CLI


def cli_env() -> dict[str, str]:
    """The environment of a user's shell: Python's bytecode cache on (as by default), so stage
    code loads the way it does for users; retries wait a millisecond, not a second."""
    env = dict(os.environ)
    for name in ("HANG_AT", "FAIL_AT", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["DD_BUILD_RETRY_BASE_S"] = "0.001"
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "buildtool", *args]


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command(*args), cwd=root, env=cli_env(), capture_output=True,
                          text=True, timeout=300)


def source_files(root: Path) -> list[str]:
    found: set[str] = set()
    for pattern in SOURCE_GLOBS:
        found.update(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
    return sorted(found)


def source_hash(root: Path) -> str:
    h = hashlib.sha256()
    for rel in source_files(root):
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()


def _called(root: Path) -> list[tuple[str, str]]:
    log = root / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [(stage, what) for stage, _, what in (line.partition(" ") for line in lines)]


# ----------------------------------------------------------------------------- from scratch


@dataclass
class Reference:
    """A from-scratch build (`dd-build -k`) of one set of project files: its exit status,
    every stage's record status and selected output, and what a second build ran again."""

    code: int
    stderr: str
    outputs: dict[str, Selected]
    statuses: dict[str, str]
    unsettled: list[str] = field(default_factory=list)
    error: str | None = None  # a completed stage whose output could not be read

    @property
    def refused(self) -> bool:
        return self.code == 2

    @property
    def failed(self) -> set[str]:
        return {name for name, status in self.statuses.items() if status == "failed"}


class _Pending:
    def __init__(self, refs: ReferenceBuilds, key: str, folder: Path,
                 proc: subprocess.Popen[str] | None, done: Reference | None,
                 fixpoint: bool) -> None:
        self.refs, self.key, self.folder, self.proc, self.done = refs, key, folder, proc, done
        self.fixpoint = fixpoint

    def result(self, names: list[str]) -> Reference:
        if self.done is not None:
            return self.done
        assert self.proc is not None
        _, err = self.proc.communicate(timeout=300)
        ref = Reference(self.proc.returncode, err[-3000:], {}, {})
        if not ref.refused:
            first = {name: record_status(self.folder, name) for name in names}
            if self.fixpoint:  # a second build must run nothing that completed
                (self.folder / "calls.log").unlink(missing_ok=True)
                subprocess.run(cli_command("-q", "-k"), cwd=self.folder, env=cli_env(),
                               capture_output=True, text=True, timeout=300)
                ref.unsettled = sorted({s for s, _ in _called(self.folder)
                                        if first.get(s) == "completed"})
            problems = []
            for name in names:
                ref.statuses[name] = record_status(self.folder, name)
                if ref.statuses[name] != "completed":
                    continue
                got = read_selected(self.folder, name)
                if isinstance(got, str):
                    problems.append(f"{name}: {got}")
                else:
                    ref.outputs[name] = got
            ref.error = "; ".join(problems) or None
        shutil.rmtree(self.folder, ignore_errors=True)
        self.refs.store(self.key, ref)
        self.done = ref
        return ref


class ReferenceBuilds:
    """From-scratch builds in fresh folders, cached by the hash of the project's source files."""

    def __init__(self, workdir: Path, limit: int = 512) -> None:
        self.workdir = workdir
        self.limit = limit
        self.cache: OrderedDict[str, Reference] = OrderedDict()
        self.builds = 0
        self.hits = 0

    def store(self, key: str, ref: Reference) -> None:
        self.cache[key] = ref
        while len(self.cache) > self.limit:
            self.cache.popitem(last=False)

    def start(self, project: Path, fixpoint: bool = False) -> _Pending:
        """Start the from-scratch build of `project`'s current sources (or find it cached);
        with `fixpoint`, build twice and note what the second build ran."""
        key = source_hash(project) + (":fixpoint" if fixpoint else "")
        if key in self.cache:
            self.hits += 1
            self.cache.move_to_end(key)
            return _Pending(self, key, project, None, self.cache[key], fixpoint)
        self.builds += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="scratch-", dir=self.workdir))
        for rel in source_files(project):
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(project / rel, folder / rel)
        proc = subprocess.Popen(cli_command("-q", "-k"), cwd=folder, env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return _Pending(self, key, folder, proc, None, fixpoint)


# ----------------------------------------------------------------------------- the model


@dataclass
class Violation:
    kind: str  # stale | wasteful | error
    build: int
    stage: str | None
    message: str

    def __str__(self) -> str:
        where = f" stage {self.stage}" if self.stage else ""
        return f"[{self.kind}] build #{self.build}{where}: {self.message}"


Key = tuple[tuple[Any, ...], tuple[Any, ...]]  # (what the batches depend on, the boundary's)


@dataclass
class Model:
    """Per stage: the key of its last completed build, and the damage done to it since
    (batch indices, "cb" for a callback output, "all")."""

    built: dict[str, Key] = field(default_factory=dict)
    damaged: dict[str, set[int | str]] = field(default_factory=dict)


@dataclass
class SequenceResult:
    workflow: str  # the initial Workflowfile and stage summary
    transcript: list[str]
    violations: list[Violation]
    builds: int
    edits: int
    final_workflowfile: str
    stages: int = 0
    seconds: float = 0.0
    seed: int | None = None
    focus: str = "mixed"
    # What the builds exercised: stage runs, resumes (kept batches), early cutoffs (a stage
    # left alone although an upstream ran in the same build), forced stages, refusals, the
    # edits by kind.
    seen: Counter[str] = field(default_factory=Counter)

    def report(self) -> str:
        lines = ["dd-build correctness property violated"]
        if self.seed is not None:
            focus = f" --focus {self.focus}" if self.focus != "mixed" else ""
            lines.append(f"replay: python benchmarks/fuzz_correctness.py --examples 1 "
                         f"--seed {self.seed}{focus}")
        lines += ["", "initial workflow:", self.workflow, "",
                  "sequence (edits and builds, in order):"]
        lines += ["  " + t for t in self.transcript]
        lines += ["", "Workflowfile now:", self.final_workflowfile, "violations:"]
        lines += ["  " + str(v) for v in self.violations]
        return "\n".join(lines)


def pattern_states(root: Path, patterns: list[str]) -> tuple[tuple[str, str], ...]:
    paths: set[str] = set()
    for pattern in patterns:
        paths.update(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
    return tuple((p, _sha(root / p)) for p in sorted(paths))


def _sha(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


class Sequence:
    """One example: a random workflow, then rounds of random edits each followed by a build."""

    def __init__(self, rng: Rng, root: Path, refs: ReferenceBuilds, rounds: int = 5,
                 check_export: bool = True, mix: Mix | None = None) -> None:
        self.rng = rng
        self.root = root
        self.refs = refs
        self.rounds = rounds
        self.check_export = check_export
        self.mix = mix or Mix()
        self.model = Model()
        self.transcript: list[str] = []
        self.violations: list[Violation] = []
        self.builds = 0
        self.edits = 0
        self.last_closure: list[str] = []
        self.seen: Counter[str] = Counter()
        self.last_reference: Reference | None = None
        self.wf = random_workflow(rng, self.mix)

    # -- running

    def run(self) -> SequenceResult:
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self.wf.write_all(self.root)
        initial = self.wf.workflowfile_text() + "\nstages:\n" + self.wf.describe()
        for index in range(self.rounds):
            if index > 0:
                for _ in range(self.rng.choice((0, 1, 1, 2, 2, 3))):
                    self.edit()
            if not self.build(*self.random_build_args()):
                break
        else:
            if self.check_export and self.last_reference is not None:
                self.export_check()
        return SequenceResult(initial, self.transcript, self.violations, self.builds,
                              self.edits, self.wf.workflowfile_text(), len(self.wf.stages),
                              time.monotonic() - started, seen=self.seen)

    def random_build_args(self) -> tuple[list[str], list[str]]:
        """(flags, targets) of a random build: 30% a target subset; 15% `--force S`, 10%
        `--rerun-from S` (S in the closure), 5% `--resume never`; `-k` when a stage's command
        writes nothing (so every stage that does not need it still builds)."""
        rng, names = self.rng, self.wf.names
        targets: list[str] = []
        if rng.random() < 0.3:
            targets = rng.sample(names, rng.randint(1, min(2, len(names))))
        closure = self.wf.closure(targets)
        x = rng.random()
        flags: list[str] = []
        if x < 0.15:
            flags = ["--force", rng.choice(closure)]
        elif x < 0.25:
            flags = ["--rerun-from", rng.choice(closure)]
        elif x < 0.30:
            flags = ["--resume", "never"]
        if self.wf.may_fail() & set(closure):
            flags.insert(0, "-k")
        return flags, targets

    def forced(self, flags: list[str], closure: list[str]) -> set[str]:
        forced: set[str] = set()
        for flag, value in zip(flags, flags[1:], strict=False):
            if flag == "--force":
                forced.add(value)
            elif flag == "--rerun-from":
                forced |= self.wf.descendants(value) & set(closure)
            elif flag == "--resume" and value == "never":
                forced |= set(closure)
        return forced

    # -- one build and its checks

    def build(self, flags: list[str], targets: list[str]) -> bool:
        """Build, check the property, update the model. False when the sequence must stop."""
        self.builds += 1
        n = self.builds
        args = [*flags, *targets]
        closure = self.wf.closure(targets)
        forced = self.forced(flags, closure)
        cross = self.wf.has_cross()
        pending = self.refs.start(self.root, fixpoint=cross)
        (self.root / "calls.log").unlink(missing_ok=True)
        proc = run_cli(self.root, "build", "--json", *args)
        calls = _called(self.root)
        ref = pending.result(self.wf.names)
        summary = self._summary(proc.stdout)
        self._count(proc.stdout, closure, forced, calls)
        ran = {s: sorted(c, key=str) for s, c in self._by_stage(calls).items()}
        self.transcript.append(f"build #{n}: dd-build {' '.join(args)} -> exit {proc.returncode}; "
                               f"called {ran or 'nothing'}")
        self.transcript += ["    " + line for line in summary]
        if ref.refused or proc.returncode == 2:
            return self._refusal(n, proc, ref)
        found = self._outcome(n, proc, ref, closure)
        selected: dict[str, Selected] = {}
        for name in closure:
            found += self._check_stage(n, name, ref, selected)
        found += self._wasteful(n, closure, forced, calls, selected)
        if not found and proc.returncode == 0 and (cross or any(s.helpers for s in
                                                                  self.wf.stages)):
            found += self._dry_run_check(n, targets, closure)
        self.violations += found
        if found:
            return False
        for name in closure:
            if name in selected:
                self.model.built[name] = self._key(name, selected)
                self.model.damaged.pop(name, None)
            elif ref.statuses.get(name) == "failed":
                self.model.damaged[name] = {"all"}
        self.last_closure = closure
        self.last_reference = ref
        return True

    def _refusal(self, n: int, proc: subprocess.CompletedProcess[str], ref: Reference) -> bool:
        """A build that exited 2: fine when both builds refused a Workflowfile with a touch of
        another stage's outputs, naming it; the touches are then removed."""
        problem = None
        named = [c for c in self.wf.cross_texts() if c in proc.stderr]
        if not ref.refused:
            problem = "this build exited 2, but a from-scratch build of the same files did not"
        elif proc.returncode != 2:
            problem = f"a from-scratch build refused the Workflowfile ({ref.stderr.strip()}), " \
                      "but this build did not"
        elif not self.wf.has_cross():
            problem = "refused a Workflowfile with no glob or path touching another stage's outputs"
        elif not named:
            problem = "refused, but the message names none of the globs/paths touching another " \
                      f"stage's outputs {self.wf.cross_texts()}"
        if problem:
            self.violations.append(Violation("error", n, None, f"{problem}: "
                                             f"{proc.stderr.strip()[-2000:]}"))
            return False
        self.seen["refused at load"] += 1
        first = proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else ""
        self.transcript.append(f"    refused at load, naming {named}: {first}")
        gone = self.wf.drop_cross()
        self.wf.write_workflowfile(self.root)
        self.transcript.append(f"edit: remove the touches {gone}")
        return True

    def _outcome(self, n: int, proc: subprocess.CompletedProcess[str], ref: Reference,
                 closure: list[str]) -> list[Violation]:
        """Exit statuses: only stages that may fail may fail, in either build."""
        found: list[Violation] = []
        may_fail = self.wf.may_fail()
        unexpected = ref.failed - may_fail
        if ref.code not in (0, 1) or unexpected or (ref.code == 1 and not ref.failed):
            found.append(Violation("error", n, None, f"from-scratch build exited {ref.code} "
                                   f"(failed: {sorted(ref.failed)}): {ref.stderr.strip()}"))
        if ref.error:
            found.append(Violation("error", n, None, f"from-scratch build: {ref.error}"))
        if ref.unsettled:
            found.append(Violation("stale", n, None, "a from-scratch build is no fixpoint: a "
                                   f"second build ran {ref.unsettled} again (a stage ran before "
                                   "a stage whose outputs it reads)"))
        expected = 1 if ref.failed & set(closure) else 0
        if proc.returncode != expected:
            failed = [s for s in closure if record_status(self.root, s) == "failed"]
            found.append(Violation("error" if proc.returncode not in (0, 1) else "stale", n,
                                   None, f"exit {proc.returncode}, expected {expected} "
                                   f"(from-scratch failed {sorted(ref.failed)}, this build "
                                   f"{failed}): {proc.stderr.strip()[-2000:]}"))
        if ref.failed & set(closure):
            self.seen["expected failures"] += 1
        return found

    def _check_stage(self, n: int, name: str, ref: Reference,
                     selected: dict[str, Selected]) -> list[Violation]:
        want_status = ref.statuses.get(name)
        if want_status == "failed":
            status = record_status(self.root, name)
            if status == "failed":
                return []
            got = read_selected(self.root, name)
            shown = show_content(got.content) if isinstance(got, Selected) else got
            return [Violation("stale", n, name, f"recorded {status!r} (output {shown}), but "
                              "a from-scratch build fails it")]
        if want_status != "completed":
            return []  # not run from scratch either (an upstream failed)
        got = read_selected(self.root, name)
        if isinstance(got, str):
            return [Violation("stale", n, name, f"no selected output: {got}")]
        selected[name] = got
        want = ref.outputs.get(name)
        if want is None:
            return []
        if got.content != want.content:
            return [Violation("stale", n, name, "selected output differs from a from-scratch "
                              f"build: {diff_content(got.content, want.content)}")]
        if got.exports != want.exports:
            def show(exports: tuple[tuple[str, bytes], ...]) -> str:
                return "; ".join(f"{p}: {b[:300]!r}" for p, b in exports)

            return [Violation("stale", n, name, f"export copies {show(got.exports)} differ "
                              f"from a from-scratch build's {show(want.exports)}")]
        return []

    def _dry_run_check(self, n: int, targets: list[str], closure: list[str]) -> list[Violation]:
        """Right after a good build, a dry run must find every stage of the closure up to
        date (a stage that read files another stage then rewrote would run again)."""
        proc = run_cli(self.root, "build", "-n", "--json", *targets)
        try:
            stages = json.loads(proc.stdout).get("stages", [])
        except ValueError:
            return [Violation("error", n, None, f"dry run: exit {proc.returncode}, no JSON: "
                              f"{proc.stderr.strip()[-1000:]}")]
        found = []
        for s in stages:
            if s.get("stage") in closure and s.get("action") != "up_to_date":
                reasons = "; ".join(r.get("message", r.get("code", ""))
                                    for r in s.get("reasons", []))
                found.append(Violation("stale", n, s["stage"], "a dry run right after this "
                                       f"build would {s.get('action')} it: {reasons}"))
        return found

    def _key(self, name: str, selected: dict[str, Selected]) -> Key:
        stage = self.wf.stage(name)
        main, post = stage.spec_keys()
        code = tuple((f, _sha(self.root / f)) for f in stage.code_files())
        callback = (_sha(self.root / CALLBACK_FILES[stage.on_success]),) \
            if stage.on_success else ()
        batch = (main, code, pattern_states(self.root, stage.patterns),
                 tuple((u, selected[u].identity) for u in stage.upstreams))
        if stage.cross_code:  # with `code:` entries the callback's file is code of the stage
            batch += callback
        return batch, (post, callback)

    def _wasteful(self, n: int, closure: list[str], forced: set[str],
                  calls: list[tuple[str, str]], selected: dict[str, Selected]) -> list[Violation]:
        found = []
        for (stage, what), count in Counter(calls).items():
            if count > 1:
                found.append(Violation("wasteful", n, stage, f"called {count} times for "
                                       f"{what} in one build"))
        for stage, whats in self._by_stage(calls).items():
            if stage not in closure:
                found.append(Violation("wasteful", n, stage, f"called ({sorted(whats, key=str)}) "
                                       f"but not in the build's closure {closure}"))
                continue
            if stage in forced or stage not in self.model.built:
                continue
            s = self.wf.stage(stage)
            if not all(u in selected for u in s.upstreams):
                continue  # an upstream is reported stale already, or failed
            batch, post = self._key(stage, selected)
            old_batch, old_post = self.model.built[stage]
            damaged = self.model.damaged.get(stage, set())
            if batch != old_batch or "all" in damaged:
                continue
            extra: set[int | str] = set()
            batch_calls = {w for w in whats if w != "cb"}
            if batch_calls:
                if s.kind == "generate":
                    extra |= batch_calls - damaged
                elif not damaged - {"cb"}:
                    extra |= batch_calls
            if "cb" in whats and post == old_post and not damaged:
                extra.add("cb")
            if extra:
                why = (f"only damaged {sorted(damaged, key=str)} may rerun" if damaged else
                       "its spec, code and inputs are unchanged since its last completed build "
                       "(for a callback: its boundary keys and callbacks file too), its outputs "
                       "are intact and it was not forced")
                found.append(Violation("wasteful", n, stage,
                                       f"called for {sorted(extra, key=str)}: {why}"))
        return found

    @staticmethod
    def _by_stage(calls: list[tuple[str, str]]) -> dict[str, set[int | str]]:
        by: dict[str, set[int | str]] = {}
        for stage, what in calls:
            by.setdefault(stage, set()).add(int(what) if what.isdigit() else what)
        return by

    def _count(self, stdout: str, closure: list[str], forced: set[str],
               calls: list[tuple[str, str]]) -> None:
        called = {stage for stage, _ in calls}
        self.seen["stage runs"] += len(called)
        self.seen["forced"] += len(forced)
        self.seen["callback calls"] += sum(1 for _, what in calls if what == "cb")
        self.seen["early cutoffs"] += sum(
            1 for name in closure if name not in called and
            any(u in called for u in self.wf.upstreams(name)))
        try:
            stages = json.loads(stdout).get("stages", [])
        except ValueError:
            return
        self.seen["resumes"] += sum(1 for s in stages if s.get("action") == "resume")

    @staticmethod
    def _summary(stdout: str) -> list[str]:
        try:
            doc = json.loads(stdout)
        except ValueError:
            return ["(no JSON report)"]
        lines = []
        for s in doc.get("stages", []):
            reasons = "; ".join(r.get("message", r.get("code", "")) for r in s.get("reasons", []))
            lines.append(f"{s['stage']}: {s.get('action')} -> {s.get('result')} "
                         f"(batches run {s.get('batches_run')})" + (f": {reasons}" if reasons else ""))
        return lines

    def export_check(self) -> None:
        """`dd-build export` of one stage of the last build gives the from-scratch table."""
        assert self.last_reference is not None
        tables = [n for n in self.last_closure if self.wf.stage(n).tabular and
                  n in self.last_reference.outputs]
        if not tables:
            return
        name = self.rng.choice(tables)
        target = self.root / "exported.parquet"
        proc = run_cli(self.root, "export", name, str(target))
        self.transcript.append(f"dd-build export {name} exported.parquet -> exit {proc.returncode}")
        want = self.last_reference.outputs[name]
        if proc.returncode != 0:
            self.violations.append(Violation("error", self.builds, name,
                                             f"export failed: {proc.stderr.strip()}"))
            return
        import pyarrow.parquet as pq

        got = table_content(pq.read_table(target))
        if got != want.content:
            self.violations.append(Violation("stale", self.builds, name, "export differs from a "
                                             f"from-scratch build: {diff_content(got, want.content)}"))

    # -- edits

    def edit(self) -> None:
        kinds = [k for k, _ in self.mix.edits]
        weights = [w for _, w in self.mix.edits]
        for _ in range(10):  # an edit that has nothing to act on yet draws again
            kind = _weighted(self.rng, kinds, weights)
            text = getattr(self, "_edit_" + kind)()
            if text:
                self.edits += 1
                self.seen[f"edit {kind}"] += 1
                self.transcript.append("edit: " + text)
                return

    def _pick(self, kinds: tuple[str, ...] = ("generate", "transform", "run"),
              where: Any = None) -> StageGen | None:
        stages = [s for s in self.wf.stages if s.kind in kinds and (where is None or where(s))]
        return self.rng.choice(stages) if stages else None

    def _rewrite(self) -> None:
        self.wf.write_workflowfile(self.root)

    def _edit_param(self) -> str | None:
        s = self._pick()
        assert s is not None
        key = "k" if s.kind == "run" else self.rng.choice(("p", "p", "q"))
        old = getattr(s, key)
        setattr(s, key, (old + self.rng.randint(1, 9)) % 100)
        self._rewrite()
        return f"{s.name}: params.{key} {old} -> {getattr(s, key)}"

    def _edit_param_type(self) -> str | None:
        """Mostly a type-only edit: `1` -> `1.0` -> `true` -> `"1"`, bare or nested."""
        s = self._pick()
        assert s is not None
        slot = "x" if s.x is not None and self.rng.random() < 0.5 else "t"
        old = getattr(s, slot)
        new = type_edit(self.rng, old)
        setattr(s, slot, new)
        self._rewrite()
        where = "params.nest (seen[0] and deep.x)" if slot == "x" else "params.t"
        same = " (type-only: equal in Python)" if old.value == new.value else ""
        return f"{s.name}: {where} {old.describe()} -> {new.describe()}{same}"

    def _edit_spec(self) -> str | None:
        s = self._pick(("generate",))
        assert s is not None
        choice = self.rng.choice(("num_records", "batch_size", "sampling"))
        seeded = bool(s.seed or s.seed_file)
        if choice == "sampling" and seeded:
            old: Any = s.sampling
            s.sampling = "shuffle" if old == "ordered" else "ordered"
            new: Any = s.sampling
        elif choice == "batch_size":
            old, s.batch_size = s.batch_size, self.rng.randint(1, 4)
            new = s.batch_size
        else:
            old = s.num_records
            options = [n for n in range(1, 10) if n != old]
            s.num_records = None if seeded and old is not None and self.rng.random() < 0.3 \
                else self.rng.choice(options)
            new = s.num_records
            choice = "num_records"
        self._rewrite()
        return f"{s.name}: {choice} {old} -> {new}"

    def _edit_code_const(self) -> str | None:
        s = self._pick()
        assert s is not None
        old = s.const
        s.const = self._new_const(old)
        fast = self._maybe_fast(self.root / s.code_path, lambda: self.wf.write_code(self.root, s))
        return f"{s.name}: code constant K {old} -> {s.const} in {s.code_path}{fast}"

    def _new_const(self, old: int) -> int:
        same_size = self.rng.random() < 0.5
        return self.rng.choice([k for k in range(1, 98) if k != old and
                                (not same_size or len(str(k)) == len(str(old)))])

    def _maybe_fast(self, path: Path, write: Any) -> str:
        """Write; sometimes as an edit landing in the same second as the file's last write (a
        different mtime_ns, the same mtime in whole seconds, as a quick script's edit gets)."""
        before = path.stat().st_mtime_ns
        write()
        if self.rng.random() >= 0.4:
            return ""
        second, ns = divmod(before, 10**9)
        now = second * 10**9 + (ns + self.rng.randint(1, 10**9 - 1)) % 10**9
        os.utime(path, ns=(now, now))
        return " (in the same second as its last write)"

    def _edit_code_comment(self) -> str | None:
        s = self._pick()
        assert s is not None
        s.comment = f"{s.name} v{self.rng.randint(1, 10**6)}"
        self.wf.write_code(self.root, s)
        return f"{s.name}: comment in {s.code_path} -> '# {s.comment}' (no output change)"

    def _edit_helper(self) -> str | None:
        """A helper module some stage code imports: its constant (the rows change) or a
        comment (the code changes, the rows do not)."""
        used = sorted({f for s in self.wf.stages for h in s.helpers for f in HELPER_FILES[h]})
        if not used:
            return None
        rel = self.rng.choice(used)
        users = [s.name for s in self.wf.stages if rel in s.code_files()]
        if self.rng.random() < 0.75:
            old = self.wf.helper_consts[rel]
            self.wf.helper_consts[rel] = self._new_const(old)
            what = f"{HELPER_CONSTS[rel]} {old} -> {self.wf.helper_consts[rel]}"
        else:
            self.wf.helper_comments[rel] = f"{Path(rel).stem} v{self.rng.randint(1, 10**6)}"
            what = f"comment -> '# {self.wf.helper_comments[rel]}'"
        fast = self._maybe_fast(self.root / rel, lambda: self.wf.write_helper(self.root, rel))
        return f"{rel} (imported by {users}): {what}{fast}"

    def _edit_callback(self) -> str | None:
        """on_success: added, switched to another callback, or removed."""
        s = self._pick(("generate", "transform"))
        if s is None:
            return None
        old = s.on_success
        if old is None:
            s.on_success = self.rng.choice(CALLBACKS)
        elif self.rng.random() < 0.6:
            s.on_success = self.rng.choice([c for c in CALLBACKS if c != old])
        else:
            s.on_success = None
        self._rewrite()
        return f"{s.name}: on_success {old} -> {s.on_success}"

    def _edit_callback_code(self) -> str | None:
        rel = self.rng.choice(sorted(CALLBACK_CONSTS))
        users = [s.name for s in self.wf.stages if s.on_success and
                 CALLBACK_FILES[s.on_success] == rel]
        if self.rng.random() < 0.7:
            old = self.wf.callback_consts[rel]
            self.wf.callback_consts[rel] = self._new_const(old)
            what = f"{CALLBACK_CONSTS[rel]} {old} -> {self.wf.callback_consts[rel]}"
        else:
            self.wf.callback_comments[rel] = f"{Path(rel).stem} v{self.rng.randint(1, 10**6)}"
            what = f"comment -> '# {self.wf.callback_comments[rel]}'"
        fast = self._maybe_fast(self.root / rel, lambda: self.wf.write_callbacks(self.root, rel))
        return f"{rel} (used by {users}): {what}{fast}"

    def _edit_callback_output(self) -> str | None:
        """Delete or replace a file of a callback's output (only the callback may rerun)."""
        options = []
        for s in self.wf.stages:
            rec = _record(self.root, s.name)
            out = rec.get("output") if isinstance(rec, dict) else None
            if out and out.get("kind") == "callback":
                options += [(s, self.root / f["path"]) for f in out.get("files", [])
                            if (self.root / f["path"]).is_file()]
        if not options:
            return None
        s, path = self.rng.choice(options)
        if self.rng.random() < 0.5:
            path.unlink()
            what = "delete"
        else:
            siblings = [p for p in path.parent.glob("*.parquet") if p != path]
            data = siblings[0].read_bytes() if siblings else b"not parquet"
            path.write_bytes(data)
            what = "overwrite"
        self.model.damaged.setdefault(s.name, set()).add("cb")
        return f"{s.name}: {what} its callback output {path.relative_to(self.root)}"

    def _edit_processors(self) -> str | None:
        s = self._pick(("generate", "transform"))
        if s is None:
            return None
        old = [dict(p) for p in s.processors]
        x = self.rng.random()
        if not old or x < 0.4:
            s.processors = old + [self.rng.choice(PROCESSOR_CHOICES)]
        elif x < 0.7:
            s.processors = old[:-1]
        else:
            s.processors = self.rng.sample(PROCESSOR_CHOICES, self.rng.randint(1, 2))
        if s.processors == old:
            return None
        self._rewrite()
        return f"{s.name}: processors {json.dumps(old)} -> {json.dumps(s.processors)}"

    def _edit_exports(self) -> str | None:
        """An export copy added, changed (format) or removed."""
        s = self._pick(("generate", "transform"))
        if s is None:
            return None
        old = list(s.exports)
        producers = {c.name: self.wf.producers(c) for c in self.wf.stages}
        if old and self.rng.random() < 0.5:
            s.exports = []
        else:
            ext = self.rng.choice(("jsonl", "csv", "parquet"))
            s.exports = [f"exports/{s.name}.{ext}"]
        if s.exports == old or producers != {c.name: self.wf.producers(c)
                                             for c in self.wf.stages}:
            # A touch would read another stage's outputs, or an old export copy that is no
            # output any more (a file only the project under test has): no.
            s.exports = old
            return None
        for rel, text in notes_of(s).items():
            self.wf.data.setdefault(rel, text)
            self.wf.write_data(self.root, rel)
        self._rewrite()
        return f"{s.name}: outputs (export copies) {old} -> {s.exports}"

    def _edit_run_parts(self) -> str | None:
        """A run stage with a folder output: a different number of part files."""
        s = self._pick(("run",), where=lambda s: s.folder)
        if s is None:
            return None
        old = s.n
        s.n = old - 1 if old > 1 and self.rng.random() < 0.7 else \
            self.rng.choice([k for k in range(1, 5) if k != old])
        self._rewrite()
        return f"{s.name}: params.n {old} -> {s.n} (files in its output folder {s.output_path})"

    def _edit_run_write(self) -> str | None:
        """A run stage's command writes nothing (and exits 0), or writes again."""
        s = self._pick(("run",))
        if s is None:
            return None
        s.w = 1 - s.w
        self._rewrite()
        return f"{s.name}: params.w -> {s.w}" + (" (its command writes nothing)" if not s.w
                                                 else " (its command writes again)")

    def _edit_cross_add(self) -> str | None:
        s = self._pick(where=lambda s: s is not self.wf.stages[0])
        if s is None:
            return None
        text = self.wf.add_cross(self.rng, s)  # the notes beside every output exist already
        if text is None:
            return None
        self._rewrite()
        return f"{s.name}: {text} (touches {self.wf.producers(s)}'s outputs)"

    def _edit_unfingerprinted(self) -> str | None:
        s = self._pick()
        assert s is not None
        if s.kind == "generate" and self.rng.random() < 0.6:
            s.retries = (s.retries + 1) % 3
            self.wf.write_flaky(self.root, s)
            what = f"retries: {s.retries}" + (" (its batches' first attempts fail)"
                                              if s.flaky and s.retries else "")
        else:
            s.description = self.rng.choice(WORDS) + f" {self.rng.randint(0, 99)}"
            what = f"description: {s.description!r}"
        self._rewrite()
        return f"{s.name}: {what} (not part of the fingerprint)"

    def _edit_file_edit(self) -> str | None:
        rel = self.rng.choice([r for r in sorted(self.wf.data) if r.startswith("data/")])
        old = self.wf.data[rel]
        if self.rng.random() < 0.4:  # the same size: only the content digest can tell
            self.wf.data[rel] = "".join(self.rng.choice("xyz") for _ in old[:-1]) + "\n"
        else:
            self.wf.data[rel] = random_text(self.rng) + f"{self.rng.randint(0, 10**6)}\n"
        fast = self._maybe_fast(self.root / rel, lambda: self.wf.write_data(self.root, rel))
        return f"{rel} content {old!r} -> {self.wf.data[rel]!r}{fast}"

    def _edit_file_add(self) -> str | None:
        rel = f"data/c{len(self.wf.data)}.txt"
        if rel in self.wf.data:
            return None
        self.wf.data[rel] = random_text(self.rng)
        self.wf.write_data(self.root, rel)
        return f"new file {rel} ({self.wf.data[rel]!r}): matches data/*.txt"

    def _edit_file_delete(self) -> str | None:
        """Delete a file added earlier (data/a.txt and data/b.txt stay: stages name them)."""
        added = sorted(rel for rel in self.wf.data if rel.startswith("data/c"))
        if not added:
            return None
        rel = self.rng.choice(added)
        del self.wf.data[rel]
        (self.root / rel).unlink()
        return f"delete {rel}: data/*.txt matches one file less"

    def _edit_touch(self) -> str | None:
        rels = sorted(self.wf.data) + [s.code_path for s in self.wf.stages] + \
            sorted(HELPER_CONSTS) + sorted(CALLBACK_CONSTS)
        rel = self.rng.choice(rels)
        _bump_mtime(self.root / rel)
        return f"touch {rel} (same bytes, new mtime)"

    def _built_batches(self, kinds: tuple[str, ...] = ("generate", "transform")
                       ) -> tuple[StageGen, Path, int] | None:
        """A random batch file of a stage whose record lists batches, and its index."""
        options = []
        for s in self.wf.stages:
            if s.kind not in kinds:
                continue
            rec = _record(self.root, s.name)
            if isinstance(rec, str):
                continue
            for b in rec.get("batches", []):
                path = self.root / "artifacts" / WORKFLOW / b["file"]
                if path.is_file():
                    options.append((s, path, int(b["index"])))
        return self.rng.choice(options) if options else None

    def _damage(self, stage: StageGen, index: int | str) -> None:
        self.model.damaged.setdefault(stage.name, set()).add(index)

    def _edit_batch_delete(self) -> str | None:
        found = self._built_batches()
        if found is None:
            return None
        s, path, index = found
        path.unlink()
        self._damage(s, index)
        return f"{s.name}: delete {path.relative_to(self.root)}"

    def _edit_batch_garbage(self) -> str | None:
        found = self._built_batches()
        if found is None:
            return None
        s, path, index = found
        sub = _sub_rng(self.rng)
        size = path.stat().st_size if self.rng.random() < 0.5 else sub.randint(1, 64)
        path.write_bytes(sub.randbytes(size))
        self._damage(s, index)
        return f"{s.name}: overwrite {path.relative_to(self.root)} with {size} garbage bytes"

    def _edit_batch_parquet(self) -> str | None:
        """Replace a batch file with another valid parquet: altered values (usually the same
        size, so only the content digest can tell), or a copy of another batch."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        found = self._built_batches()
        if found is None:
            return None
        s, path, index = found
        siblings = sorted(p for p in path.parent.glob("*.parquet") if p != path)
        if siblings and self.rng.random() < 0.4:
            other = self.rng.choice(siblings)
            data = other.read_bytes()
            what = f"a copy of {other.name}"
        else:
            bump = self.rng.randint(1, 9)
            try:
                table = pq.read_table(path)
            except (OSError, pa.ArrowException):  # garbled by an earlier edit of this round
                table = pa.table({"id": [0], "v": [0], "t": ["x"]})
            table = table.set_column(table.schema.get_field_index("v"), "v",
                                     pa.array([v + bump for v in table.column("v").to_pylist()],
                                              pa.int64()))
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            data = sink.getvalue().to_pybytes()
            what = f"a parquet whose v values are +{bump}"
        same = " (same size)" if len(data) == path.stat().st_size else ""
        path.write_bytes(data)
        self._damage(s, index)
        return f"{s.name}: replace {path.relative_to(self.root)} with {what}{same}"

    def _edit_batch_touch(self) -> str | None:
        found = self._built_batches()
        if found is None:
            return None
        s, path, _ = found
        _bump_mtime(path)
        return f"{s.name}: touch {path.relative_to(self.root)} (same bytes, new mtime)"

    def _edit_clean(self) -> str | None:
        """`dd-build clean S`: S's record and files are gone; its dependants' records stay."""
        s = self._pick()
        assert s is not None
        if not (self.root / "artifacts" / WORKFLOW / s.name).exists():
            return None
        proc = run_cli(self.root, "clean", s.name)
        if proc.returncode != 0:
            self.violations.append(Violation("error", self.builds, s.name,
                                             f"clean failed: {proc.stderr.strip()}"))
        self._damage(s, "all")
        return f"dd-build clean {s.name} -> exit {proc.returncode}"

    def _edit_run_output(self) -> str | None:
        s = self._pick(("run",), where=lambda s: (self.root / s.output_path).exists())
        if s is None:
            return None
        path = self.root / s.output_path
        if path.is_dir():
            parts = sorted(path.glob("part-*.txt"))
            x = self.rng.random()
            if not parts or x < 0.3:
                shutil.rmtree(path)
                what = "delete the folder"
            elif x < 0.6:
                parts[-1].unlink()
                what = f"delete {parts[-1].name} in"
            else:
                parts[0].write_text('{"total": -1}\n')
                what = f"overwrite {parts[0].name} in"
        elif self.rng.random() < 0.5:
            path.unlink()
            what = "delete"
        else:
            path.write_text('{"total": -1}\n')
            what = "overwrite"
        self._damage(s, "all")
        return f"{s.name}: {what} its output {s.output_path}"


def _weighted(rng: Rng, items: list[str], weights: list[float]) -> str:
    x = rng.random() * sum(weights)
    for item, weight in zip(items, weights, strict=True):
        x -= weight
        if x < 0:
            return item
    return items[-1]


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    later = max(time.time_ns(), st.st_mtime_ns) + 1_000_000_000
    os.utime(path, ns=(later, later))


def _sub_rng(rng: Rng) -> Any:
    import random

    return random.Random(rng.randint(0, 2**32))


def run_sequence(rng: Rng, root: Path, refs: ReferenceBuilds, rounds: int = 5,
                 check_export: bool = True, focus: str = "mixed") -> SequenceResult:
    result = Sequence(rng, root, refs, rounds, check_export, FOCUS[focus]).run()
    result.focus = focus
    return result


def run_seed(seed: int, root: Path, refs: ReferenceBuilds, rounds: int = 5,
             check_export: bool = True, focus: str = "mixed") -> SequenceResult:
    """The example of one seed (and focus): the same in the tests and in the benchmark."""
    import random

    result = run_sequence(random.Random(seed), root, refs, rounds, check_export, focus)
    result.seed = seed
    return result

