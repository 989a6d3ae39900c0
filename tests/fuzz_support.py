"""Correctness fuzzing of dd-build: random workflows, random edits, and the model that checks them.

Shared by `tests/test_fuzz_correctness.py` (a few examples, seeds picked by hypothesis) and
`benchmarks/fuzz_correctness.py` (many, with figures). Everything random in an example is drawn
from one `random.Random(seed)` (`run_seed`), so a seed (and a focus) replays the same example
anywhere.

An example: a random workflow (`fuzz_workflows.random_workflow`: 2-6 stages with the hard
edges of issue 7 and the later steps of issue 8, see that module), then rounds of 0-3 random
edits each followed by a `dd-build` with random targets and flags (`Sequence`). Edits: a
param (also type-only: `1` → `1.0` → `true` → `"1"`, bare or nested), a spec key
(num_records, batch_size, sampling), a code constant (changes the output) or a comment (does
not), a helper module the code imports, the callbacks' code, an `on_success` callback added,
switched (within a file or to the other file; `cb_keep` returns None) or removed, its
`on_success_version` added, changed or removed, processors added, removed, reordered or
replaced (one may empty a small stage), `allow_empty` set or unset, export copies (one or
two) added, switched to another format or removed, `description`/`retries` (not
fingerprinted), a run stage's number of output files or a command that writes nothing, a
file input's content, a file matching `data/*.txt` added or removed, a glob/path touching
another stage's outputs added, touching a file (same bytes, new mtime), deleting, garbling,
replacing or touching a batch file, deleting or overwriting a processed file, a callback's
output, an export copy or a run stage's output, `dd-build clean S`; and review overrides:
`dd-build override S reviews/S.parquet` (S's output with every other row dropped and one
value changed), then edits of S itself and of its upstreams while the review is held,
`dd-build override --release S`, and a deleted override file. Code and data edits sometimes
keep the file's size and land in the same second as its last write.

Where batches run is drawn too, from a generator of its own (so the edits above stay what
each seed drew): each generate stage's `concurrency` (1, or 2-8 in flight) and `executor`
(left out, `thread`, or rarely `process`: worker processes), drawn anew for one stage in a
third of the rounds; and, given a Dask scheduler (`scheduler`, e.g. $DD_BUILD_TEST_SCHEDULER),
a `dask` share of the builds runs there (`--scheduler`), on the same long-lived workers
through the whole sequence (a worker holds the modules of an earlier build's code). The
oracle stays a local serial build (`local_serial`): none of these may change an output or
run anything.

The property (Build Systems à la Carte, STYLE.md), checked after every `dd-build`:

(a) never stale: every stage in the build's closure has a selected output (read from its
    record: its batch files, boundary output or run outputs, with their paths), status
    (`completed`, `completed_empty`, `skipped_empty_upstream`) and export copies equal to
    that stage's in a from-scratch build (`dd-build -k`) of the current project files in a
    fresh folder. A stage the from-scratch build fails (a run stage whose command writes
    nothing, a stage with no rows and no `allow_empty`) must be recorded failed, not
    completed. From-scratch builds are cached by a hash of the project's source files (and
    held reviews) and run in parallel with the build under test. When a stage touches
    another's outputs through a glob or path:
      - dd-build may refuse the Workflowfile (exit 2, both builds, the message naming the
        glob or path): accepted; the touches are then removed and the sequence goes on;
      - else the from-scratch build must be a fixpoint (a second build runs nothing: no stage
        ran before what it reads), and a dry run after the build under test must find every
        stage of the closure up to date.
    Held overrides: in the from-scratch copy each held stage S is a transform returning its
    review file, with S's export copies (`hold_reviews`), so the oracle's S and its export
    copies are the review's and its dependants are built from the review, whatever S's own
    spec, code and upstreams have become. So a dropped review (S rebuilt, or S's export
    copies or a dependant built from S's own output) differs from the oracle, and so does a
    stale dependant. The model checks besides that S's output is the review's rows
    (`_check_held`) and that none of S's code runs while it is held; `--force S`,
    `--rerun-from S` and `override --release S` let it go (the oracle is then the plain one),
    `--resume never` and `--rerun-from` an ancestor do not. One difference is accepted:
    dd-build runs no stage after a failed one, a held one neither, while the oracle's held
    stage needs no upstream; stages after a failed stage are not compared (their records are
    as before).

(b) never wasteful: every user call (batch, transform, run command, callback) appends a line
    to `calls.log`. The model (`fuzz_steps.Model`) remembers per stage what its last own
    build was made from, step by step (`fuzz_steps.Built`): what its batches depend on (its
    spec as written minus `description`, `retries` and the later steps' keys; the sha256 of
    its code file and of the helper modules it imports; of each file its inputs, seed and
    `code:` entries match; the identity of each upstream stage's selected output: its files'
    paths and bytes), each later step's keys (processors; on_success, its version and the
    callback's file; allow_empty; outputs) and what the callback read (the batch files and
    the processors). A call in a build is a violation when it was not forced (`--force`,
    `--rerun-from`, `--resume never`), the sequence damaged none of the stage's outputs
    since (a damaged batch allows only that batch; a damaged callback output only the
    callback), and: for a batch call, the batch part is unchanged (upstream identities as
    read after this build: early cutoff); for a callback call, its own keys and what it read
    are unchanged too. Also a violation: a call of a stage outside the build's closure, of
    one batch twice, or of a held stage.

(c) the step model: before each build the model predicts, for every stage it can tell about,
    the first step the plan must name (`fuzz_steps.predict`): the earliest step whose keys
    changed or whose files were damaged (a deleted processed file: processors; a callback's
    output: on_success; an export copy: outputs; a failure for an empty output: allow_empty;
    a released override: outputs), the main step when an upstream runs first, and for a
    held stage only its export copies. The build's `--json` report (the plan it ran) and,
    in the steps and overrides focuses, `dd-build -n --json` before it must name that step
    (an earlier one is wasteful, a later one stale), and a stage that runs from a later step
    must run no batch.

The model knows only what the generator makes: deterministic stages, no kills (other tests
cover those).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from fuzz_steps import (
    LATER,
    Built,
    Model,
    Review,
    callback_input,
    derive_review,
    planned_steps,
    predict,
    stage_key,
    step_problems,
)
from fuzz_steps import sha as _sha
from fuzz_workflows import (
    CALLBACK_CONSTS,
    CALLBACK_FILES,
    CALLBACK_VERSIONS,
    CALLBACKS,
    EMPTYING,
    EXPORT_FORMATS,
    FOCUS,
    HELPER_CONSTS,
    HELPER_FILES,
    PROCESSOR_CHOICES,
    SOURCE_GLOBS,
    WHERE_KEYS,
    WORDS,
    WORKFLOW,
    Mix,
    Rng,
    StageGen,
    draw_where,
    notes_of,
    random_text,
    random_workflow,
    type_edit,
)

REPO = Path(__file__).resolve().parents[1]
NO_ROWS = "selected output has no rows"  # dd-build's own message for an empty output
__all__ = ["FOCUS", "ReferenceBuilds", "SequenceResult", "Violation", "run_seed"]


# ----------------------------------------------------------------------------- reading outputs


@dataclass(frozen=True)
class Selected:
    """A stage's selected output as its record names it, and its export copies."""

    status: str
    identity: tuple[str, ...]  # each output file's path and the sha256 of its bytes, in order
    content: tuple[Any, ...]  # ("table", schema, rows) or ("files", ((path, bytes), ...))
    exports: tuple[tuple[str, bytes], ...] = ()
    table: Any = field(default=None, compare=False)  # the pyarrow table of a tabular output


def _record(root: Path, stage: str) -> dict[str, Any] | str:
    try:
        rec = json.loads((root / "artifacts" / WORKFLOW / stage / "stage.json").read_text())
    except (OSError, ValueError) as exc:
        return f"no readable record ({exc})"
    return rec if isinstance(rec, dict) else "a record that is no JSON object"


def record_status(root: Path, stage: str) -> str:
    rec = _record(root, stage)
    return "absent" if isinstance(rec, str) else str(rec.get("status"))


def batch_files(root: Path, rec: dict[str, Any]) -> tuple[list[str], list[Path]]:
    """The batch files a record lists, in index order: as recorded, and their paths."""
    names = [b["file"] for b in sorted(rec.get("batches") or [], key=lambda b: b["index"])]
    return names, [root / "artifacts" / WORKFLOW / name for name in names]


def read_selected(root: Path, stage: str) -> Selected | str:
    """The selected output of `stage` in the project at `root`, or why it cannot be read."""
    rec = _record(root, stage)
    if isinstance(rec, str):
        return rec
    out = rec.get("output")
    if rec.get("status") not in ("completed", "completed_empty") or not out:
        return f"record status {rec.get('status')!r}, output {out!r}"
    if out["kind"] == "batches":
        names, files = batch_files(root, rec)
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
    return Selected(rec["status"], identity, table_content(table), exports, table)


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


# A stage key saying where batches run, as fuzz_workflows writes it (block style: every entry
# has params), on a line of its own at the stage entry's indentation.
_WHERE_LINE = re.compile(rf"^    (?:{'|'.join(WHERE_KEYS)}): [^\n]*\n", re.MULTILINE)


def local_serial(workflowfile: str) -> str:
    """The Workflowfile of a local serial build: the stages' `concurrency` and `executor`
    lines left out (the oracle builds every batch one at a time in its build process)."""
    return _WHERE_LINE.sub("", workflowfile)


def reference_files(root: Path) -> dict[str, bytes]:
    """The project's source files as a from-scratch build gets them (see local_serial)."""
    files = {rel: (root / rel).read_bytes() for rel in source_files(root)}
    if "Workflowfile" in files:
        files["Workflowfile"] = local_serial(files["Workflowfile"].decode()).encode()
    return files


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
    errors: dict[str, str] = field(default_factory=dict)  # failed stages: their recorded error

    @property
    def refused(self) -> bool:
        return self.code == 2

    @property
    def failed(self) -> set[str]:
        return {name for name, status in self.statuses.items() if status == "failed"}

    def failed_empty(self, name: str) -> bool:
        """Whether the stage failed only because its output has no rows (no allow_empty)."""
        return self.statuses.get(name) == "failed" and \
            NO_ROWS in self.errors.get(name, "")


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
                if ref.statuses[name] == "failed":
                    rec = _record(self.folder, name)
                    ref.errors[name] = str(rec.get("error")) if isinstance(rec, dict) else ""
                if ref.statuses[name] not in ("completed", "completed_empty"):
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

    def start(self, project: Path, fixpoint: bool = False,
              held: dict[str, str] | None = None) -> _Pending:
        """Start the from-scratch build of `project`'s current sources (or find it cached);
        with `fixpoint`, build twice and note what the second build ran. `held` maps each
        stage whose review override is in force to its review file: see `hold_reviews`."""
        held = held or {}
        files = reference_files(project)
        digest = hashlib.sha256()
        for rel, data in sorted(files.items()):
            digest.update(rel.encode() + b"\0" + data + b"\0")
        key = digest.hexdigest() + (":fixpoint" if fixpoint else "") + "".join(
            f":{name}={_sha(project / rel)}" for name, rel in sorted(held.items()))
        if key in self.cache:
            self.hits += 1
            self.cache.move_to_end(key)
            return _Pending(self, key, project, None, self.cache[key], fixpoint)
        self.builds += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="scratch-", dir=self.workdir))
        for rel, data in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
        for rel in sorted(held.values()):
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(project / rel, folder / rel)
        if held:
            hold_reviews(folder, held)
        proc = subprocess.Popen(cli_command("-q", "-k"), cwd=folder, env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return _Pending(self, key, folder, proc, None, fixpoint)


_REVIEWED = '''"""A held review, as a from-scratch build sees it (tests/fuzz_support.py)."""


def make(ctx):
    import pyarrow.parquet as pq

    (path,) = ctx.inputs.values()
    return pq.read_table(path)
'''


def hold_reviews(folder: Path, held: dict[str, str]) -> None:
    """The from-scratch oracle of held overrides: in the copy at `folder`, each held stage
    becomes a transform that returns its review file (and keeps its export copies), so its
    dependants are built from the review, and its export copies are the review's. What the
    held stage itself would build no longer matters: only its review does."""
    path = folder / "Workflowfile"
    doc = yaml.safe_load(path.read_text())
    for name, review in held.items():
        entry = doc["stages"][name]
        doc["stages"][name] = {"transform": "stages/_reviewed.py:make", "inputs": [review],
                               **({"outputs": entry["outputs"]} if "outputs" in entry else {})}
    path.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=200))
    (folder / "stages" / "_reviewed.py").write_text(_REVIEWED)


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
    dask: float = 0.0  # the share of builds that ran on the Dask scheduler (when there is one)
    # What the builds exercised: stage runs, resumes (kept batches), early cutoffs (a stage
    # left alone although an upstream ran in the same build), forced stages, refusals, the
    # edits by kind.
    seen: Counter[str] = field(default_factory=Counter)

    def report(self) -> str:
        lines = ["dd-build correctness property violated"]
        if self.seed is not None:
            focus = f" --focus {self.focus}" if self.focus != "mixed" else ""
            dask = f" --scheduler $DD_BUILD_TEST_SCHEDULER --dask {self.dask}" \
                if self.dask else ""
            lines.append(f"replay: python benchmarks/fuzz_correctness.py --examples 1 "
                         f"--seed {self.seed}{focus}{dask}")
        lines += ["", "initial workflow:", self.workflow, "",
                  "sequence (edits and builds, in order):"]
        lines += ["  " + t for t in self.transcript]
        lines += ["", "Workflowfile now:", self.final_workflowfile, "violations:"]
        lines += ["  " + str(v) for v in self.violations]
        return "\n".join(lines)


class Sequence:
    """One example: a random workflow, then rounds of random edits each followed by a build."""

    def __init__(self, rng: Rng, root: Path, refs: ReferenceBuilds, rounds: int = 5,
                 check_export: bool = True, mix: Mix | None = None,
                 scheduler: str | None = None, dask: float = 0.0) -> None:
        """`scheduler`: a Dask scheduler's address; a `dask` share of the builds (drawn per
        build) then runs on it (`--scheduler`), the others locally."""
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
        self._grew = False  # _needless saw a main step changed (growth's waste check)
        self.last_closure: list[str] = []
        self.seen: Counter[str] = Counter()
        self.last_reference: Reference | None = None
        self.only: set[str] | None = None  # while set, edits pick only these stages
        # Issue 11: the workflow as each good build had it (what `revert` goes back to), and
        # per stage every trace an own build of it completed from (the cache holds each).
        self.snapshots: list[Any] = []
        self.history: dict[str, set[Any]] = {}
        # Every trace an own build completed from → the stage names it was built under (a
        # stage renamed is the same StageGen: its trace does not hold its name).
        self.built_as: dict[Any, set[str]] = {}
        self.wf = random_workflow(rng, self.mix)
        # Where batches run (stages' concurrency and executor, and which builds go to the
        # Dask scheduler) is drawn from a generator of its own, seeded by the workflow: the
        # sequences of the seeds named in the tests stay what they were, and a seed draws the
        # same edits with or without a scheduler.
        import random

        self.scheduler, self.dask = scheduler, dask
        self.where = random.Random(f"where:{self.wf.workflowfile_text()}")
        for s in self.wf.stages:
            draw_where(self.where, s)

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
                self.edit_where()
            if not self.build(*self.random_build_args()):
                break
        else:
            if self.check_export and self.last_reference is not None:
                self.export_check()
        return SequenceResult(initial, self.transcript, self.violations, self.builds,
                              self.edits, self.wf.workflowfile_text(), len(self.wf.stages),
                              time.monotonic() - started, seen=self.seen,
                              dask=self.dask if self.scheduler else 0.0)

    def edit_where(self) -> None:
        """A third of the rounds: one generate stage's concurrency and executor drawn anew
        (not part of the fingerprint: the build after must run nothing for it)."""
        stages = [s for s in self.wf.stages if s.kind == "generate"]
        if not stages or self.where.random() >= 1 / 3:
            return
        s = self.where.choice(stages)
        text = draw_where(self.where, s)
        if text:
            self.wf.write_workflowfile(self.root)
            self.seen["edit where"] += 1
            self.transcript.append(f"edit: {s.name}: {text} (where batches run: not part "
                                   "of the fingerprint)")

    def on_dask(self) -> bool:
        """Whether the next build runs on the Dask scheduler (drawn even without one)."""
        return self.where.random() < self.dask and self.scheduler is not None

    def random_build_args(self) -> tuple[list[str], list[str]]:
        """(flags, targets) of a random build: 30% a target subset; 15% `--force S`, 10%
        `--rerun-from S` (S in the closure), 5% `--resume never`; `-k` when a stage's command
        writes nothing (so every stage that does not need it still builds); `-j N` half the
        time."""
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
        return flags + self.random_jobs(), targets

    def random_jobs(self) -> list[str]:
        """Half the builds run several stages at once (`-j 2/3/4/8`), which must change
        nothing the checks see. Drawn from a generator of its own (seeded by the workflow
        and the build's number), so the sequences of the seeds named in the tests stay
        what they were."""
        import random

        draw = random.Random(f"{self.wf.workflowfile_text(where=False)}:{self.builds}")
        return [] if draw.random() < 0.5 else ["-j", str(draw.choice((2, 3, 4, 8)))]

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

    def released(self, flags: list[str], closure: list[str]) -> set[str]:
        """Stages whose review override this build lets go: named by --force or
        --rerun-from (not the stages after a --rerun-from stage, nor --resume never)."""
        return {value for flag, value in zip(flags, flags[1:], strict=False)
                if flag in ("--force", "--rerun-from") and value in closure}

    def build(self, flags: list[str], targets: list[str]) -> bool:
        """Build, check the property, update the model. False when the sequence must stop."""
        self.builds += 1
        n = self.builds
        args = [*flags, *targets]
        closure = self.wf.closure(targets)
        forced = self.forced(flags, closure)
        released = self.released(flags, closure)
        held = {name for name in self.model.held if name not in released}
        cross = self.wf.has_cross()
        pending = self.refs.start(self.root, fixpoint=cross, held={
            name: self.model.held[name].path for name in held})
        pred = predict(self.wf, self.model, self.root, closure, forced, held & set(closure))
        planned = self._dry_plan(args, pred, held & set(closure))
        (self.root / "calls.log").unlink(missing_ok=True)
        for marker in (self.root / "flaky").glob(".*"):  # a flaky first attempt per build
            marker.unlink()
        dask = ["--scheduler", self.scheduler] if self.on_dask() and self.scheduler else []
        proc = run_cli(self.root, "build", "--json", *args, *dask)
        calls = self._named(_called(self.root))
        ref = pending.result(self.wf.names)
        summary = self._summary(proc.stdout)
        self._count(proc.stdout, closure, forced, calls)
        ran = {s: sorted(c, key=str) for s, c in self._by_stage(calls).items()}
        self._count_where(closure, bool(dask))
        on = " (on the Dask scheduler: --scheduler $DD_BUILD_TEST_SCHEDULER)" if dask else ""
        self.transcript.append(f"build #{n}: dd-build {' '.join(args)}{on} -> exit "
                               f"{proc.returncode}; called {ran or 'nothing'}")
        self.transcript += ["    " + line for line in summary]
        if pred:
            self.transcript.append("    the model expects the first steps " + ", ".join(
                f"{name}: {step or '-'}" for name, step in pred.items()))
        if ref.refused or proc.returncode == 2:
            return self._refusal(n, proc, ref)
        found = self._outcome(n, proc, ref, closure)
        blocked = self._blocked(closure, ref)
        selected: dict[str, Selected] = {}
        for name in closure:
            if name not in blocked:
                found += self._check_stage(n, name, ref, selected)
        found += self._check_held(n, held & set(closure) - blocked, selected)
        found += self._check_steps(n, pred, proc.stdout, planned)
        found += self._wasteful(n, closure, forced, held, calls, selected)
        found += self._not_restored(n, closure, forced, held, calls, selected)
        # A skipped stage too: its plan right after must be the skip it recorded, kept.
        skipped = any(ref.statuses.get(name) == "skipped_empty_upstream" for name in closure)
        if not found and proc.returncode == 0 and (cross or skipped or any(
                s.helpers for s in self.wf.stages)):
            found += self._dry_run_check(n, targets, closure, held)
        self.violations += found
        if found:
            return False
        # A --force S that did not run S (an upstream of it failed) did not let its review go.
        self.model.held = {name: review for name, review in self.model.held.items()
                           if name in held or name in blocked}
        for name in closure:
            if name not in blocked:
                self._remember(name, ref, selected, held)
        self.last_closure = [name for name in closure if name not in blocked]  # compared
        self.last_reference = ref
        import copy

        self.snapshots.append(copy.deepcopy(self.wf))
        return True

    def _remember(self, name: str, ref: Reference, selected: dict[str, Selected],
                  held: set[str]) -> None:
        """The model after a good build: what the stage was built from, step by step."""
        model, s = self.model, self.wf.stage(name)
        outputs = s.step_parts().get("outputs", "")
        if name in held:  # no own build: only its export copies, from the review
            if name in selected:
                model.identity[name] = selected[name].identity
            model.rec_exports[name] = outputs
            model.damaged.get(name, set()).discard("exports")
            return
        rec = _record(self.root, name)
        if name in selected or (ref.failed_empty(name) and isinstance(rec, dict)):
            ups = {u: selected[u].identity for u in s.upstreams if u in selected}
            model.built[name] = stage_key(self.root, s, ups, callback_input(
                self.root, s, rec) if isinstance(rec, dict) else None)
            if isinstance(rec, dict) and rec.get("status") in ("completed", "completed_empty"):
                self.history.setdefault(name, set()).add(_trace(model.built[name]))
                self.built_as.setdefault(_trace(model.built[name]), set()).add(name)
            for names in (model.released, model.lost, model.failed_empty):
                names.discard(name)
            model.damaged.pop(name, None)
            model.rec_exports[name] = outputs
            if name in selected and selected[name].status == "completed":
                model.identity[name] = selected[name].identity
            else:
                model.identity.pop(name, None)
            if name not in selected:
                model.failed_empty.add(name)
        elif ref.statuses.get(name) == "failed":
            model.damaged[name] = {"all"}
            model.identity.pop(name, None)
        elif ref.statuses.get(name) == "skipped_empty_upstream":
            model.forget(name)

    def _blocked(self, closure: list[str], ref: Reference) -> set[str]:
        """Stages after a stage that fails (from scratch too): dd-build runs none of them, and
        neither does a from-scratch build, except where a held stage is in between: there
        the oracle's held stage reads only its review (see hold_reviews), while dd-build does
        not run a stage whose upstream failed, even a held one. Their records are as before."""
        blocked: set[str] = set()
        for name in closure:
            if any(u in ref.failed or u in blocked for u in self.wf.upstreams(name)):
                blocked.add(name)
        if blocked & set(self.model.held):
            self.seen["held stages after a failed upstream"] += 1
        return blocked

    def _dry_plan(self, args: list[str], pred: dict[str, str | None], held: set[str]
                  ) -> dict[str, dict[str, Any]] | None:
        """`dd-build -n --json` before the build (the steps and overrides focuses), when the
        model expects a later step somewhere (or a held stage): its plan must name them."""
        if not self.mix.dry_plans or not (held or any(step in LATER for step in pred.values())):
            return None
        proc = run_cli(self.root, "build", "-n", "--json", *args)
        return planned_steps(proc.stdout)

    def _check_steps(self, n: int, pred: dict[str, str | None], stdout: str,
                     planned: dict[str, dict[str, Any]] | None) -> list[Violation]:
        """The plan names the first step the model expects (in the build's report, and in a
        dry run before it); a stage that runs from a later step runs no batch."""
        report = planned_steps(stdout)
        if report is None:
            return []
        # A stage restored from the cache has a known output at plan time: the stages after
        # it may be up to date (early cutoff), where the model, which cannot tell a restore
        # from a run, expects them to run after it.
        restored = {name for plan in (report, planned or {}) for name, e in plan.items()
                    if e.get("action") == "restore"}
        after = {d for r in restored for d in self.wf.descendants(r)} - restored
        pred = {name: step for name, step in pred.items() if name not in after}
        kinds = {s.name: s.kind for s in self.wf.stages}
        found = [Violation(kind, n, name, message) for kind, name, message in
                 step_problems(pred, report, kinds, "the build's plan")]
        if planned is not None:
            found += [Violation(kind, n, name, message) for kind, name, message in
                      step_problems(pred, planned, kinds, "dd-build -n --json")]
        for name, step in pred.items():
            entry = report.get(name)
            if entry is None:
                continue
            self.seen[f"step checks ({step or 'none'})"] += 1
            if step in (*LATER, None) and entry.get("batches_run"):
                found.append(Violation("wasteful", n, name, f"ran {entry['batches_run']} "
                                       f"batch(es), but only {step or 'nothing'} had to run"))
        return found

    def _check_held(self, n: int, held: set[str], selected: dict[str, Selected]
                    ) -> list[Violation]:
        """A held stage's selected output is its review, whatever changed."""
        found = []
        for name in sorted(held):
            got, review = selected.get(name), self.model.held[name]
            self.seen["held through a build"] += 1
            if got is None:
                found.append(Violation("stale", n, name, "its review override is held, but "
                                       f"it has no output: {read_selected(self.root, name)}"))
            elif got.content != review.content:
                found.append(Violation("stale", n, name, "its review override was dropped: "
                                       f"{diff_content(got.content, review.content)} (the "
                                       "review)"))
        return found

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
        """Exit statuses: only stages that may fail may fail, in either build (a stage
        whose output has no rows without allow_empty may fail)."""
        found: list[Violation] = []
        may_fail = self.wf.may_fail()
        unexpected = {s for s in ref.failed - may_fail if not ref.failed_empty(s)}
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
        if want_status == "skipped_empty_upstream":
            status = record_status(self.root, name)
            return [] if status == want_status else [Violation(
                "stale", n, name, f"recorded {status!r}, but a from-scratch build skips it "
                "(an upstream has no rows)")]
        if want_status not in ("completed", "completed_empty"):
            return []  # not run from scratch either (an upstream failed)
        got = read_selected(self.root, name)
        if isinstance(got, str):
            return [Violation("stale", n, name, f"no selected output: {got}")]
        selected[name] = got
        if got.status != want_status:
            return [Violation("stale", n, name, f"recorded {got.status!r}, but a from-scratch "
                              f"build records {want_status!r}")]
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

    def _dry_run_check(self, n: int, targets: list[str], closure: list[str], held: set[str]
                       ) -> list[Violation]:
        """Right after a good build, a dry run must find every stage of the closure up to
        date (a stage that read files another stage then rewrote would run again), or held."""
        proc = run_cli(self.root, "build", "-n", "--json", *targets)
        try:
            stages = json.loads(proc.stdout).get("stages", [])
        except ValueError:
            return [Violation("error", n, None, f"dry run: exit {proc.returncode}, no JSON: "
                              f"{proc.stderr.strip()[-1000:]}")]
        found = []
        actions = {s.get("stage"): s.get("action") for s in stages}
        for s in stages:
            ok = ("up_to_date", "held") if s.get("stage") in held else ("up_to_date",)
            if s.get("stage") in closure and s.get("action") not in ok and \
                    not self._standing_skip(s, actions):
                reasons = "; ".join(r.get("message", r.get("code", ""))
                                    for r in s.get("reasons", []))
                found.append(Violation("stale", n, s["stage"], "a dry run right after this "
                                       f"build would {s.get('action')} it: {reasons}"))
        return found

    def _standing_skip(self, entry: dict[str, Any], actions: dict[Any, Any]) -> bool:
        """A stage the build recorded `skipped_empty_upstream` is planned `skip_empty_upstream`
        again while its upstream is still empty (README, "Empty outputs": the skip is kept, and
        a build with that plan writes and runs nothing). Only when every reason names an
        upstream that is itself settled (up to date, held or skipped again) and has no rows."""
        name = entry.get("stage")
        reasons = entry.get("reasons") or []
        if entry.get("action") != "skip_empty_upstream" or not reasons or \
                record_status(self.root, str(name)) != "skipped_empty_upstream":
            return False
        for r in reasons:
            up = r.get("input")
            if r.get("code") != "upstream_empty" or up not in self.wf.upstreams(str(name)) or \
                    actions.get(up) not in ("up_to_date", "held", "skip_empty_upstream") or \
                    record_status(self.root, str(up)) not in ("completed_empty",
                                                              "skipped_empty_upstream"):
                return False
        self.seen["standing skips checked"] += 1
        return True

    def _wasteful(self, n: int, closure: list[str], forced: set[str], held: set[str],
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
            if stage in held:
                found.append(Violation("wasteful", n, stage, f"called ({sorted(whats, key=str)}) "
                                       "while its review override is held"))
                continue
            if stage in forced or stage not in self.model.built:
                continue
            self._grew = False
            extra = self._needless(stage, whats, selected)
            if extra:
                damaged = self.model.damaged.get(stage, set())
                why = ("only num_records changed since its last build: only new batches, "
                       "a last batch whose size changed and damaged ones may run"
                       if self._grew else
                       f"only damaged {sorted(damaged, key=str)} may rerun" if damaged else
                       "its spec, code and inputs are unchanged since its last build (for a "
                       "callback: its keys, its file and what it read too), its outputs are "
                       "intact and it was not forced")
                found.append(Violation("wasteful", n, stage,
                                       f"called for {sorted(extra, key=str)}: {why}"))
        return found

    def _named(self, calls: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Calls by stage name: stage code logs the name its files go by (a renamed stage's
        first name, `StageGen.stem`), callbacks the stage's name now."""
        names = {s.stem: s.name for s in self.wf.stages}
        names.update({s.name: s.name for s in self.wf.stages})
        return [(names.get(stage, stage), what) for stage, what in calls]

    def _not_restored(self, n: int, closure: list[str], forced: set[str], held: set[str],
                      calls: list[tuple[str, str]], selected: dict[str, Selected]
                      ) -> list[Violation]:
        """Nothing runs after a revert: a stage called although an own build of it completed
        from the trace it has now (its spec, code, inputs and later steps), and that trace is
        not the one its record holds (a revert, or a `clean`), should have been restored
        from the build cache. So should a renamed stage whose code reads nothing of its name
        or folder, once its trace was built under another name."""
        found = []
        for stage, whats in self._by_stage(calls).items():
            s = self.wf.stage(stage)
            if stage not in closure or stage in forced or stage in held or s.cross or \
                    not all(u in selected for u in s.upstreams):
                continue
            now = _trace(stage_key(self.root, s, {u: selected[u].identity
                                                  for u in s.upstreams}))
            old = self.model.built.get(stage)
            if old is not None and _trace(old) == now:
                continue
            if now in self.history.get(stage, set()):
                self.seen["reverts run"] += 1
                found.append(Violation("wasteful", n, stage, f"called for "
                                       f"{sorted(whats, key=str)} after a revert: an own build "
                                       "of it completed from this very spec, code and inputs "
                                       "before, so it must be restored from the build cache"))
                continue
            elsewhere = sorted(self.built_as.get(now, set()) - {stage})
            if elsewhere and not s.reads_name:
                self.seen["renames run"] += 1
                found.append(Violation("wasteful", n, stage, f"called for "
                                       f"{sorted(whats, key=str)} after a rename: a build of "
                                       f"it as {elsewhere} completed from this very spec, code "
                                       "and inputs, and its code reads nothing of its name or "
                                       "folder, so it must be restored from the build cache"))
            elif elsewhere:
                self.seen["renames built again (code reads the name)"] += 1
        for name in closure:
            if name not in {st for st, _ in calls} and name in self.history and \
                    name in selected and name not in forced:
                self.seen["stages not run"] += 1
            s = self.wf.stage(name)
            if name in {st for st, _ in calls} or name in forced or s.cross or \
                    not all(u in selected for u in s.upstreams + [name]):
                continue
            now = _trace(stage_key(self.root, s, {u: selected[u].identity
                                                  for u in s.upstreams}))
            if now not in self.history.get(name, set()) and \
                    self.built_as.get(now, set()) - {name}:
                self.seen["renames restored"] += 1
        return found

    def _edit_rename(self) -> str | None:
        """A stage renamed in the Workflowfile (issue 11), back and forth between two names
        (so a rename may go back to a folder built before): its code file, outputs, export
        copies and log lines keep their names (`StageGen.files_as`); the stages reading it
        name it anew. The model is kept per stage folder, so nothing of it moves."""
        s = self._pick()
        if s is None:
            return None
        old, stem = s.name, s.stem
        s.files_as, s.name = stem, stem + "r" if old == stem else stem
        for other in self.wf.stages:
            other.stage_inputs = [s.name if u == old else u for u in other.stage_inputs]
            if other.seed == old:
                other.seed = s.name
        self.wf.order = [s.name if x == old else x for x in self.wf.order]
        self._rewrite()
        # Its outputs outside the artifacts (a run stage's, export copies) are one set of
        # files for both names: the folder of its new name may list them as another build
        # of the other name left them.
        changed = self._rewritten_since(s.name)
        if changed:
            self._damage(s, changed)
        reads = " (its code reads its name or folder)" if s.reads_name else ""
        return f"rename {old} -> {s.name}{reads}"

    def _rewritten_since(self, name: str) -> str | None:
        """"all" when a run stage's output, "exports" when an export copy is not what the
        record in `name`'s folder lists (None: as listed, or no record)."""
        rec = _record(self.root, name)
        if not isinstance(rec, dict):
            return None
        listed = [("all", f) for f in (rec.get("output") or {}).get("files") or []
                  if rec.get("kind") == "run"]
        listed += [("exports", f) for f in ((rec.get("steps") or {}).get("exports") or {})
                   .get("files") or []]
        found = set()
        for what, f in listed:
            path = self.root / f["path"]
            try:
                digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                digest = "missing"
            if digest != f["digest"]:
                found.add(what)
        return "all" if "all" in found else "exports" if found else None

    def _edit_revert(self) -> str | None:
        """The Workflowfile, the stages' code, helpers and callbacks as an earlier good build
        had them (the data files stay as they are)."""
        import copy

        if len(self.snapshots) < 2:
            return None
        back = self.rng.randint(2, len(self.snapshots))
        wf = copy.deepcopy(self.snapshots[-back])
        wf.data = self.wf.data
        names = {s.stem: s.name for s in self.wf.stages}
        self.wf = wf
        self.wf.write_workflowfile(self.root)
        for s in self.wf.stages:
            self.wf.write_code(self.root, s)
        for rel in HELPER_CONSTS:
            self.wf.write_helper(self.root, rel)
        for rel in CALLBACK_CONSTS:
            self.wf.write_callbacks(self.root, rel)
        renamed = [s for s in self.wf.stages if names.get(s.stem, s.name) != s.name]
        for s in renamed:  # as _edit_rename: their outputs outside the artifacts are shared
            changed = self._rewritten_since(s.name)
            if changed:
                self._damage(s, changed)
        also = f" (renames {', '.join(f'{names[s.stem]} -> {s.name}' for s in renamed)})" \
            if renamed else ""
        return f"revert to the workflow and code of {back} good builds ago{also}"

    def _needless(self, name: str, whats: set[int | str], selected: dict[str, Selected]
                  ) -> set[int | str]:
        """The calls of a stage that nothing asked for. A batch or a transform's call: its
        main step's part is as last built (upstream outputs as read after this build: early
        cutoff) and nothing of it was damaged. A callback: besides, its own part and what it
        read (the batches, the processors) are as last built, its output is intact, and some
        batch was kept (a main step that runs fresh, or whose every batch was damaged, drops
        the later steps' files: dd-build's design, not the step-by-step cutoff)."""
        s = self.wf.stage(name)
        if not all(u in selected for u in s.upstreams):
            return set()  # an upstream is reported stale already, or failed
        damaged = self.model.damaged.get(name, set())
        old = self.model.built[name]
        rec = _record(self.root, name)
        now = stage_key(self.root, s, {u: selected[u].identity for u in s.upstreams},
                        callback_input(self.root, s, rec) if isinstance(rec, dict) else None)
        batch_calls = {w for w in whats if w != "cb"}
        if "all" in damaged:
            return set()
        if old.main_changed(now):
            extra = _grown_needlessly(s, old, now, batch_calls, damaged)
            self._grew = extra is not None
            return extra or set()
        extra: set[int | str] = set()
        batches_damaged = {d for d in damaged if isinstance(d, int)}
        # (A stage whose output had no rows resumes at its allow_empty check: nothing again.)
        again = False
        if s.kind == "generate":
            extra |= batch_calls - batches_damaged
        elif not batches_damaged and not again:
            extra |= batch_calls
        # A main step that runs fresh (no batch left to keep) starts with no later step's
        # files: its callback runs again even when the batches come out the same.
        fresh = again or (old.cb_input is not None and
                          len(batches_damaged) >= len(old.cb_input[0]))
        if "cb" in whats and "cb" not in damaged and not fresh and now.step("on_success") == \
                old.step("on_success") and now.cb_input == old.cb_input:
            extra.add("cb")
        return extra

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
        self.seen["growths"] += sum(1 for s in stages if s.get("action") in ("grow", "shrink"))

    def _count_where(self, closure: list[str], dask: bool) -> None:
        """What the builds exercised of where batches run."""
        self.seen["dask builds" if dask else "local builds"] += 1
        for name in closure:
            s = self.wf.stage(name)
            if s.kind == "generate":
                where = "dask" if dask else s.executor or "thread"
                many = "concurrent" if s.concurrency > 1 else "serial"
                self.seen[f"generate stages in builds ({where}, {many})"] += 1
            elif s.kind == "transform" and dask:
                self.seen["transform stages in builds (dask)"] += 1

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
        stages = [s for s in self.wf.stages if s.kind in kinds and (where is None or where(s))
                  and (self.only is None or s.name in self.only)]
        return self.rng.choice(stages) if stages else None

    def _rewrite(self) -> None:
        self.wf.write_workflowfile(self.root)

    def _edit_param(self) -> str | None:
        s = self._pick()
        if s is None:
            return None
        key = "k" if s.kind == "run" else self.rng.choice(("p", "p", "q"))
        old = getattr(s, key)
        setattr(s, key, (old + self.rng.randint(1, 9)) % 100)
        self._rewrite()
        return f"{s.name}: params.{key} {old} -> {getattr(s, key)}"

    def _edit_param_type(self) -> str | None:
        """Mostly a type-only edit: `1` -> `1.0` -> `true` -> `"1"`, bare or nested."""
        s = self._pick()
        if s is None:
            return None
        slot = "x" if s.x is not None and self.rng.random() < 0.5 else "t"
        old = getattr(s, slot)
        new = type_edit(self.rng, old)
        setattr(s, slot, new)
        self._rewrite()
        where = "params.nest (seen[0] and deep.x)" if slot == "x" else "params.t"
        same = " (type-only: equal in Python)" if old.value == new.value else ""
        return f"{s.name}: {where} {old.describe()} -> {new.describe()}{same}"

    def _edit_grow(self) -> str | None:
        """num_records grown or shrunk by a few rows, batch_size kept (issue 11): only the
        new batches, and a last partial batch whose size changed, may run."""
        s = self._pick(("generate",), where=lambda s: s.num_records is not None)
        if s is None:
            return None
        old = s.num_records
        assert old is not None
        options = [n for n in range(max(1, old - 4), old + 6) if n != old]
        s.num_records = self.rng.choice(options)
        self._rewrite()
        how = "grows" if s.num_records > old else "shrinks"
        return f"{s.name}: num_records {old} -> {s.num_records} ({how})"

    def _edit_spec(self) -> str | None:
        s = self._pick(("generate",))
        if s is None:
            return None
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
        if s is None:
            return None
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
        if s is None:
            return None
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
        """on_success: added, switched to another callback (in the same file or the other
        one; cb_keep returns None), or removed (with its on_success_version)."""
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
        version = ""
        if s.on_success is None and s.on_success_version:
            s.on_success_version = None
            version = " (and its on_success_version)"
        self._rewrite()
        return f"{s.name}: on_success {old} -> {s.on_success}{version}"

    def _edit_callback_version(self) -> str | None:
        """on_success_version added, changed or removed (the callback's identity)."""
        s = self._pick(("generate", "transform"), where=lambda s: s.on_success)
        if s is None:
            return None
        old = s.on_success_version
        options = [v for v in CALLBACK_VERSIONS if v != old]
        s.on_success_version = self.rng.choice(options) if old is None or \
            self.rng.random() < 0.5 else None
        self._rewrite()
        return f"{s.name}: on_success_version {old} -> {s.on_success_version}"

    def _edit_allow_empty(self) -> str | None:
        """allow_empty set or unset; sometimes with the processor that empties small stages
        added or removed, so that the check has something to say."""
        s = self._pick(("generate", "transform"))
        if s is None:
            return None
        what = []
        if self.rng.random() < 0.7:
            s.allow_empty = not s.allow_empty
            what.append(f"allow_empty -> {s.allow_empty}")
        if self.rng.random() < 0.4 or not what:
            s.processors = [p for p in s.processors if p != EMPTYING] if \
                EMPTYING in s.processors else [*s.processors, EMPTYING]
            what.append(f"processors -> {json.dumps(s.processors)}")
        self._rewrite()
        return f"{s.name}: " + ", ".join(what)

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
            if data == path.read_bytes():  # two empty parts are the same bytes
                data = b"not parquet"
            path.write_bytes(data)
            self._entries_lost(s)
            what = "overwrite"
        self.model.damaged.setdefault(s.name, set()).add("cb")
        return f"{s.name}: {what} its callback output {path.relative_to(self.root)}"

    def _edit_processors(self) -> str | None:
        s = self._pick(("generate", "transform"))
        if s is None:
            return None
        old = [dict(p) for p in s.processors]
        x = self.rng.random()
        choices = PROCESSOR_CHOICES + ((EMPTYING,) if self.mix.steps else ())
        if not old or x < 0.4:
            s.processors = old + [self.rng.choice(choices)]
        elif x < 0.7:
            s.processors = old[:-1]
        elif self.mix.steps and len(old) > 1 and x < 0.8:  # the same processors, reordered
            s.processors = old[1:] + old[:1]
        else:
            s.processors = self.rng.sample(choices, self.rng.randint(1, 2))
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
        if self.mix.steps:
            s.exports = self._new_exports(s)
        elif old and self.rng.random() < 0.5:
            s.exports = []
        else:
            ext = self.rng.choice(("jsonl", "csv", "parquet"))
            s.exports = [f"exports/{s.stem}.{ext}"]
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

    def _new_exports(self, s: StageGen) -> list[str]:
        """Export copies widened (issue 8): one added (up to two), one switched to another
        format, one removed, or all of them removed."""
        old = list(s.exports)
        have = [e.rsplit(".", 1)[1] for e in old]
        free = [f for f in EXPORT_FORMATS if f not in have]
        x = self.rng.random()
        if not old or (x < 0.35 and len(old) < 2):
            return old + [f"exports/{s.stem}.{self.rng.choice(free)}"]
        i = self.rng.randint(0, len(old) - 1)
        if x < 0.65:
            return old[:i] + [f"exports/{s.stem}.{self.rng.choice(free)}"] + old[i + 1:]
        if x < 0.85 and len(old) > 1:
            return old[:i] + old[i + 1:]
        return []

    def _edit_step_output(self) -> str | None:
        """Delete or overwrite a later step's file: a processed file (its processors rerun)
        or an export copy (only the copies are written again). Not an export copy another
        stage reads through a glob or path."""
        read = {c for o in self.wf.stages for c in self.wf.producers(o)}
        options: list[tuple[StageGen, str, Path]] = []
        for s in self.wf.stages:
            rec = _record(self.root, s.name)
            if not s.tabular or not isinstance(rec, dict):
                continue
            steps = rec.get("steps") or {}
            for step, label in (("processed", "processed"), ("exports", "exports")):
                if step == "exports" and s.name in read:
                    continue
                options += [(s, label, self.root / f["path"])
                            for f in (steps.get(step) or {}).get("files", [])
                            if (self.root / f["path"]).is_file()]
        options = [o for o in options if self.only is None or o[0].name in self.only]
        if not options:
            return None
        s, label, path = self.rng.choice(options)
        if self.rng.random() < 0.5:
            path.unlink()
            what = "delete"
        else:
            path.write_bytes(path.read_bytes()[:-1] + b"#")
            if label == "processed":
                self._entries_lost(s)
            what = "overwrite (last byte)"
        self._damage(s, label)
        return f"{s.name}: {what} its {label} file {path.relative_to(self.root)}"

    # -- review overrides

    def _edit_override(self) -> str | None:
        """`dd-build override S reviews/S.parquet`, the review derived from S's output."""
        import pyarrow.parquet as pq

        options = []
        for s in self.wf.stages:
            got = read_selected(self.root, s.name) if s.tabular else None
            if isinstance(got, Selected) and got.status == "completed" and got.table is not None:
                options.append((s, got))
        options = [o for o in options if self.only is None or o[0].name in self.only]
        if not options:
            return None
        s, got = self.rng.choice(options)
        review = derive_review(self.rng, got.table)
        rel = f"reviews/{s.name}.parquet"
        (self.root / "reviews").mkdir(exist_ok=True)
        pq.write_table(review, self.root / rel)
        proc = run_cli(self.root, "override", s.name, rel)
        if proc.returncode != 0:
            self.violations.append(Violation("error", self.builds, s.name, f"override "
                                             f"failed: {proc.stderr.strip()}"))
            return f"dd-build override {s.name} {rel} -> exit {proc.returncode}"
        self.model.held[s.name] = Review(rel, table_content(review))
        self.model.released.discard(s.name)
        self.model.lost.discard(s.name)
        self.model.damaged.get(s.name, set()).discard("exports")  # written from the review
        self._refresh_identity(s.name)
        self.seen["overrides"] += 1
        return (f"dd-build override {s.name} {rel} ({review.num_rows} of {got.table.num_rows} "
                f"rows kept, one v changed) -> exit 0")

    def _refresh_identity(self, name: str) -> None:
        got = read_selected(self.root, name)
        if isinstance(got, Selected) and got.status == "completed":
            self.model.identity[name] = got.identity
        else:
            self.model.identity.pop(name, None)

    def _held_stage(self) -> StageGen | None:
        names = sorted(self.model.held)
        return self.wf.stage(self.rng.choice(names)) if names else None

    def _edit_release(self) -> str | None:
        """`dd-build override --release S`: S's own output is its output again."""
        s = self._held_stage()
        if s is None:
            return None
        proc = run_cli(self.root, "override", "--release", s.name)
        if proc.returncode != 0:
            self.violations.append(Violation("error", self.builds, s.name, "override --release "
                                             f"failed: {proc.stderr.strip()}"))
        del self.model.held[s.name]
        self.model.released.add(s.name)
        self._refresh_identity(s.name)
        self.seen["releases"] += 1
        return f"dd-build override --release {s.name} -> exit {proc.returncode}"

    def _edit_override_lost(self) -> str | None:
        """Delete a held override's file from the artifacts: the review is lost, and the
        stage's own output takes its place."""
        s = self._held_stage()
        if s is None:
            return None
        rec = _record(self.root, s.name)
        out = rec.get("output") if isinstance(rec, dict) else None
        files = [self.root / f["path"] for f in (out or {}).get("files", [])]
        if not files:
            return None
        for f in files:
            f.unlink(missing_ok=True)
        del self.model.held[s.name]
        self.model.lost.add(s.name)
        self.model.identity.pop(s.name, None)
        return f"{s.name}: delete its override file {files[0].relative_to(self.root)} (lost)"

    # Edits a held stage's own spec, code and files, or its upstreams', may get.
    _OWN_EDITS = ("param", "param_type", "code_const", "code_const", "code_comment",
                  "processors", "callback", "callback_version", "allow_empty", "exports",
                  "spec", "batch_delete", "step_output")
    _UPSTREAM_EDITS = ("param", "code_const", "spec", "processors", "callback",
                       "batch_delete", "clean")

    def _edit_held_own(self) -> str | None:
        """An edit of a held stage itself: held, not run, until released."""
        s = self._held_stage()
        return None if s is None else self._scoped({s.name}, self._OWN_EDITS, "own")

    def _edit_held_upstream(self) -> str | None:
        """An edit of a stage a held stage depends on: the held stage keeps its review."""
        s = self._held_stage()
        if s is None:
            return None
        ups = {n for n in self.wf.closure([s.name]) if n != s.name}
        return self._scoped(ups, self._UPSTREAM_EDITS, f"upstream of held {s.name}") \
            if ups else None

    def _scoped(self, names: set[str], kinds: tuple[str, ...], what: str) -> str | None:
        self.only = names
        try:
            for _ in range(6):
                text = getattr(self, "_edit_" + self.rng.choice(kinds))()
                if text:
                    return f"{text} [{what}]"
            return None
        finally:
            self.only = None

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
        if s is None:
            return None
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
            if s.kind not in kinds or (self.only is not None and s.name not in self.only):
                continue
            rec = _record(self.root, s.name)
            if isinstance(rec, str):
                continue
            for b in rec.get("batches", []):
                path = self.root / "artifacts" / WORKFLOW / b["file"]
                if path.is_file():
                    options.append((s, path, int(b["index"])))
        return self.rng.choice(options) if options else None

    def _entries_lost(self, stage: StageGen) -> None:
        """A file of the stage's folder edited in place: the build cache holds it as a hard
        link (the same inode), so each entry holding it is damaged and never restored (by
        design). Which builds of the stage held it is not modelled: none counts as kept."""
        for name in (stage.stem, stage.stem + "r"):
            for trace in self.history.pop(name, set()):
                self.built_as.pop(trace, None)

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
        self._entries_lost(s)
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
        self._entries_lost(s)
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
        if s is None:
            return None
        if not (self.root / "artifacts" / WORKFLOW / s.name).exists():
            return None
        proc = run_cli(self.root, "clean", s.name)
        if proc.returncode != 0:
            self.violations.append(Violation("error", self.builds, s.name,
                                             f"clean failed: {proc.stderr.strip()}"))
        self.model.forget(s.name)
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


def _trace(built: Any) -> Any:
    """A stage's trace without what its callback read (known only after a build)."""
    from dataclasses import replace as _replace

    return _replace(built, cb_input=None)


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    later = max(time.time_ns(), st.st_mtime_ns) + 1_000_000_000
    os.utime(path, ns=(later, later))


def _sub_rng(rng: Rng) -> Any:
    import random

    return random.Random(rng.randint(0, 2**32))


def run_sequence(rng: Rng, root: Path, refs: ReferenceBuilds, rounds: int = 5,
                 check_export: bool = True, focus: str = "mixed",
                 scheduler: str | None = None, dask: float = 0.0) -> SequenceResult:
    result = Sequence(rng, root, refs, rounds, check_export, FOCUS[focus], scheduler,
                      dask).run()
    result.focus = focus
    return result


def _grown_needlessly(s: StageGen, old: Built, now: Built, batch_calls: set[int | str],
                      damaged: set[int | str]) -> set[int | str] | None:
    """A generate stage whose main step changed only in num_records (issue 11's growth): the
    batches that ran although their index, offset and size are as built and they were not
    damaged. Seeded stages are left out: their code reads the whole seed (ctx.inputs), so a
    seed that grows reruns them all. None when the change is not such a growth."""
    if s.kind != "generate" or s.seed or s.seed_file or old.main[1:] != now.main[1:] or \
            old.callback_main != now.callback_main:
        return None
    before, after = json.loads(old.main[0]), json.loads(now.main[0])
    # compared as JSON text: 1, 1.0 and true are equal in Python, not in a spec
    rest = [json.dumps({k: v for k, v in d.items() if k != "num_records"}, sort_keys=True)
            for d in (before, after)]
    n0, n1 = before.get("num_records"), after.get("num_records")
    if rest[0] != rest[1] or not isinstance(n0, int) or not isinstance(n1, int):
        return None
    size = int(after.get("batch_size", 100))

    def rows(i: int, n: int) -> int:
        return max(0, min(size, n - i * size))

    needed = {i for i in range(-(-n1 // size)) if rows(i, n0) != rows(i, n1)}
    return {w for w in batch_calls if isinstance(w, int) and w not in needed | damaged}


def run_seed(seed: int, root: Path, refs: ReferenceBuilds, rounds: int = 5,
             check_export: bool = True, focus: str = "mixed",
             scheduler: str | None = None, dask: float = 0.0) -> SequenceResult:
    """The example of one seed (and focus): the same in the tests and in the benchmark. With
    a Dask `scheduler`, a `dask` share of its builds runs there (the same edits either way)."""
    import random

    result = run_sequence(random.Random(seed), root, refs, rounds, check_export, focus,
                          scheduler, dask)
    result.seed = seed
    return result

