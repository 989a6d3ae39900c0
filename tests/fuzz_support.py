"""Correctness fuzzing of dd-build: random workflows, random edits, and the model that checks them.

Shared by `tests/test_fuzz_correctness.py` (a few examples, seeds picked by hypothesis) and
`benchmarks/fuzz_correctness.py` (many, with figures). Everything random in an example is drawn
from one `random.Random(seed)` (`run_seed`), so a seed replays the same example anywhere.

An example: a random workflow of 2-6 deterministic stages (`random_workflow`), each with its own
code file, then rounds of 0-3 random edits each followed by a `dd-build` with random targets and
flags (`Sequence`). Edits: a param, a spec key (num_records, batch_size, sampling), a code
constant (changes the output) or a comment (does not), `description`/`retries` (not
fingerprinted), a file input's content, a file matching `data/*.txt` added or removed,
touching a file (same bytes, new mtime), deleting, garbling, replacing (another valid
parquet) or touching a batch file, damaging a run stage's output, `dd-build clean S`. Code
and data edits sometimes keep the file's size and land in the same second as its last write
(as a quick script's edit does).

The property (Build Systems à la Carte, STYLE.md), checked after every `dd-build`:

(a) never stale: every stage in the build's closure has a selected output (read from its
    record: its batch files, or its run outputs) equal to that stage's output in a
    from-scratch build of the current project files in a fresh folder. From-scratch builds
    are cached by a hash of the project's source files (Workflowfile, stages/*.py, data/*.txt)
    and run in parallel with the build under test.

(b) never wasteful: every stage's code appends each call to `calls.log`. The model (`Model`)
    remembers per stage the key of its last completed build: its spec as written minus
    `description` and `retries`, the sha256 of its code file and of each file input, and the
    bytes-identity (sha256 of each file) of each upstream stage's selected output. A stage
    called in a build is a violation when all of these hold:
      - it was not forced (`--force` it, `--rerun-from` it or an ancestor, `--resume never`);
      - its key now equals the remembered one (upstream identities as read after this build,
        so an upstream that reran with byte-identical output is no change: early cutoff);
      - the sequence damaged none of its outputs since (for a generate stage whose only
        change is damaged batch files, only those batches may be called).
    Also a violation: a call of a stage outside the build's closure, or of one batch twice.
    After a good build, every stage of the closure gets its key remembered and its damage
    forgotten.

The model knows only what this file generates: deterministic stages without processors,
callbacks, overrides, failures or kills (other tests cover those).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = "fuzz"
SOURCE_GLOBS = ("Workflowfile", "stages/*.py", "data/*.txt")
FILE_INPUT_CHOICES = ("data/a.txt", "data/b.txt", "data/*.txt")
WORDS = ("alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa")


class Rng(Protocol):
    """What we draw from: `random.Random` or hypothesis's `st.randoms()` both fit."""

    def random(self) -> float: ...
    def randint(self, a: int, b: int) -> int: ...
    def choice(self, seq: Any) -> Any: ...
    def sample(self, population: Any, k: int) -> list[Any]: ...


# ----------------------------------------------------------------------------- stage code

# Every stage's code file is self-contained (so an edit changes one stage's code only): a
# header with the stage's constants, then one of the bodies below. Outputs depend only on K,
# the params, the seed rows, the upstream outputs and the file inputs' content.
_COMMON = '''
import hashlib
from pathlib import Path

M = 1_000_003
LOG = Path(__file__).resolve().parents[1] / "calls.log"


def _log(stage, what):
    with open(LOG, "a") as fh:
        fh.write(f"{stage} {what}\\n")


def _files_total(value):
    paths = value if isinstance(value, list) else [value]
    total = 0
    for p in sorted(paths, key=lambda x: Path(x).name):
        total = (total * 31 + int(hashlib.sha256(Path(p).read_bytes()).hexdigest()[:8], 16)) % M
    return total


def _folder_total(folder):
    import pyarrow.parquet as pq

    total = 0
    for f in sorted(Path(folder).glob("*.parquet")):
        for v in pq.read_table(f).column("v").to_pylist():
            total = (total * 7 + v) % M
    return total
'''

_GENERATE = '''

def make(ctx):
    _log(ctx.stage_name, ctx.batch_index)
    extra = 0
    for key in sorted(ctx.inputs):  # stage inputs (the seed too) are folders; files by path
        value = ctx.inputs[key]
        extra += _files_total(value) if key.startswith("data/") else _folder_total(value)
    rows = []
    for i in range(ctx.size):
        v = ((ctx.offset + i) * K + ctx.params["p"] + extra) % M
        if USE_RNG:
            v = (v + ctx.rng.randint(0, 999)) % M
        if ctx.seed_rows is not None:
            v = (v + 3 * ctx.seed_rows.column("v")[i].as_py()) % M
        rows.append({"id": ctx.offset + i, "v": v})
    return rows
'''

_TRANSFORM = '''

def make(ctx):
    _log(ctx.stage_name, "all")
    extra = 0
    tables = []
    for key in sorted(ctx.inputs):
        value = ctx.inputs[key]
        if key.startswith("data/"):
            extra += _files_total(value)
        else:
            tables.append(value)
    p = ctx.params["p"]
    if MODE == "count":  # blind to upstream values: a place for early cutoff
        n = sum(t.num_rows for t in tables)
        return {"id": [0], "v": [(n * K + p + extra) % M]}
    first = tables[0].column("v").to_pylist()
    add = sum(sum(t.column("v").to_pylist()) for t in tables[1:]) % M
    return {"id": list(range(len(first))), "v": [(x * K + add + p + extra) % M for x in first]}
'''

_RUN = '''

import json
import sys


def main():
    _log(STAGE, "all")
    k = int(sys.argv[1])
    out = Path(sys.argv[2])
    total = 0
    for arg in sys.argv[3:]:
        path = Path(arg)
        part = _folder_total(path) if path.is_dir() else _files_total(str(path))
        total = (total * 13 + part) % M
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"total": (total * K + k) % M}) + "\\n")


main()
'''


# ----------------------------------------------------------------------------- workflows


@dataclass
class StageGen:
    """One generated stage: what goes in its Workflowfile entry and in its code file."""

    name: str
    kind: str  # generate | transform | run
    params: dict[str, int]
    const: int  # K in its code file: changing it changes the output
    comment: str  # first line of its code file: changing it changes no output
    num_records: int | None = None
    batch_size: int = 1
    seed: str | None = None
    sampling: str = "ordered"
    stage_inputs: list[str] = field(default_factory=list)  # stage inputs other than the seed
    file_inputs: list[str] = field(default_factory=list)
    use_rng: bool = False
    mode: str = "map"  # transform: map | count
    description: str = ""
    retries: int = 0
    module_ref: bool = False  # `stages.sN:make` (imported) instead of `stages/sN.py:make`

    @property
    def code_path(self) -> str:
        return f"stages/{self.name}.py"

    @property
    def output_path(self) -> str:
        return f"out/{self.name}.jsonl"

    @property
    def upstreams(self) -> list[str]:
        return ([self.seed] if self.seed else []) + self.stage_inputs

    def entry(self) -> dict[str, Any]:
        """The stage's Workflowfile entry."""
        d: dict[str, Any] = {}
        if self.description:
            d["description"] = self.description
        if self.kind == "run":
            d["run"] = (f"{shlex.quote(sys.executable)} {self.code_path} {{params.k}} "
                        "{outputs} {inputs}")
            d["code"] = [self.code_path]
            d["outputs"] = [self.output_path]
        else:
            d[self.kind] = f"stages.{self.name}:make" if self.module_ref else \
                f"{self.code_path}:make"
        if self.kind == "generate":
            if self.num_records is not None:
                d["num_records"] = self.num_records
            d["batch_size"] = self.batch_size
            if self.seed:
                d["seed"] = self.seed
                if self.sampling != "ordered":
                    d["sampling"] = self.sampling
            if self.retries:
                d["retries"] = self.retries
        inputs = self.stage_inputs + self.file_inputs
        if inputs:
            d["inputs"] = inputs
        d["params"] = dict(self.params)
        return d

    def spec_key(self) -> str:
        """What the model counts as the stage's spec: its entry minus the unfingerprinted keys."""
        d = {k: v for k, v in self.entry().items() if k not in ("description", "retries")}
        return json.dumps(d, sort_keys=True)

    def code_text(self) -> str:
        header = (f"# {self.comment}\n\"\"\"Stage {self.name} ({self.kind}), generated by "
                  f"tests/fuzz_support.py.\"\"\"\nSTAGE = {self.name!r}\nK = {self.const}\n"
                  f"USE_RNG = {self.use_rng}\nMODE = {self.mode!r}\n")
        body = {"generate": _GENERATE, "transform": _TRANSFORM, "run": _RUN}[self.kind]
        return header + _COMMON + body

    def describe(self) -> str:
        bits = [f"{self.name}: {self.kind}"]
        if self.kind == "generate":
            bits.append(f"num_records={self.num_records} batch_size={self.batch_size}")
            if self.seed:
                bits.append(f"seed={self.seed}" + (" shuffle" if self.sampling == "shuffle" else ""))
        if self.stage_inputs or self.file_inputs:
            bits.append(f"inputs={self.stage_inputs + self.file_inputs}")
        bits.append(f"params={self.params} K={self.const}")
        if self.use_rng:
            bits.append("rng")
        if self.module_ref:
            bits.append("module-ref")
        if self.kind == "transform":
            bits.append(f"mode={self.mode}")
        return " ".join(bits)


@dataclass
class WorkflowGen:
    stages: list[StageGen]
    data: dict[str, str]  # data/x.txt -> content

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def stage(self, name: str) -> StageGen:
        return next(s for s in self.stages if s.name == name)

    def workflowfile_text(self) -> str:
        doc = {"workflow": WORKFLOW, "stages": {s.name: s.entry() for s in self.stages}}
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=200)

    def write_all(self, root: Path) -> None:
        self.write_workflowfile(root)
        for s in self.stages:
            self.write_code(root, s)
        for rel in self.data:
            self.write_data(root, rel)

    def write_workflowfile(self, root: Path) -> None:
        _write(root / "Workflowfile", self.workflowfile_text())

    def write_code(self, root: Path, stage: StageGen) -> None:
        _write(root / stage.code_path, stage.code_text())

    def write_data(self, root: Path, rel: str) -> None:
        _write(root / rel, self.data[rel])

    def closure(self, targets: Iterable[str]) -> list[str]:
        """Targets and their ancestors, in declaration order (which is topological here)."""
        targets = list(targets)
        if not targets:
            return self.names
        needed = set(targets)
        for s in reversed(self.stages):
            if s.name in needed:
                needed.update(s.upstreams)
        return [n for n in self.names if n in needed]

    def descendants(self, name: str) -> set[str]:
        found = {name}
        for s in self.stages:
            if any(u in found for u in s.upstreams):
                found.add(s.name)
        return found

    def describe(self) -> str:
        return "\n".join("  " + s.describe() for s in self.stages)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def random_workflow(rng: Rng) -> WorkflowGen:
    """2-6 stages in a random DAG: generate stages (seeded from an earlier stage or not, with
    optional stage and file inputs), transforms over 1-2 earlier stages, and optionally a last
    `run` stage. Callables are `stages/sN.py:make` or, for some, `stages.sN:make`."""
    n = rng.randint(2, 6)
    stages: list[StageGen] = []
    for i in range(n):
        name = f"s{i + 1}"
        tabular = [s.name for s in stages]  # a run stage is only ever last: all earlier are tables
        files = [rng.choice(FILE_INPUT_CHOICES)] if rng.random() < 0.35 else []
        common = dict(name=name, const=rng.randint(1, 97), comment=f"{name} v0",
                      file_inputs=files)
        if not tabular:
            kind = "generate"
        elif i == n - 1 and rng.random() < 0.35:
            kind = "run"
        else:
            kind = rng.choice(("generate", "generate", "transform"))
        if kind == "run":
            stage = StageGen(kind="run", params={"k": rng.randint(0, 9)},
                             stage_inputs=[rng.choice(tabular)], **common)
        elif kind == "transform":
            ups = rng.sample(tabular, min(len(tabular), rng.randint(1, 2)))
            stage = StageGen(kind="transform", params=_params(rng), stage_inputs=ups,
                             mode=rng.choice(("map", "map", "count")), **common)
        else:
            stage = StageGen(kind="generate", params=_params(rng), use_rng=rng.random() < 0.4,
                             num_records=rng.randint(1, 9), batch_size=rng.randint(1, 4),
                             **common)
            if tabular and rng.random() < 0.55:
                stage.seed = rng.choice(tabular)
                if rng.random() < 0.3:
                    stage.num_records = None  # as many as the seed has rows
                if rng.random() < 0.2:
                    stage.sampling = "shuffle"
            others = [t for t in tabular if t != stage.seed]
            if others and rng.random() < 0.2:
                stage.stage_inputs = [rng.choice(others)]
        if kind != "run":
            stage.module_ref = rng.random() < 0.3
        stages.append(stage)
    data = {"data/a.txt": _text(rng), "data/b.txt": _text(rng)}
    return WorkflowGen(stages, data)


def _params(rng: Rng) -> dict[str, int]:
    return {"p": rng.randint(0, 99), "q": rng.randint(0, 99)}  # code reads p; q is unused


def _text(rng: Rng) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) + "\n"


# ----------------------------------------------------------------------------- reading outputs


@dataclass(frozen=True)
class Selected:
    """A stage's selected output as its record names it."""

    status: str
    identity: tuple[str, ...]  # sha256 of each output file's bytes, in order
    content: tuple[Any, ...]  # ("table", schema, rows) or ("bytes", file contents)


def read_selected(root: Path, stage: str) -> Selected | str:
    """The selected output of `stage` in the project at `root`, or why it cannot be read."""
    art = root / "artifacts" / WORKFLOW
    path = art / stage / "stage.json"
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return f"no readable record ({exc})"
    out = rec.get("output")
    if rec.get("status") not in ("completed", "completed_empty") or not out:
        return f"record status {rec.get('status')!r}, output {out!r}"
    if out["kind"] == "batches":
        files = [art / b["file"] for b in sorted(rec["batches"], key=lambda b: b["index"])]
    else:
        files = [root / f["path"] for f in out["files"]]
    try:
        blobs = [f.read_bytes() for f in files]
    except OSError as exc:
        return f"an output file of the record cannot be read: {exc}"
    identity = tuple(hashlib.sha256(b).hexdigest() for b in blobs)
    if out["kind"] == "files":
        return Selected(rec["status"], identity, ("bytes", tuple(blobs)))
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        tables = [pq.read_table(pa.BufferReader(b)) for b in blobs]
    except (OSError, pa.ArrowException) as exc:
        return f"an output file of the record is not readable parquet: {exc}"
    return Selected(rec["status"], identity, table_content(pa.concat_tables(tables)))


def table_content(table: Any) -> tuple[Any, ...]:
    schema = tuple((f.name, str(f.type)) for f in table.schema)
    return ("table", schema, tuple(tuple(sorted(r.items())) for r in table.to_pylist()))


def show_content(content: tuple[Any, ...], limit: int = 6) -> str:
    if content[0] == "bytes":
        return " | ".join(b.decode("utf-8", "replace").strip() for b in content[1])
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
    code loads the way it does for users."""
    env = dict(os.environ)
    for name in ("HANG_AT", "FAIL_AT", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
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


# ----------------------------------------------------------------------------- from scratch


@dataclass
class Reference:
    """Every stage's output in a from-scratch build of one set of project files."""

    outputs: dict[str, Selected]
    error: str | None = None


class _Pending:
    def __init__(self, refs: ReferenceBuilds, key: str, folder: Path,
                 proc: subprocess.Popen[str] | None, done: Reference | None) -> None:
        self.refs, self.key, self.folder, self.proc, self.done = refs, key, folder, proc, done

    def result(self, names: list[str]) -> Reference:
        if self.done is not None:
            return self.done
        assert self.proc is not None
        _, err = self.proc.communicate(timeout=300)
        if self.proc.returncode != 0:
            ref = Reference({}, f"from-scratch build exited {self.proc.returncode}: {err[-2000:]}")
        else:
            outputs: dict[str, Selected] = {}
            problems = []
            for name in names:
                got = read_selected(self.folder, name)
                if isinstance(got, str):
                    problems.append(f"{name}: {got}")
                else:
                    outputs[name] = got
            ref = Reference(outputs, "; ".join(problems) or None)
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

    def start(self, project: Path) -> _Pending:
        """Start the from-scratch build of `project`'s current sources (or find it cached)."""
        key = source_hash(project)
        if key in self.cache:
            self.hits += 1
            self.cache.move_to_end(key)
            return _Pending(self, key, project, None, self.cache[key])
        self.builds += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="scratch-", dir=self.workdir))
        for rel in source_files(project):
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(project / rel, folder / rel)
        proc = subprocess.Popen(cli_command("-q"), cwd=folder, env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return _Pending(self, key, folder, proc, None)


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
class Model:
    """Per stage: the key of its last completed build, and the damage done to it since."""

    built: dict[str, tuple[Any, ...]] = field(default_factory=dict)
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
    # What the builds exercised: stage runs, resumes (kept batches), early cutoffs (a stage
    # left alone although an upstream ran in the same build), forced stages.
    seen: Counter[str] = field(default_factory=Counter)

    def report(self) -> str:
        lines = ["dd-build correctness property violated"]
        if self.seed is not None:
            lines.append(f"replay: python benchmarks/fuzz_correctness.py --examples 1 "
                         f"--seed {self.seed}")
        lines += ["", "initial workflow:", self.workflow, "",
                  "sequence (edits and builds, in order):"]
        lines += ["  " + t for t in self.transcript]
        lines += ["", "Workflowfile now:", self.final_workflowfile, "violations:"]
        lines += ["  " + str(v) for v in self.violations]
        return "\n".join(lines)


def file_input_states(root: Path, stage: StageGen) -> tuple[tuple[str, str], ...]:
    paths: set[str] = set()
    for pattern in stage.file_inputs:
        paths.update(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
    return tuple((p, _sha(root / p)) for p in sorted(paths))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Sequence:
    """One example: a random workflow, then rounds of random edits each followed by a build."""

    def __init__(self, rng: Rng, root: Path, refs: ReferenceBuilds, rounds: int = 5,
                 check_export: bool = True) -> None:
        self.rng = rng
        self.root = root
        self.refs = refs
        self.rounds = rounds
        self.check_export = check_export
        self.model = Model()
        self.transcript: list[str] = []
        self.violations: list[Violation] = []
        self.builds = 0
        self.edits = 0
        self.last_closure: list[str] = []
        self.seen: Counter[str] = Counter()
        self.last_reference: Reference | None = None
        self.wf = random_workflow(rng)

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
        `--rerun-from S` (S in the closure), 5% `--resume never`."""
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
        pending = self.refs.start(self.root)
        (self.root / "calls.log").unlink(missing_ok=True)
        proc = run_cli(self.root, "build", "--json", *args)
        calls = self._calls()
        ref = pending.result(self.wf.names)
        summary = self._summary(proc.stdout)
        self._count(proc.stdout, closure, forced, calls)
        ran = {s: sorted(c, key=str) for s, c in self._by_stage(calls).items()}
        self.transcript.append(f"build #{n}: dd-build {' '.join(args)} -> exit {proc.returncode}; "
                               f"called {ran or 'nothing'}")
        self.transcript += ["    " + line for line in summary]
        found: list[Violation] = []
        if proc.returncode != 0:
            found.append(Violation("error", n, None, f"exit {proc.returncode}: "
                                   f"{proc.stderr.strip()[-2000:]}"))
        if ref.error:
            found.append(Violation("error", n, None, f"from-scratch build: {ref.error}"))
        selected: dict[str, Selected] = {}
        for name in closure:
            got = read_selected(self.root, name)
            if isinstance(got, str):
                found.append(Violation("stale", n, name, f"no selected output: {got}"))
                continue
            selected[name] = got
            want = ref.outputs.get(name)
            if want is not None and got.content != want.content:
                found.append(Violation("stale", n, name, "selected output differs from a "
                                       f"from-scratch build: {diff_content(got.content, want.content)}"))
        found += self._wasteful(n, closure, forced, calls, selected)
        self.violations += found
        if found:
            return False
        for name in closure:
            self.model.built[name] = self._key(name, selected)
            self.model.damaged.pop(name, None)
        self.last_closure = closure
        self.last_reference = ref
        return True

    def _key(self, name: str, selected: dict[str, Selected]) -> tuple[Any, ...]:
        stage = self.wf.stage(name)
        return (stage.spec_key(), _sha(self.root / stage.code_path),
                file_input_states(self.root, stage),
                tuple((u, selected[u].identity) for u in stage.upstreams))

    def _wasteful(self, n: int, closure: list[str], forced: set[str],
                  calls: list[tuple[str, str]], selected: dict[str, Selected]) -> list[Violation]:
        found = []
        for (stage, what), count in Counter(calls).items():
            if count > 1:
                found.append(Violation("wasteful", n, stage, f"called {count} times for batch "
                                       f"{what} in one build"))
        for stage, whats in self._by_stage(calls).items():
            if stage not in closure:
                found.append(Violation("wasteful", n, stage, f"called ({sorted(whats, key=str)}) "
                                       f"but not in the build's closure {closure}"))
                continue
            if stage in forced or stage not in self.model.built:
                continue
            if not all(u in selected for u in self.wf.stage(stage).upstreams):
                continue  # already reported stale
            if self._key(stage, selected) != self.model.built[stage]:
                continue
            damaged = self.model.damaged.get(stage, set())
            if damaged and (self.wf.stage(stage).kind != "generate" or "all" in damaged):
                continue
            extra = sorted(set(whats) - damaged, key=str)
            if extra:
                why = (f"only damaged batches {sorted(damaged, key=str)} may rerun" if damaged else
                       "its spec, code and inputs are unchanged since its last completed build, "
                       "its outputs are intact and it was not forced")
                found.append(Violation("wasteful", n, stage, f"called for {extra}: {why}"))
        return found

    def _calls(self) -> list[tuple[str, str]]:
        log = self.root / "calls.log"
        lines = log.read_text().splitlines() if log.exists() else []
        out = []
        for line in lines:
            stage, _, what = line.partition(" ")
            out.append((stage, what))
        return out

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
        self.seen["early cutoffs"] += sum(
            1 for name in closure if name not in called and
            any(u in called for u in self.wf.stage(name).upstreams))
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
        tables = [n for n in self.last_closure if self.wf.stage(n).kind != "run"]
        if not tables:
            return
        name = self.rng.choice(tables)
        target = self.root / "exported.parquet"
        proc = run_cli(self.root, "export", name, str(target))
        self.transcript.append(f"dd-build export {name} exported.parquet -> exit {proc.returncode}")
        want = self.last_reference.outputs.get(name)
        if proc.returncode != 0:
            self.violations.append(Violation("error", self.builds, name,
                                             f"export failed: {proc.stderr.strip()}"))
            return
        import pyarrow.parquet as pq

        got = table_content(pq.read_table(target))
        if want is not None and got != want.content:
            self.violations.append(Violation("stale", self.builds, name, "export differs from a "
                                             f"from-scratch build: {diff_content(got, want.content)}"))

    # -- edits

    def edit(self) -> None:
        kinds = ["param", "param", "spec", "code_const", "code_const", "code_comment",
                 "unfingerprinted", "file_edit", "file_add", "file_delete", "touch",
                 "batch_delete",
                 "batch_garbage", "batch_parquet", "batch_parquet", "batch_touch"]
        if any(s.kind == "run" for s in self.wf.stages):
            kinds.append("run_output")
        if self.rng.random() < 0.3:
            kinds.append("clean")
        for _ in range(10):  # an edit that has nothing to act on yet draws again
            text = getattr(self, "_edit_" + self.rng.choice(kinds))()
            if text:
                self.edits += 1
                self.transcript.append("edit: " + text)
                return

    def _pick(self, kinds: tuple[str, ...] = ("generate", "transform", "run")) -> StageGen | None:
        stages = [s for s in self.wf.stages if s.kind in kinds]
        return self.rng.choice(stages) if stages else None

    def _edit_param(self) -> str | None:
        s = self._pick()
        assert s is not None
        key = "k" if s.kind == "run" else self.rng.choice(("p", "p", "q"))
        old = s.params[key]
        s.params[key] = (old + self.rng.randint(1, 9)) % 100
        self.wf.write_workflowfile(self.root)
        return f"{s.name}: params.{key} {old} -> {s.params[key]}"

    def _edit_spec(self) -> str | None:
        s = self._pick(("generate",))
        assert s is not None
        choice = self.rng.choice(("num_records", "batch_size", "sampling"))
        if choice == "sampling" and s.seed:
            old: Any = s.sampling
            s.sampling = "shuffle" if old == "ordered" else "ordered"
            new: Any = s.sampling
        elif choice == "batch_size":
            old, s.batch_size = s.batch_size, self.rng.randint(1, 4)
            new = s.batch_size
        else:
            old = s.num_records
            options = [n for n in range(1, 10) if n != old]
            s.num_records = None if s.seed and old is not None and self.rng.random() < 0.3 \
                else self.rng.choice(options)
            new = s.num_records
            choice = "num_records"
        self.wf.write_workflowfile(self.root)
        return f"{s.name}: {choice} {old} -> {new}"

    def _edit_code_const(self) -> str | None:
        s = self._pick()
        assert s is not None
        old = s.const
        same_size = self.rng.random() < 0.5
        s.const = self.rng.choice([k for k in range(1, 98) if k != old and
                                   (not same_size or len(str(k)) == len(str(old)))])
        fast = self._maybe_fast(self.root / s.code_path, lambda: self.wf.write_code(self.root, s))
        return f"{s.name}: code constant K {old} -> {s.const} in {s.code_path}{fast}"

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

    def _edit_unfingerprinted(self) -> str | None:
        s = self._pick()
        assert s is not None
        if s.kind == "generate" and self.rng.random() < 0.5:
            s.retries = (s.retries + 1) % 3
            what = f"retries: {s.retries}"
        else:
            s.description = self.rng.choice(WORDS) + f" {self.rng.randint(0, 99)}"
            what = f"description: {s.description!r}"
        self.wf.write_workflowfile(self.root)
        return f"{s.name}: {what} (not part of the fingerprint)"

    def _edit_file_edit(self) -> str | None:
        rel = self.rng.choice(sorted(self.wf.data))
        old = self.wf.data[rel]
        if self.rng.random() < 0.4:  # the same size: only the content digest can tell
            self.wf.data[rel] = "".join(self.rng.choice("xyz") for _ in old[:-1]) + "\n"
        else:
            self.wf.data[rel] = _text(self.rng) + f"{self.rng.randint(0, 10**6)}\n"
        fast = self._maybe_fast(self.root / rel, lambda: self.wf.write_data(self.root, rel))
        return f"{rel} content {old!r} -> {self.wf.data[rel]!r}{fast}"

    def _edit_file_add(self) -> str | None:
        rel = f"data/c{len(self.wf.data)}.txt"
        self.wf.data[rel] = _text(self.rng)
        self.wf.write_data(self.root, rel)
        return f"new file {rel} ({self.wf.data[rel]!r}): matches data/*.txt"

    def _edit_file_delete(self) -> str | None:
        """Delete a file added earlier (data/a.txt and data/b.txt stay: stages name them)."""
        added = sorted(rel for rel in self.wf.data if rel not in FILE_INPUT_CHOICES)
        if not added:
            return None
        rel = self.rng.choice(added)
        del self.wf.data[rel]
        (self.root / rel).unlink()
        return f"delete {rel}: data/*.txt matches one file less"

    def _edit_touch(self) -> str | None:
        rels = sorted(self.wf.data) + [s.code_path for s in self.wf.stages]
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
            try:
                rec = json.loads((self.root / "artifacts" / WORKFLOW / s.name / "stage.json")
                                 .read_text())
            except (OSError, ValueError):
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
                table = pa.table({"id": [0], "v": [0]})
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
        s = self._pick(("run",))
        if s is None or not (self.root / s.output_path).is_file():
            return None
        path = self.root / s.output_path
        if self.rng.random() < 0.5:
            path.unlink()
            what = "delete"
        else:
            path.write_text('{"total": -1}\n')
            what = "overwrite"
        self._damage(s, "all")
        return f"{s.name}: {what} its output {s.output_path}"


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    later = max(time.time_ns(), st.st_mtime_ns) + 1_000_000_000
    os.utime(path, ns=(later, later))


def _sub_rng(rng: Rng) -> Any:
    import random

    return random.Random(rng.randint(0, 2**32))


def run_sequence(rng: Rng, root: Path, refs: ReferenceBuilds, rounds: int = 5,
                 check_export: bool = True) -> SequenceResult:
    return Sequence(rng, root, refs, rounds, check_export).run()


def run_seed(seed: int, root: Path, refs: ReferenceBuilds, rounds: int = 5,
             check_export: bool = True) -> SequenceResult:
    """The example of one seed: the same in the tests and in the benchmark."""
    import random

    result = run_sequence(random.Random(seed), root, refs, rounds, check_export)
    result.seed = seed
    return result
