"""The random workflows of the correctness fuzzer (tests/fuzz_support.py): stages, code, files.

A workflow is 2-6 deterministic stages in a random DAG, declared in a random order (not always
a topological one). Each stage has its own code file, whose output depends only on what the
stage declares, so a from-scratch build is the oracle. The hard edges (issue 7) are all here,
each shown in the output data so that a stale output differs from a from-scratch build's:

* params of every YAML type (`t`, and `nest.deep.x` in a nested mapping): ints, floats (1.0,
  -0.0), bools, null, strings that look like numbers or bools (`"1"`, `"yes"`, `"~"`), lists,
  mappings. Stage code writes `repr()` of them into its rows, so `1` → `1.0` → `true` shows;
* stage code that mutates `ctx.params["nest"]` (each batch appends its index);
* helper modules the stage code imports (`from helpers.text import word`, which imports
  `helpers.base`; `from helpers.lazy import KL` inside the function), whose constants go
  into the rows;
* `run` stages anywhere in the DAG, with a file or a folder output (as many part files as
  `params.n`), whose command writes nothing when `params.w` is 0;
* `on_success` callbacks (three, in two files: stages/callbacks.py and callbacks_b.py, so a
  switch may change the stage's code files; `cb_keep` returns None), `processors`, export
  copies;
* the later steps of the step model (issue 8), with `Mix.steps`: `on_success_version`,
  `allow_empty`, one or two export copies, and a processor that can empty a stage
  (`EMPTYING`: a stage of at most three rows, e.g. a count transform, has none left), so a
  stage is `completed_empty` or fails, and its dependants are skipped;
* `retries` with a flaky first attempt in each build (marker files under `flaky/`, absent
  from from-scratch builds, so those are untroubled) that draws from `ctx.rng` before it raises;
* where batches run (not part of the fingerprint, so outputs must not change): a generate
  stage's `concurrency:` (batches in flight) and `executor: thread|process` (`draw_where`,
  drawn by the sequence from a generator of its own, see fuzz_support.Sequence);
* cross touches: an `inputs:` / `seed:` / `code:` glob or path that matches another stage's
  outputs (run outputs, export copies, files inside a run stage's output folder). A source
  "note" file beside each output makes every glob match something at load.
* renames (issue 11, the reverts focus): a stage renamed back and forth keeps its code file,
  outputs and export copies (`StageGen.files_as`); some stages' rows say `ctx.stage_name`
  (`named`), and cb_a's rows do too, so a rename restored from a build under the old name
  shows. Stage code logs by the name its files go by (STAGE), never reading its name.

The `Mix` says how often each appears: `FOCUS` holds one per class (the plain generator of
before issue 7 with that class raised), "plain" (none) and "mixed" (a little of each).
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import yaml

WORKFLOW = "fuzz"
FILE_INPUT_CHOICES = ("data/a.txt", "data/b.txt", "data/*.txt")
WORDS = ("alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa")
# Two files of callbacks: switching between cb_a and cb_b changes the stage's code files too.
CALLBACK_FILES = {"cb_a": "stages/callbacks.py", "cb_keep": "stages/callbacks.py",
                  "cb_b": "stages/callbacks_b.py"}
CALLBACKS = tuple(CALLBACK_FILES)
CALLBACK_CONSTS = {"stages/callbacks.py": "CA", "stages/callbacks_b.py": "CB"}
HELPER_FILES = {"text": ("helpers/text.py", "helpers/base.py"), "lazy": ("helpers/lazy.py",)}
HELPER_CONSTS = {"helpers/base.py": "KB", "helpers/text.py": "KT", "helpers/lazy.py": "KL"}
PROCESSOR_CHOICES: tuple[dict[str, Any], ...] = (
    {"filter": "id % 3 != 1"}, {"filter": "id % 2 == 0 or v > 500000"}, {"limit": 2},
    {"limit": 5}, {"dedupe": ["t"]}, {"dedupe": ["v"]})
# Every row has an id and id 0 always stays (rows are in id order, filters and dedupes keep
# it): only this processor can leave a stage with no rows.
EMPTYING: dict[str, Any] = {"filter": "id >= 3"}
CALLBACK_VERSIONS = ("v1", "v2", "2024-06")
EXPORT_FORMATS = ("jsonl", "csv", "parquet")
# The keys of each later step (buildtool/keys.py); every other fingerprinted key is the
# main step's.
STEP_KEYS: dict[str, tuple[str, ...]] = {
    "processors": ("processors",), "on_success": ("on_success", "on_success_version"),
    "allow_empty": ("allow_empty",), "outputs": ("outputs",)}
# Where sources live beside outputs: what a from-scratch build copies (see fuzz_support).
SOURCE_GLOBS = ("Workflowfile", "stages/*.py", "helpers/*.py", "data/*.txt",
                "reports/*-note.txt", "reports/*-notes/*.txt", "exports/*-note.*")

# Values that compare equal in Python (or look alike in YAML) but differ in type: an edit
# within one class is a type-only edit. Each appears bare, in a list or in a mapping.
TYPE_CLASSES: tuple[tuple[Any, ...], ...] = (
    (1, 1.0, True, "1", "1.0", "true"),
    (0, 0.0, -0.0, False, "0", "false"),
    (None, "null", "~", "", "None"),
    (2.5, "2.5", "2.50"),
    (12345678901234567890, 1.2345678901234567e19, "12345678901234567890"),
    ("yes", "on", "y", "Yes"),
    (10, 10.0, "0x0a", "1_0", "10"),
)
SHAPES = ("bare", "bare", "list", "map", "deep")
# Spec keys outside the fingerprint: an edit of one of them alone must run nothing.
WHERE_KEYS = ("concurrency", "executor")
UNFINGERPRINTED = ("description", "retries", *WHERE_KEYS)


class Rng(Protocol):
    """What we draw from: `random.Random` or hypothesis's `st.randoms()` both fit."""

    def random(self) -> float: ...
    def randint(self, a: int, b: int) -> int: ...
    def choice(self, seq: Any) -> Any: ...
    def sample(self, population: Any, k: int) -> list[Any]: ...
    def shuffle(self, x: Any) -> None: ...


@dataclass(frozen=True)
class Typed:
    """A typed value: TYPE_CLASSES[cls][member], in a shape."""

    cls: int
    member: int
    shape: str

    @property
    def value(self) -> Any:
        x = TYPE_CLASSES[self.cls][self.member]
        return {"bare": x, "list": [x], "map": {"a": x}, "deep": {"a": [x, "b"]}}[self.shape]

    def describe(self) -> str:
        return json.dumps(self.value) if not isinstance(self.value, str) else repr(self.value)


def random_typed(rng: Rng) -> Typed:
    cls = rng.randint(0, len(TYPE_CLASSES) - 1)
    return Typed(cls, rng.randint(0, len(TYPE_CLASSES[cls]) - 1), rng.choice(SHAPES))


def type_edit(rng: Rng, old: Typed) -> Typed:
    """Mostly a type-only edit (another member of the same class, same shape); sometimes a
    new class or shape."""
    if rng.random() < 0.75:
        values = TYPE_CLASSES[old.cls]
        members = [m for m in range(len(values)) if m != old.member]
        equal = [m for m in members if values[m] == values[old.member]]  # 1 == 1.0 == True
        return replace(old, member=rng.choice(equal if equal and rng.random() < 0.8
                                              else members))
    new = random_typed(rng)
    return new if new != old else replace(new, shape="list" if new.shape != "list" else "map")


@dataclass(frozen=True)
class Mix:
    """How often each hard edge appears: probabilities at generation, weights among edits."""

    stages: tuple[int, int] = (2, 6)
    run: float = 0.25  # a stage after the first is a run stage
    folder: float = 0.5  # a run stage's output is a folder of part files
    nested: float = 0.4  # generate/transform params carry `nest`
    mutate: float = 0.3  # ... and the code of a generate stage with `nest` mutates it
    helpers: float = 0.3  # stage code imports helper modules
    callback: float = 0.25
    processors: float = 0.2
    exports: float = 0.3
    retries: float = 0.1  # a generate stage with retries and a flaky first attempt
    cross: float = 0.1  # a stage touches another stage's outputs through a glob or path
    # Issue 8's step-level edges: with `steps`, the step edits are widened (callback
    # versions, allow_empty, two export copies, processors that may empty a stage).
    steps: bool = True
    dry_plans: bool = False  # before a build, also check `dd-build -n --json`'s first steps
    allow_empty: float = 0.1  # a tabular stage sets allow_empty
    empty: float = 0.1  # a tabular stage gets the EMPTYING processor
    named: float = 0.0  # a tabular stage's rows say its name (drawn only when above 0)
    edits: tuple[tuple[str, float], ...] = (
        ("param", 2), ("param_type", 2), ("spec", 1), ("code_const", 2), ("code_comment", 1),
        ("unfingerprinted", 1), ("file_edit", 1), ("file_add", 1), ("file_delete", 1),
        ("touch", 1), ("batch_delete", 1), ("batch_garbage", 1), ("batch_parquet", 2),
        ("batch_touch", 1), ("run_output", 1), ("run_parts", 1), ("run_write", 0.5),
        ("helper", 1), ("callback", 1), ("callback_code", 0.5), ("callback_output", 0.5),
        ("processors", 1), ("exports", 0.5), ("cross_add", 0.3), ("clean", 0.3),
        ("callback_version", 0.3), ("allow_empty", 0.4), ("step_output", 0.4),
        ("override", 0.4), ("release", 0.3), ("override_lost", 0.05), ("held_own", 0.4),
        ("held_upstream", 0.3))


# `revert` and `grow` (issue 11) are drawn by their focuses only: the other focuses (and their
# seeds in the tests) draw what they drew.
_ALL_EDITS = {**dict(Mix().edits), "revert": 0.0, "grow": 1.0, "rename": 0.0}
# The generator before issue 7: none of its hard edges, only the edits it already had.
PLAIN = Mix(folder=0.0, nested=0.0, mutate=0.0, helpers=0.0, callback=0.0, processors=0.0,
            exports=0.0, retries=0.0, cross=0.0, steps=False, allow_empty=0.0, empty=0.0,
            edits=tuple(
                (k, w) for k, w in _ALL_EDITS.items() if k in (
                    "param", "spec", "code_const", "code_comment", "unfingerprinted",
                    "file_edit", "file_add", "file_delete", "touch", "batch_delete",
                    "batch_garbage", "batch_parquet", "batch_touch", "run_output", "clean")))


def _focus(edits: dict[str, float], plain: float = 0.5, **fields: Any) -> Mix:
    """PLAIN with one hard edge raised: its generation probabilities and its edits (PLAIN's
    edits weigh `plain` times as much as there)."""
    assert set(edits) <= set(_ALL_EDITS), set(edits) - set(_ALL_EDITS)
    weights = {k: w * plain for k, w in PLAIN.edits}
    return replace(PLAIN, edits=tuple({**weights, **edits}.items()), **fields)


# Each hard-edge class of issue 7 alone (on the plain generator), issue 8's step-level edits
# and overrides, and all of them mixed: `--focus NAME` in the benchmark, CI tests of each.
# The classes of issue 7 draw exactly what they drew before issue 8 (`steps` off), so their
# seeds replay the examples that found those bugs.
FOCUS: dict[str, Mix] = {
    "mixed": Mix(),
    "plain": PLAIN,
    "types": _focus({"param_type": 8}, plain=0.3, nested=1.0, run=0.15),
    "globs": _focus({"cross_add": 3, "exports": 1, "param": 3}, stages=(3, 6), run=0.45,
                    folder=0.5, exports=0.7, cross=0.6),
    "folders": _focus({"run_parts": 5, "run_write": 2, "run_output": 2}, run=0.6, folder=0.9),
    "callbacks": _focus({"callback": 5, "callback_code": 2, "processors": 3,
                         "callback_output": 1, "exports": 1},
                        callback=0.8, processors=0.6, exports=0.5),
    "retries": _focus({"unfingerprinted": 4, "batch_delete": 2}, retries=0.9, run=0.1),
    "helpers": _focus({"helper": 6}, helpers=0.9, run=0.15),
    "mutation": _focus({"batch_delete": 3, "batch_garbage": 2, "spec": 1.5},
                       nested=1.0, mutate=0.9, run=0.1),
    # Later steps added, switched, removed and damaged (processed files, callback outputs,
    # export copies): the stage keeps every batch and runs from the step that changed.
    "steps": _focus({"processors": 3, "callback": 3, "callback_code": 1.5,
                     "callback_version": 1, "allow_empty": 2, "exports": 2, "step_output": 2,
                     "callback_output": 1}, steps=True, callback=0.6, processors=0.5,
                    exports=0.6, allow_empty=0.3, empty=0.3, run=0.15, dry_plans=True),
    # Issue 11's growth: num_records grown and shrunk (a partial last batch regenerated or
    # trimmed), so upstreams that seed other stages grow too; only the new batches may run.
    "growth": _focus({"grow": 8, "batch_delete": 1, "param": 1}, plain=0.3, run=0.15,
                     retries=0.2, dry_plans=True),
    # Review overrides held through own and upstream edits, released, forced, lost.
    "overrides": _focus({"override": 5, "release": 3, "override_lost": 0.3, "held_own": 6,
                         "held_upstream": 2.5, "exports": 1, "step_output": 1},
                        plain=0.2,
                        steps=True, callback=0.4, processors=0.4, exports=0.6,
                        allow_empty=0.2, empty=0.1, run=0.15, dry_plans=True),
    # Issue 11: the Workflowfile and code go back to how an earlier build had them (params,
    # spec keys, code constants, callbacks, processors, export copies), also after `clean`:
    # each stage whose trace was built before is restored from the cache, running nothing.
    # Stages renamed (back and forth): one whose code reads nothing of its name or folder is
    # restored under its new name, one whose rows say its name (or with a callback, which
    # reads its folder) is built again.
    "reverts": _focus({"revert": 5, "param": 3, "code_const": 2, "spec": 1, "clean": 1,
                       "callback": 1, "processors": 1, "exports": 1, "rename": 2},
                      plain=0.3, steps=True, callback=0.4, processors=0.4, exports=0.5,
                      run=0.3, named=0.4),
}


# ----------------------------------------------------------------------------- stage code

# Every stage's code file is self-contained (an edit changes one stage's code only): a header
# with the stage's constants, then one of the bodies below. Outputs depend only on K, the
# params (their types too), the helpers, the seed rows, the inputs and the file inputs.
_COMMON = '''
import hashlib
from pathlib import Path

M = 1_000_003
ROOT = Path(__file__).resolve().parents[1]


def _log(stage, what):
    with open(ROOT / "calls.log", "a") as fh:
        fh.write(f"{stage} {what}\\n")


def _h(data):
    return int(hashlib.sha256(data).hexdigest()[:8], 16) % M


def _total(value):
    """An input as a number: a path or a list of paths; parquet by its rows, other files by
    name and bytes, a folder by every file in it (hidden temp files aside)."""
    import pyarrow.parquet as pq

    paths = value if isinstance(value, list) else [value]
    total = 0
    for p in sorted(Path(x).resolve() for x in paths):
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")) \\
            if p.is_dir() else [p]
        tables = [f for f in files if f.suffix == ".parquet"]
        if tables:
            part = _h(repr([r for f in tables for r in pq.read_table(f).to_pylist()]).encode())
        else:
            part = _h(b"".join(f.name.encode() + b"\\0" + f.read_bytes() for f in files))
        total = (total * 31 + part) % M
    return total
'''

_TABULAR = '''

def _flaky(ctx):
    """In the project under test only (from-scratch builds have no `flaky/`): the first
    attempt of each batch in a build draws from ctx.rng, then raises. The sequence clears
    the markers before each build (a retry may run in another worker process or on another
    Dask worker, and a Dask worker outlives the build)."""
    if not (ROOT / "flaky" / STAGE).exists():
        return
    marker = ROOT / "flaky" / f".{STAGE}-{ctx.batch_index}"
    if marker.exists():
        return
    marker.write_text("")
    ctx.rng.random()
    raise RuntimeError(f"flaky: the first attempt of batch {ctx.batch_index} fails")


def _mark(ctx, index):
    """What the rows show of the params (repr: the type shows) and of the helpers."""
    params = ctx.params
    if MUTATE:
        params["nest"]["seen"].append(index)
    bonus = _helped()
    mark = f"{params.get('t')!r}|{params.get('nest')!r}|{bonus}"
    if NAMED:  # the rows say the stage's name: a rename changes them
        mark += f"|{ctx.stage_name}"
    return mark, bonus
'''

_GENERATE = '''

def make(ctx):
    extra = 0
    for key in sorted(ctx.inputs):  # stage inputs and the seed by name, files by pattern
        extra = (extra * 31 + _total(ctx.inputs[key])) % M
    mark, bonus = _mark(ctx, ctx.batch_index)
    _flaky(ctx)  # a failed attempt is no call of its own: its retry is
    _log(STAGE, ctx.batch_index)
    rows = []
    for i in range(ctx.size):
        v = ((ctx.offset + i) * K + ctx.params["p"] + extra + bonus) % M
        if USE_RNG:
            v = (v + ctx.rng.randint(0, 999)) % M
        if ctx.seed_rows is not None:
            v = (v + 3 * ctx.seed_rows.column("v")[i].as_py()) % M
        rows.append({"id": ctx.offset + i, "v": v, "t": mark})
    return rows
'''

_TRANSFORM = '''

def make(ctx):
    _log(STAGE, "all")
    extra = 0
    tables = []
    for key in sorted(ctx.inputs):
        value = ctx.inputs[key]
        if isinstance(value, (str, list)):  # a file input: its path(s)
            extra = (extra * 31 + _total(value)) % M
        else:
            tables.append(value)
    mark, bonus = _mark(ctx, 0)
    p = ctx.params["p"]
    if MODE == "count":  # blind to upstream values: a place for early cutoff
        n = sum(t.num_rows for t in tables)
        return {"id": [0], "v": [(n * K + p + extra + bonus) % M], "t": [mark]}
    first = tables[0].column("v").to_pylist()
    add = sum(sum(t.column("v").to_pylist()) for t in tables[1:]) % M
    return {"id": list(range(len(first))),
            "v": [(x * K + add + p + extra + bonus) % M for x in first],
            "t": [mark] * len(first)}
'''

_RUN = '''

import json
import sys


def main():
    _log(STAGE, "all")
    k, t, n, w, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
    total = 0
    for arg in sys.argv[6:]:
        total = (total * 13 + _total(arg)) % M
    if w == "0":  # this command writes nothing, and exits 0
        return
    body = {"k": k, "t": t, "total": (total * K) % M}
    if FOLDER:
        out.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (out / f"part-{i}.txt").write_text(json.dumps({**body, "part": i}) + "\\n")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(body) + "\\n")


main()
'''


_CALLBACK_COMMON = _COMMON + '''

def _read(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
    return pa.concat_tables([pq.read_table(f) for f in files])


def _write(table, rows, path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
'''

_CALLBACK_BODIES = {"stages/callbacks.py": '''

def cb_a(ctx):
    """Rewrites every v: one file."""
    _log(ctx.stage_name, "cb")
    table = _read(ctx.stage_output)
    rows = table.to_pylist()
    for r in rows:
        r["v"] = (r["v"] * CA + 1) % M
        r["t"] = f"{r['t']}|{ctx.stage_name}"  # its rows say the stage's name
    _write(table, rows, Path(ctx.out_dir) / "part-0.parquet")
    return ctx.out_dir


def cb_keep(ctx):
    """Looks, and keeps the output as it is."""
    _log(ctx.stage_name, "cb")
    return None
''', "stages/callbacks_b.py": '''

def cb_b(ctx):
    """Keeps every other row, in two files."""
    _log(ctx.stage_name, "cb")
    table = _read(ctx.stage_output)
    rows = [r for i, r in enumerate(table.to_pylist()) if i % 2 == 0]
    for r in rows:
        r["v"] = (r["v"] + CB) % M
    half = len(rows) // 2
    _write(table, rows[:half], Path(ctx.out_dir) / "part-0.parquet")
    _write(table, rows[half:], Path(ctx.out_dir) / "part-1.parquet")
    return ctx.out_dir
'''}


def callbacks_text(rel: str, const: int, comment: str) -> str:
    """A callbacks file: its constant (CA or CB, by CALLBACK_CONSTS) and its callbacks."""
    return (f"# {comment}\n\"\"\"on_success callbacks of the fuzz workflows, generated by "
            f"tests/fuzz_workflows.py.\"\"\"\n{CALLBACK_CONSTS[rel]} = {const}\n"
            + _CALLBACK_COMMON + _CALLBACK_BODIES[rel])


def helper_text(rel: str, const: int, comment: str) -> str:
    if rel == "helpers/text.py":
        return (f"# {comment}\nfrom helpers.base import KB\n\nKT = {const}\n\n\n"
                "def word():\n    return (KT * 7 + KB) % 1000\n")
    return f"# {comment}\n{HELPER_CONSTS[rel]} = {const}\n"


# ----------------------------------------------------------------------------- stages


@dataclass
class StageGen:
    """One generated stage: what goes in its Workflowfile entry and in its code file."""

    name: str
    kind: str  # generate | transform | run
    const: int  # K in its code file: changing it changes the output
    comment: str  # first line of its code file: changing it changes no output
    p: int = 0
    q: int = 0  # a param the code never reads
    t: Typed = Typed(0, 0, "bare")  # a typed param; its repr goes into the rows
    x: Typed | None = None  # params.nest.deep.x (and the first of nest.seen); None: no nest
    k: int = 0  # run: params.k
    n: int = 1  # run: params.n, the number of part files of a folder output
    w: int = 1  # run: params.w; 0: the command writes nothing
    num_records: int | None = None
    batch_size: int = 1
    seed: str | None = None  # a stage
    seed_file: str | None = None  # a file seed (always a cross touch here): a glob or path
    sampling: str = "ordered"
    stage_inputs: list[str] = field(default_factory=list)  # stage inputs other than the seed
    file_inputs: list[str] = field(default_factory=list)  # data/ sources
    cross_inputs: list[str] = field(default_factory=list)  # inputs matching others' outputs
    cross_code: list[str] = field(default_factory=list)  # code: entries matching outputs
    use_rng: bool = False
    mode: str = "map"  # transform: map | count
    description: str = ""
    retries: int = 0
    concurrency: int = 1  # generate: batches in flight (1: the key is left out)
    executor: str | None = None  # generate: thread | process (None: the key is left out)
    flaky: bool = False  # with retries: each batch's first attempt raises (under test only)
    mutate: bool = False
    helpers: tuple[str, ...] = ()  # "text" (imported at the top), "lazy" (inside the function)
    on_success: str | None = None
    on_success_version: str | None = None
    allow_empty: bool = False
    processors: list[dict[str, Any]] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)
    folder: bool = False  # run: the output is a folder
    module_ref: bool = False  # `stages.sN:make` (imported) instead of `stages/sN.py:make`
    # Issue 11's renames: the name its files (code, outputs, notes, export copies, flaky
    # marker) and its log lines go by, once it was renamed ("": its name); and whether its
    # code writes ctx.stage_name into its rows (a rename then must build it again).
    files_as: str = ""
    named: bool = False

    @property
    def stem(self) -> str:
        return self.files_as or self.name

    @property
    def tabular(self) -> bool:
        return self.kind != "run"

    @property
    def code_path(self) -> str:
        return f"stages/{self.stem}.py"

    @property
    def output_path(self) -> str:
        return f"reports/{self.stem}" if self.folder else f"reports/{self.stem}.txt"

    @property
    def reads_name(self) -> bool:
        """Its code reads what depends on its name or folder (ctx.stage_name, a callback's
        ctx.stage_output or ctx.out_dir): a rename of it is built again, never restored."""
        return self.named or self.on_success is not None

    @property
    def upstreams(self) -> list[str]:
        """Declared upstream stages (cross touches aside: see WorkflowGen.upstreams)."""
        return ([self.seed] if self.seed else []) + self.stage_inputs

    @property
    def cross(self) -> list[str]:
        return ([self.seed_file] if self.seed_file else []) + self.cross_inputs + \
            self.cross_code

    @property
    def patterns(self) -> list[str]:
        """Every file path or glob the stage reads as an input or as code (besides its own
        code file and helpers)."""
        return self.file_inputs + self.cross

    @property
    def params(self) -> dict[str, Any]:
        if self.kind == "run":
            return {"k": self.k, "t": self.t.value, "n": self.n, "w": self.w}
        params: dict[str, Any] = {"p": self.p, "q": self.q, "t": self.t.value}
        if self.x is not None:
            params["nest"] = {"seen": [self.x.value], "deep": {"x": self.x.value}}
        return params

    def outputs(self) -> list[str]:
        """Declared outputs: the run output, or the export copies."""
        return [self.output_path] if self.kind == "run" else list(self.exports)

    def output_files(self) -> list[str]:
        """Every file the stage may write outside the artifacts (for glob matching)."""
        if self.kind == "run" and self.folder:
            return [f"{self.output_path}/part-{i}.txt" for i in range(6)]
        return self.outputs()

    def code_files(self) -> list[str]:
        """Its code file and the helper modules it imports (transitively)."""
        files = [self.code_path]
        for h in self.helpers:
            files += HELPER_FILES[h]
        return sorted(set(files))

    def entry(self, where: bool = True) -> dict[str, Any]:
        """The stage's Workflowfile entry (without `where`: no concurrency nor executor)."""
        d: dict[str, Any] = {}
        if self.description:
            d["description"] = self.description
        if self.kind == "run":
            d["run"] = (f"{shlex.quote(sys.executable)} {self.code_path} {{params.k}} "
                        "{params.t} {params.n} {params.w} {outputs} {inputs}")
            d["code"] = [self.code_path, *self.cross_code]
            d["outputs"] = [self.output_path]
        else:
            d[self.kind] = f"stages.{self.stem}:make" if self.module_ref else \
                f"{self.code_path}:make"
            if self.cross_code:
                d["code"] = list(self.cross_code)
        if self.kind == "generate":
            if self.num_records is not None:
                d["num_records"] = self.num_records
            d["batch_size"] = self.batch_size
            if self.seed or self.seed_file:
                d["seed"] = self.seed or self.seed_file
                if self.sampling != "ordered":
                    d["sampling"] = self.sampling
            if self.retries:
                d["retries"] = self.retries
            if where and self.concurrency != 1:
                d["concurrency"] = self.concurrency
            if where and self.executor:
                d["executor"] = self.executor
        inputs = self.stage_inputs + self.file_inputs + self.cross_inputs
        if inputs:
            d["inputs"] = inputs
        if self.processors:
            d["processors"] = [dict(p) for p in self.processors]
        if self.on_success:
            d["on_success"] = f"{CALLBACK_FILES[self.on_success]}:{self.on_success}"
            if self.on_success_version:
                d["on_success_version"] = self.on_success_version
        if self.allow_empty:
            d["allow_empty"] = True
        if self.exports:
            d["outputs"] = list(self.exports)
        d["params"] = self.params
        return d

    def step_parts(self) -> dict[str, str]:
        """What the model counts as the stage's spec, step by step (STEP_KEYS): "main" (what
        its batches depend on) and, for a generate or transform stage, each later step's
        keys; without the unfingerprinted keys."""
        d = {k: v for k, v in self.entry().items() if k not in UNFINGERPRINTED}
        if not self.tabular:
            return {"main": json.dumps(d, sort_keys=True)}
        later = {k for keys in STEP_KEYS.values() for k in keys}
        parts = {"main": json.dumps({k: v for k, v in d.items() if k not in later},
                                    sort_keys=True)}
        for step, keys in STEP_KEYS.items():
            parts[step] = json.dumps({k: d[k] for k in keys if k in d}, sort_keys=True)
        return parts

    def may_be_empty(self) -> bool:
        """Whether its output can have no rows (only EMPTYING removes row 0)."""
        return self.tabular and EMPTYING in self.processors

    def code_text(self) -> str:
        header = (f"# {self.comment}\n\"\"\"Stage {self.stem} ({self.kind}), generated by "
                  f"tests/fuzz_workflows.py.\"\"\"\nSTAGE = {self.stem!r}\nK = {self.const}\n"
                  f"USE_RNG = {self.use_rng}\nMODE = {self.mode!r}\nMUTATE = {self.mutate}\n"
                  f"FOLDER = {self.folder}\nNAMED = {self.named}\n")
        if self.kind == "run":
            return header + _COMMON + _RUN
        helped = ["", "", "def _helped():", "    total = 0"]
        if "text" in self.helpers:
            header += "from helpers.text import word\n"
            helped.append("    total += word()")
        if "lazy" in self.helpers:
            helped += ["    from helpers.lazy import KL", "", "    total += KL"]
        helped += ["    return total", ""]
        body = _GENERATE if self.kind == "generate" else _TRANSFORM
        return header + _COMMON + "\n".join(helped) + _TABULAR + body

    def describe(self) -> str:
        bits = [f"{self.name}: {self.kind}"]
        if self.kind == "generate":
            bits.append(f"num_records={self.num_records} batch_size={self.batch_size}")
            if self.seed or self.seed_file:
                bits.append(f"seed={self.seed or self.seed_file}" +
                            (" shuffle" if self.sampling == "shuffle" else ""))
        inputs = self.stage_inputs + self.file_inputs + self.cross_inputs
        if inputs:
            bits.append(f"inputs={inputs}")
        if self.cross_code:
            bits.append(f"code={self.cross_code}")
        bits.append(f"params={json.dumps(self.params)} K={self.const}")
        flags = [("rng", self.use_rng), ("module-ref", self.module_ref),
                 ("rows-name-it", self.named),
                 (f"files-as={self.files_as}", self.files_as and self.files_as != self.name),
                 ("mutates-params", self.mutate), (f"retries={self.retries}", self.retries),
                 (f"concurrency={self.concurrency}", self.concurrency != 1),
                 (f"executor={self.executor}", self.executor),
                 ("flaky", self.flaky), (f"helpers={','.join(self.helpers)}", self.helpers),
                 (f"on_success={self.on_success}", self.on_success),
                 (f"on_success_version={self.on_success_version}", self.on_success_version),
                 ("allow_empty", self.allow_empty),
                 (f"processors={json.dumps(self.processors)}", self.processors),
                 (f"exports={self.exports}", self.exports),
                 (f"output={self.output_path}", self.kind == "run")]
        bits += [text for text, on in flags if on]
        if self.kind == "transform":
            bits.append(f"mode={self.mode}")
        return " ".join(bits)


# ----------------------------------------------------------------------------- workflows


def glob_match(pattern: str, path: str) -> bool:
    """Whether a glob (no `**`) matches a path, segment by segment, as glob.glob does."""
    a, b = pattern.split("/"), path.split("/")
    return len(a) == len(b) and all(fnmatch.fnmatchcase(name, pat)
                                    for pat, name in zip(a, b, strict=True))


def touches(pattern: str, stage: StageGen) -> bool:
    """Whether a path or glob names one of the stage's outputs or a file inside one."""
    for out in stage.outputs():
        if pattern == out or pattern.startswith(out + "/"):
            return True
    return any(glob_match(pattern, f) for f in stage.output_files())


@dataclass
class WorkflowGen:
    stages: list[StageGen]  # topological order
    data: dict[str, str]  # source files besides code: data/x.txt, notes -> content
    order: list[str]  # declaration order in the Workflowfile
    helper_consts: dict[str, int] = field(default_factory=dict)  # helpers/x.py -> constant
    helper_comments: dict[str, str] = field(default_factory=dict)
    callback_consts: dict[str, int] = field(default_factory=lambda: {
        "stages/callbacks.py": 3, "stages/callbacks_b.py": 5})  # file -> its constant
    callback_comments: dict[str, str] = field(default_factory=lambda: {
        "stages/callbacks.py": "callbacks v0", "stages/callbacks_b.py": "callbacks_b v0"})

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def stage(self, name: str) -> StageGen:
        return next(s for s in self.stages if s.name == name)

    def producers(self, stage: StageGen) -> list[str]:
        """The stages whose outputs its cross touches match (implicit upstreams)."""
        return [s.name for s in self.stages if s is not stage and
                any(touches(p, s) for p in stage.cross)]

    def upstreams(self, name: str) -> list[str]:
        stage = self.stage(name)
        return stage.upstreams + [p for p in self.producers(stage) if p not in stage.upstreams]

    def cross_consistent(self) -> bool:
        """Every touch reads only outputs of stages before its own (no cycle)."""
        index = {name: i for i, name in enumerate(self.names)}
        return all(index[p] < index[s.name] for s in self.stages for p in self.producers(s))

    def has_cross(self) -> bool:
        return any(s.cross for s in self.stages)

    def cross_texts(self) -> list[str]:
        return [c for s in self.stages for c in s.cross]

    def may_fail(self) -> set[str]:
        """Stages a from-scratch build may fail: run stages whose command writes nothing, and
        stages that may have no rows without `allow_empty`."""
        return {s.name for s in self.stages if (s.kind == "run" and s.w == 0) or
                (s.may_be_empty() and not s.allow_empty)}

    def workflowfile_text(self, where: bool = True) -> str:
        """The Workflowfile; without `where`, as if no stage said where its batches run."""
        doc = {"workflow": WORKFLOW,
               "stages": {name: self.stage(name).entry(where) for name in self.order}}
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=200)

    def write_all(self, root: Path) -> None:
        self.write_workflowfile(root)
        for s in self.stages:
            self.write_code(root, s)
            self.write_flaky(root, s)
        for rel in self.data:
            self.write_data(root, rel)
        _write(root / "helpers" / "__init__.py", '"""Helpers the fuzz stages import."""\n')
        for rel in HELPER_CONSTS:
            self.write_helper(root, rel)
        for rel in CALLBACK_CONSTS:
            self.write_callbacks(root, rel)

    def write_workflowfile(self, root: Path) -> None:
        _write(root / "Workflowfile", self.workflowfile_text())

    def write_code(self, root: Path, stage: StageGen) -> None:
        _write(root / stage.code_path, stage.code_text())

    def write_data(self, root: Path, rel: str) -> None:
        _write(root / rel, self.data[rel])

    def write_helper(self, root: Path, rel: str) -> None:
        _write(root / rel, helper_text(rel, self.helper_consts[rel], self.helper_comments[rel]))

    def write_callbacks(self, root: Path, rel: str) -> None:
        _write(root / rel, callbacks_text(rel, self.callback_consts[rel],
                                          self.callback_comments[rel]))

    def write_flaky(self, root: Path, stage: StageGen) -> None:
        """`flaky/NAME` exists while the stage is flaky and retries: never in a from-scratch
        build's folder (it copies sources only), so that build is untroubled."""
        path = root / "flaky" / stage.stem
        if stage.flaky and stage.retries:
            _write(path, "")
        else:
            path.unlink(missing_ok=True)

    def closure(self, targets: Iterable[str]) -> list[str]:
        """Targets and their ancestors (cross touches count), in topological order."""
        targets = list(targets)
        if not targets:
            return self.names
        needed = set(targets)
        for s in reversed(self.stages):
            if s.name in needed:
                needed.update(self.upstreams(s.name))
        return [n for n in self.names if n in needed]

    def descendants(self, name: str) -> set[str]:
        found = {name}
        for s in self.stages:
            if any(u in found for u in self.upstreams(s.name)):
                found.add(s.name)
        return found

    def describe(self) -> str:
        lines = ["  " + s.describe() for s in self.stages]
        if self.order != self.names:
            lines.append(f"  declared in the order {self.order}")
        return "\n".join(lines)

    # -- cross touches

    def add_cross(self, rng: Rng, stage: StageGen) -> str | None:
        """Give `stage` an input, seed or code entry that matches earlier stages' outputs (a
        glob, or a plain path); None when no earlier stage has an output of a usable kind."""
        index = self.names.index(stage.name)
        earlier = self.stages[:index]
        options: list[tuple[str, str]] = []  # (where, pattern)
        for x in earlier:
            if x.kind == "run":
                if x.folder:
                    options += [("glob", "reports/*/part-*.txt"),
                                ("glob", f"reports/{x.stem}*/part-*.txt"),
                                ("path", f"{x.output_path}/part-0.txt")]
                else:
                    options += [("glob", "reports/*.txt"), ("glob", f"reports/{x.stem}*.txt"),
                                ("path", x.output_path)]
            for out in x.exports:
                ext = out.rsplit(".", 1)[1]
                if ext == "parquet":
                    continue
                options += [("glob", f"exports/*.{ext}"), ("glob", f"exports/{x.stem}*.{ext}"),
                            ("path", out)]
                if ext == "jsonl" and stage.kind == "generate" and not stage.seed and \
                        not stage.seed_file:
                    options += [("seed", f"exports/*.{ext}"),
                                ("seed", f"exports/{x.stem}*.{ext}"), ("seed", out)]
        # A pattern may only match the outputs of stages before this one (no cycles).
        later = self.stages[index:]
        options = [(w, p) for w, p in options if not any(touches(p, s) for s in later)]
        if not options:
            return None
        wheres = sorted({w for w, _ in options})  # globs and seeds more often than paths
        where = rng.choice([w for w in wheres for _ in range(1 if w == "path" else 3)])
        pattern = rng.choice([p for w, p in options if w == where])
        if where == "seed":
            stage.seed_file = pattern
            return f"seed: {pattern}"
        if rng.random() < 0.3 and pattern not in stage.cross_code:
            stage.cross_code.append(pattern)
            return f"code: [{pattern}]"
        if pattern in stage.cross_inputs:
            return None
        stage.cross_inputs.append(pattern)
        return f"inputs: [{pattern}]"

    def drop_cross(self) -> list[str]:
        """Remove every cross touch (after dd-build refused them); what was removed."""
        gone = []
        for s in self.stages:
            gone += [f"{s.name}: {c}" for c in s.cross]
            if s.seed_file and s.num_records is None:
                s.num_records = 3
            s.seed_file, s.cross_inputs, s.cross_code = None, [], []
        return gone


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def notes_of(stage: StageGen) -> dict[str, str]:
    """Source files beside a stage's outputs, matched by the same globs."""
    if stage.kind == "run":
        if stage.folder:
            return {f"reports/{stage.stem}-notes/part-0.txt": f"notes of {stage.stem}\n"}
        return {f"reports/{stage.stem}-note.txt": f"note of {stage.stem}\n"}
    notes = {}
    for out in stage.exports:
        ext = out.rsplit(".", 1)[1]
        if ext == "jsonl":
            notes[f"exports/{stage.stem}-note.jsonl"] = '{"id": 0, "v": 7, "t": "note"}\n'
        elif ext == "csv":
            notes[f"exports/{stage.stem}-note.csv"] = "id,v,t\n0,7,note\n"
    return notes


def random_workflow(rng: Rng, mix: Mix | None = None) -> WorkflowGen:
    """A random DAG: generate stages (seeded from an earlier stage or not, with stage and
    file inputs), transforms over 1-2 earlier tables, run stages over any earlier stage; each
    with the hard edges `mix` draws."""
    mix = mix or Mix()
    n = rng.randint(*mix.stages)
    stages: list[StageGen] = []
    for i in range(n):
        name = f"s{i + 1}"
        tabular = [s.name for s in stages if s.tabular]
        files = [rng.choice(FILE_INPUT_CHOICES)] if rng.random() < 0.3 else []
        common: dict[str, Any] = dict(name=name, const=rng.randint(1, 97),
                                      comment=f"{name} v0", file_inputs=files,
                                      t=random_typed(rng))
        if not tabular:
            kind = "generate"
        elif rng.random() < mix.run:
            kind = "run"
        else:
            kind = rng.choice(("generate", "generate", "transform"))
        if kind == "run":
            stage = StageGen(kind="run", k=rng.randint(0, 9), n=rng.randint(1, 4),
                             folder=rng.random() < mix.folder,
                             stage_inputs=[rng.choice([s.name for s in stages])], **common)
        elif kind == "transform":
            ups = rng.sample(tabular, min(len(tabular), rng.randint(1, 2)))
            stage = StageGen(kind="transform", stage_inputs=ups,
                             mode=rng.choice(("map", "map", "count")), **common)
        else:
            stage = StageGen(kind="generate", use_rng=rng.random() < 0.4,
                             num_records=rng.randint(1, 9), batch_size=rng.randint(1, 4),
                             **common)
            if tabular and rng.random() < 0.5:
                stage.seed = rng.choice(tabular)
                if rng.random() < 0.3:
                    stage.num_records = None  # as many as the seed has rows
                if rng.random() < 0.2:
                    stage.sampling = "shuffle"
            others = [s.name for s in stages if s.name != stage.seed]
            if others and rng.random() < 0.2:
                stage.stage_inputs = [rng.choice(others)]
            if rng.random() < mix.retries:
                stage.retries, stage.flaky, stage.use_rng = rng.randint(1, 2), True, True
        if stage.tabular:
            stage.p, stage.q = rng.randint(0, 99), rng.randint(0, 99)
            stage.module_ref = rng.random() < 0.3
            if rng.random() < mix.nested:
                stage.x = random_typed(rng)
                stage.mutate = kind == "generate" and rng.random() < mix.mutate
            if rng.random() < mix.helpers:
                stage.helpers = rng.choice((("text",), ("lazy",), ("text", "lazy")))
            if rng.random() < mix.callback:
                stage.on_success = rng.choice(CALLBACKS)
            if rng.random() < mix.processors:
                stage.processors = rng.sample(PROCESSOR_CHOICES, rng.randint(1, 2))
            if rng.random() < mix.exports:
                stage.exports = [f"exports/{name}.{rng.choice(('jsonl', 'csv', 'parquet'))}"]
            if mix.steps:
                _step_edges(rng, mix, stage)
            if mix.named and rng.random() < mix.named:
                stage.named = True
        stages.append(stage)
    data = {"data/a.txt": random_text(rng), "data/b.txt": random_text(rng)}
    for s in stages:
        data.update(notes_of(s))
    order = [s.name for s in stages]
    if rng.random() < 0.5:
        rng.shuffle(order)
    wf = WorkflowGen(stages, data, order,
                     {rel: rng.randint(1, 97) for rel in HELPER_CONSTS},
                     {rel: f"{Path(rel).stem} v0" for rel in HELPER_CONSTS})
    for s in stages[1:]:
        if rng.random() < mix.cross:
            wf.add_cross(rng, s)
    return wf


def _step_edges(rng: Rng, mix: Mix, stage: StageGen) -> None:
    """Issue 8's later steps on a new stage: a callback version, a second export copy, the
    EMPTYING processor, allow_empty."""
    if stage.on_success and rng.random() < 0.3:
        stage.on_success_version = rng.choice(CALLBACK_VERSIONS)
    if stage.exports and rng.random() < 0.3:
        have = stage.exports[0].rsplit(".", 1)[1]
        other = rng.choice([f for f in EXPORT_FORMATS if f != have])
        stage.exports.append(f"exports/{stage.stem}.{other}")
    if rng.random() < mix.empty:
        stage.processors = [*stage.processors, EMPTYING]
    if rng.random() < mix.allow_empty:
        stage.allow_empty = True


def draw_where(rng: Rng, stage: StageGen) -> str | None:
    """Where a generate stage's batches run: `concurrency` (mostly 1, else 2-8 in flight) and
    `executor` (mostly left out; `thread` said outright; `process`, worker processes when
    concurrency > 1, each build of the stage paying ~1 s to start them: rarely). What changed,
    or None (a run or transform stage, or the same draw)."""
    if stage.kind != "generate":
        return None
    old = (stage.concurrency, stage.executor)
    stage.concurrency = 1 if rng.random() < 0.5 else rng.choice((2, 3, 4, 8))
    x = rng.random()
    stage.executor = "process" if x < 0.08 else "thread" if x < 0.25 else None
    changes = [f"{key} {a or '(left out)'} -> {b or '(left out)'}" for key, a, b in (
        ("concurrency", old[0], stage.concurrency), ("executor", old[1], stage.executor))
        if a != b]
    return ", ".join(changes) or None


def random_text(rng: Rng) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) + "\n"
