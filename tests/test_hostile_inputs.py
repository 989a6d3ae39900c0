"""Hostile inputs through the real CLI: a catalogue of bad Workflowfiles, records, data files
and invocations (issue 4, item 5).

One table-driven test. Each case damages a fresh copy of a built CHAIN project (a → b → c),
runs `python -m buildtool` with a timeout, and checks:

- the documented exit code (DESIGN.md §4: 2 for an invalid Workflowfile, arguments or state;
  1 when a stage fails; 0 where §5 says the build goes on, e.g. an unreadable `stage.json`
  means "run that stage fresh", reason `record_unreadable` / `format_changed`);
- stderr names the file (or folder, stage, option) at fault and says how to fix it;
- no traceback;
- nothing that was there before was deleted or changed, except the files the case lists in
  `rewrites` (fnmatch patterns, project-relative) — what its documented outcome rewrites;
- no temp file of an atomic write is left behind.

Unit-level validation (line, column, key of each error) is in test_workflowfile.py; this file
checks what a user sees at the command line.
"""

from __future__ import annotations

import fnmatch
import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import CHAIN, STAGE_CODE, Project, Result

ART = "artifacts/demo"
# What any build that gets past validation rewrites: the summary, the lock's pid, the call log,
# the planning index (a copied project's records are new files to it: it reads them again).
BOOKKEEPING = (f"{ART}/workflow.json", f"{ART}/.lock", f"{ART}/.plan-index", "code/calls.log")
LOCK = (f"{ART}/.lock",)  # a command that took the build lock wrote its pid there

Damage = Callable[[Project], None]
Check = Callable[[Project, Result], None]


@dataclass(frozen=True)
class Case:
    id: str
    damage: Damage
    args: tuple[str, ...]
    code: int
    stderr: tuple[str, ...]  # substrings: the file (or option, stage) at fault and the fix
    rewrites: tuple[str, ...] = ()  # files the documented outcome may rewrite or remove
    check: Check | None = None
    timeout: float = 60.0
    memory_cap: bool = False  # run under RLIMIT_AS so a blow-up fails instead of swapping


# ---------------------------------------------------------------- damage helpers


def edit(old: str, new: str) -> Damage:
    """Replace `old` (which must occur exactly once) in the Workflowfile."""

    def damage(p: Project) -> None:
        path = p.root / "Workflowfile"
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
        path.write_text(text.replace(old, new))

    return damage


def add_to(stage_line: str, *lines: str) -> Damage:
    """Add key lines after `stage_line` (a line of the stage's body)."""
    return edit(stage_line, "\n".join([stage_line, *lines]))


def workflowfile(text: str) -> Damage:
    return write("Workflowfile", textwrap.dedent(text))


def write(rel: str, data: str | bytes) -> Damage:
    def damage(p: Project) -> None:
        path = p.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)

    return damage


def replace_with_folder(rel: str) -> Damage:
    def damage(p: Project) -> None:
        path = p.root / rel
        path.unlink()
        path.mkdir()

    return damage


def both(*damages: Damage) -> Damage:
    def damage(p: Project) -> None:
        for d in damages:
            d(p)

    return damage


def record(stage: str, change: Callable[[dict[str, Any]], Any]) -> Damage:
    """Rewrite a stage's record through `change(record_dict)` (which edits it in place)."""

    def damage(p: Project) -> None:
        path = p.artifacts / stage / "stage.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return damage


def record_text(stage: str, data: bytes | Callable[[bytes], bytes]) -> Damage:
    def damage(p: Project) -> None:
        path = p.artifacts / stage / "stage.json"
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)

    return damage


def garble_keeping_stats(rel: str) -> Damage:
    """Garbage bytes of the same size and mtime: the planner's stat check still passes."""

    def damage(p: Project) -> None:
        path = p.root / rel
        st = path.stat()
        path.write_bytes(bytes((i * 37 + 11) % 256 for i in range(st.st_size)))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    return damage


def truncate(rel: str) -> Damage:
    def damage(p: Project) -> None:
        path = p.root / rel
        path.write_bytes(path.read_bytes()[:100])

    return damage


def parquet_file(rel: str, columns: dict[str, list[Any]]) -> Damage:
    def damage(p: Project) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns), p.root / rel)

    return damage


def nothing(p: Project) -> None:
    return None


# ---------------------------------------------------------------- check helpers


def results(**expected: str) -> Check:
    """The --json report's `result` per stage."""

    def check(p: Project, r: Result) -> None:
        for stage, result in expected.items():
            assert r.stage(stage)["result"] == result, (stage, r.stage(stage))

    return check


def reasons(stage: str, code: str, action: str = "run") -> Check:
    def check(p: Project, r: Result) -> None:
        entry = r.stage(stage)
        assert entry["action"] == action, entry
        assert code in [x["code"] for x in entry["reasons"]], entry["reasons"]

    return check


def failed_record(stage: str, *words: str) -> Check:
    def check(p: Project, r: Result) -> None:
        rec = p.record(stage)
        assert rec["status"] == "failed", rec["status"]
        for word in words:
            assert word in rec["error"], (word, rec["error"])

    return check


def failed_untouched(stage: str, *words: str) -> Check:
    """The stage failed before its attempt touched anything (loading its code, reading its
    seed): the failure is reported and the stage's last good record stands, so reverting the
    change costs nothing."""
    def check(p: Project, r: Result) -> None:
        rec = p.record(stage)
        assert rec["status"] == "completed", rec["status"]
        for word in words:
            assert word in r.stderr, (word, r.stderr)

    return check


def same_as_template(*rels: str) -> Check:
    """Files the run rewrote come out byte-identical to the clean build's."""

    def check(p: Project, r: Result) -> None:
        for rel in rels:
            assert (p.root / rel).read_bytes() == (TEMPLATE_ROOT[0] / rel).read_bytes(), rel

    return check


def absent(*rels: str) -> Check:
    def check(p: Project, r: Result) -> None:
        for rel in rels:
            assert not (p.root / rel).exists(), f"{rel} was created"

    return check


def calls(*expected: str) -> Check:
    def check(p: Project, r: Result) -> None:
        assert p.calls() == list(expected), p.calls()

    return check


def stdout_has(*words: str) -> Check:
    def check(p: Project, r: Result) -> None:
        for word in words:
            assert word in r.stdout, (word, r.stdout)

    return check


def all_of(*checks: Check) -> Check:
    def check(p: Project, r: Result) -> None:
        for c in checks:
            c(p, r)

    return check


# ---------------------------------------------------------------- the catalogue
#
# CHAIN's lines: 2 workflow, 3 stages, 4 a:, 5 generate, 6 num_records, 7 batch_size, 8 params,
# 9 b:, 10 generate, 11 seed, 12 num_records, 13 batch_size, 14 c:, 15 transform, 16 inputs.

A_BATCH = "    batch_size: 5"
B_BATCH = "    batch_size: 10"
C_INPUTS = "    inputs: [a, b]"
SEED_STAGE = "  d:\n    generate: code/stages.py:rows\n    seed: {seed}\n"
BILLION_LAUGHS = "    params:\n      l0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"      l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))
B_RERUN = (f"{ART}/b/stage.json", *BOOKKEEPING)  # b runs fresh; its batches come out identical
B_FAILS = (f"{ART}/b/stage.json", *BOOKKEEPING)
C_FAILS = (f"{ART}/c/stage.json", *BOOKKEEPING)
B_BATCH_FILES = tuple(f"{ART}/b/batches/batch-{i:06d}.parquet" for i in range(6))
CORRUPT_A1 = garble_keeping_stats(f"{ART}/a/batches/batch-000001.parquet")

# A wrong type for every stage key: (key, stage, text to replace — None: append a stage —,
# new text, message).
WRONG_TYPES: list[tuple[str, str, str | None, str, str]] = [
    ("generate", "a", "    generate: code/stages.py:rows\n    num_records: 20",
     "    generate: 5\n    num_records: 20", "must be a callable reference (a string), got integer 5"),
    ("transform", "c", "    transform: code/stages.py:join",
     "    transform: [code/stages.py:join]", "must be a callable reference (a string), got a list"),
    ("run", "r", None, "  r:\n    run: {cmd: x}\n    outputs: [r.txt]\n",
     "must be a shell command (a string), got a mapping"),
    ("seed", "b", "    seed: a", "    seed: [a]",
     "must be a stage name or a file path (a string), got a list"),
    ("inputs", "c", C_INPUTS, "    inputs: a", "must be a list, got string 'a'"),
    ("outputs", "c", C_INPUTS, C_INPUTS + "\n    outputs: c.parquet", "must be a list"),
    ("params", "a", "    params: {tag: x}", "    params: [x]", "must be a mapping, got a list"),
    ("num_records", "a", "    num_records: 20", '    num_records: "20"',
     "must be a positive integer, got string '20'"),
    ("batch_size", "a", A_BATCH, "    batch_size: 0", "must be a positive integer, got 0"),
    ("sampling", "b", B_BATCH, B_BATCH + "\n    sampling: 3", "must be one of ordered, shuffle"),
    ("processors", "b", B_BATCH, B_BATCH + "\n    processors: {drop: [id]}",
     "must be a list of processors, got a mapping"),
    ("on_success", "b", B_BATCH, B_BATCH + "\n    on_success: 5",
     "must be a callable reference (a string), got integer 5"),
    ("on_success_version", "b", B_BATCH,
     B_BATCH + "\n    on_success: code/stages.py:rows\n    on_success_version: 2",
     "must be a string, got integer 2"),
    ("allow_empty", "b", B_BATCH, B_BATCH + "\n    allow_empty: sometimes",
     "must be true or false, got string 'sometimes'"),
    ("code", "c", C_INPUTS, C_INPUTS + "\n    code: code/stages.py",
     "must be a list, got string 'code/stages.py'"),
    ("retries", "b", B_BATCH, B_BATCH + "\n    retries: -1", "must be an integer >= 0, got -1"),
    ("description", "b", B_BATCH, B_BATCH + "\n    description: [x]", "must be a string, got a list"),
]


def _wrong_type(key: str, stage: str, old: str | None, new: str, message: str) -> Case:
    damage = edit(old, new) if old is not None else write("Workflowfile", CHAIN + new)
    return Case(f"wrong-type-{key}", damage, (), 2,
                ("Workflowfile:", f"stage '{stage}', key '{key}'", message))


CASES: list[Case] = [
    # ---- malformed YAML and the shape of the file
    Case("yaml-tab-indent", edit("  a:\n    generate", "  a:\n\tgenerate"), (), 2,
         ("Workflowfile:5:1", "invalid YAML", "hint: this line has a tab")),
    Case("yaml-unclosed-flow-mapping", edit("params: {tag: x}", "params: {tag: x"), (), 2,
         ("Workflowfile:9:", "invalid YAML", "hint: while parsing a flow mapping at line 8")),
    Case("yaml-unclosed-list", edit("inputs: [a, b]", "inputs: [a, b"), (), 2,
         ("Workflowfile:", "invalid YAML", "hint: while parsing a flow sequence at line 16")),
    Case("empty-file", write("Workflowfile", ""), (), 2,
         ("Workflowfile:1:1: the Workflowfile is empty", "hint: start with `workflow: NAME`")),
    Case("top-level-list", write("Workflowfile", "- workflow: demo\n- stages: {}\n"), (), 2,
         ("Workflowfile:1:1", "must be a mapping", "hint: start with `workflow: NAME`")),
    Case("two-documents", lambda p: p.write("Workflowfile", CHAIN + "---\nworkflow: other\n"), (), 2,
         ("Workflowfile:", "but found another document", "expected a single document")),
    Case("not-utf8", write("Workflowfile", b"workflow: demo\nstages: \x80\x81\n"), (), 2,
         ("Workflowfile:2:9", "not UTF-8 text", "hint: save it as UTF-8")),
    Case("binary-garbage", write("Workflowfile", bytes(range(256)) * 4), (), 2,
         ("Workflowfile:", "not UTF-8 text", "hint: save it as UTF-8")),
    Case("workflowfile-is-a-folder", replace_with_folder("Workflowfile"), (), 2,
         ("Workflowfile is a folder", "hint: name the file inside it with -f FILE")),
    Case("missing-workflow-key", edit("workflow: demo\n", ""), (), 2,
         ("Workflowfile:", "missing required key `workflow`", "hint: Required:")),
    Case("missing-stages-key", workflowfile("workflow: demo\n"), (), 2,
         ("Workflowfile:", "missing required key `stages`", "hint: Required:")),
    # ---- unknown and duplicate keys
    Case("unknown-top-level-key", edit("stages:", "stagse:"), (), 2,
         ("Workflowfile:3:1", "unknown top-level key `stagse`", "did you mean `stages`?")),
    Case("unknown-stage-key", edit("    num_records: 60", "    num_record: 60"), (), 2,
         ("Workflowfile:12:5", "stage 'b', key 'num_record'", "did you mean `num_records`?")),
    Case("unknown-default-key", edit("stages:", "defaults:\n  batchsize: 3\nstages:"), (), 2,
         ("Workflowfile:4:3", "unknown stage key `batchsize`", "did you mean `batch_size`?")),
    Case("duplicate-top-level-key", edit("workflow: demo", "workflow: demo\nworkflow: demo2"), (), 2,
         ("Workflowfile:3:1", "duplicate key `workflow`", "first given at line 2",
          "hint: give each key once")),
    Case("duplicate-stage-key", add_to(B_BATCH, "    batch_size: 20"), (), 2,
         ("Workflowfile:14:5", "stage 'b', key 'batch_size'", "duplicate key",
          "hint: give each key once")),
    Case("duplicate-stage-name", lambda p: p.write("Workflowfile", CHAIN + "  a:\n    run: x\n"), (),
         2, ("Workflowfile:17:3", "duplicate key `a`", "first given at line 4")),
    # ---- wrong types (one case per stage key)
    *[_wrong_type(*row) for row in WRONG_TYPES],
    # ---- the graph
    Case("cycle-two-stages", edit("    num_records: 20\n", "    seed: b\n"), (), 2,
         ("Workflowfile:4:3, stage 'a'", "the stages form a cycle: a → b → a",
          "hint: remove one of these dependencies")),
    Case("cycle-three-stages", workflowfile("""\
        workflow: demo
        stages:
          a:
            generate: code/stages.py:rows
            seed: c
          b:
            generate: code/stages.py:rows
            seed: a
          c:
            transform: code/stages.py:join
            inputs: [b]
        """), (), 2,
         ("Workflowfile:3:3, stage 'a'", "the stages form a cycle: a → b → c → a", "hint:")),
    Case("self-dependency-seed", edit("    seed: a", "    seed: b"), (), 2,
         ("Workflowfile:11:11, stage 'b', key 'seed'", "stage depends on itself",
          "hint: a stage can only use other stages")),
    Case("self-dependency-inputs", edit(C_INPUTS, "    inputs: [a, b, c]"), (), 2,
         ("stage 'c', key 'inputs'", "stage depends on itself", "hint:")),
    Case("self-dependency-own-output", lambda p: p.write(
        "Workflowfile", CHAIN + "  r:\n    run: cat r.txt > r.txt\n    inputs: [r.txt]\n"
                                "    outputs: [r.txt]\n"), (), 2,
         ("stage 'r', key 'inputs'", "stage depends on itself: `r.txt` is one of its outputs")),
    # ---- names and paths: '/', '..', absolute, '~'
    Case("stage-name-with-slash", edit("  c:", "  c/d:"), (), 2,
         ("Workflowfile:14:3", "invalid stage name `c/d`", "hint: use letters, digits")),
    Case("stage-name-dotdot", edit("  c:", "  ..:"), (), 2,
         ("Workflowfile:14:3", "invalid stage name `..`", "hint: use letters")),
    Case("stage-name-is-a-command", edit("  c:", "  status:"), (), 2,
         ("Workflowfile:14:3", "`status` is a dd-build command", "hint: rename the stage")),
    Case("workflow-name-dotdot", edit("workflow: demo", "workflow: ../evil"), (), 2,
         ("Workflowfile:2:11", "invalid workflow name", "hint: use letters")),
    Case("input-dotdot", edit(C_INPUTS, "    inputs: [a, b, code/../../x.txt]"), (), 2,
         ("stage 'c', key 'inputs'", "leaves the project folder", "hint: every path must stay")),
    Case("input-absolute", edit(C_INPUTS, "    inputs: [a, b, /etc/passwd]"), (), 2,
         ("stage 'c', key 'inputs'", "`/etc/passwd` is an absolute path", "hint: write paths relative")),
    Case("input-tilde", edit(C_INPUTS, "    inputs: [a, b, ~/notes.txt]"), (), 2,
         ("stage 'c', key 'inputs'", "is an absolute path", "hint: write paths relative")),
    Case("seed-absolute", edit("    seed: a", "    seed: /tmp/seed.parquet"), (), 2,
         ("stage 'b', key 'seed'", "is an absolute path", "hint:")),
    Case("output-outside-project", add_to(C_INPUTS, "    outputs: [../c.parquet]"), (), 2,
         ("Workflowfile:17:15, stage 'c', key 'outputs'", "leaves the project folder", "hint:")),
    Case("output-absolute", add_to(C_INPUTS, "    outputs: [/tmp/c.parquet]"), (), 2,
         ("stage 'c', key 'outputs'", "is an absolute path", "hint: write paths relative")),
    Case("output-tilde", add_to(C_INPUTS, "    outputs: [~/c.parquet]"), (), 2,
         ("stage 'c', key 'outputs'", "is an absolute path", "hint:")),
    Case("output-in-artifacts", add_to(C_INPUTS, "    outputs: [artifacts/c.parquet]"), (), 2,
         ("stage 'c', key 'outputs'", "overlaps the artifacts folder", "hint: dd-build owns")),
    Case("code-dotdot", add_to(C_INPUTS, "    code: [../stages.py]"), (), 2,
         ("stage 'c', key 'code'", "leaves the project folder", "hint:")),
    Case("code-absolute", add_to(C_INPUTS, "    code: [/usr/lib/python3/x.py]"), (), 2,
         ("stage 'c', key 'code'", "is an absolute path", "hint:")),
    Case("callable-absolute", edit("code/stages.py:join", "/tmp/stages.py:join"), (), 2,
         ("stage 'c', key 'transform'", "is an absolute path", "hint:")),
    Case("callable-dotdot", edit("code/stages.py:join", "../stages.py:join"), (), 2,
         ("stage 'c', key 'transform'", "leaves the project folder", "hint:")),
    Case("artifacts-dotdot", edit("workflow: demo", "workflow: demo\nartifacts: ../art"), (), 2,
         ("Workflowfile:3:12, key 'artifacts'", "leaves the project folder", "hint:")),
    Case("artifacts-absolute", edit("workflow: demo", "workflow: demo\nartifacts: /tmp/art"), (), 2,
         ("key 'artifacts'", "is an absolute path", "hint:")),
    Case("artifacts-tilde", edit("workflow: demo", "workflow: demo\nartifacts: ~/art"), (), 2,
         ("key 'artifacts'", "is an absolute path", "hint:")),
    Case("artifacts-is-a-file", edit("workflow: demo", "workflow: demo\nartifacts: code/stages.py"),
         (), 2, ("key 'artifacts'", "`code/stages.py` is a file, not a folder", "hint: name a folder")),
    Case("glob-matches-nothing", edit(C_INPUTS, "    inputs: [a, b, 'data/*.csv']"), (), 2,
         ("stage 'c', key 'inputs'", "input 'data/*.csv' matches no file", "hint: create the file"),
         LOCK),
    Case("seed-glob-matches-nothing", edit("    seed: a", "    seed: 'data/*.parquet'"), (), 2,
         ("stage 'b', key 'seed'", "matches no file", "hint:"), LOCK),
    Case("misspelt-stage-input", edit(C_INPUTS, "    inputs: [a, bb]"), (), 2,
         ("stage 'c', key 'inputs'", "no stage or file named `bb`", "did you mean `b`?")),
    # ---- callables
    Case("callable-file-missing", edit("code/stages.py:join", "code/nope.py:join"), (), 2,
         ("stage 'c', key 'transform'", "no file `code/nope.py`", "hint: check the path")),
    # a missing function, or a value that is no function: refused when the file is read
    # (codenames.py reads it with ast), before anything runs
    Case("callable-function-missing", edit("code/stages.py:join", "code/stages.py:nojoin"),
         (), 2, ("stage 'c', key 'transform'", "`code/stages.py` defines no function `nojoin`",
                 "hint: did you mean `join`?")),
    Case("on-success-function-missing", add_to(C_INPUTS, "    on_success: code/stages.py:nope"),
         (), 2, ("stage 'c', key 'on_success'", "defines no function `nope`", "hint:")),
    Case("callable-not-callable", both(write("code/consts.py", "join = 3\n"),
                                       edit("code/stages.py:join", "code/consts.py:join")),
         (), 2, ("stage 'c', key 'transform'", "`code/consts.py:join` is a number, not a function",
                 "hint: name a function")),
    # what only running the module tells: the stage fails when it loads its code
    Case("callable-function-missing-dynamic", both(
        write("code/dyn.py", "globals()['other'] = 1\n"),
        edit("code/stages.py:join", "code/dyn.py:nojoin")),
         ("--json",), 1, ("✗ c: failed", "code/dyn.py has no function 'nojoin'",
                          "hint: fix the name after `:`"), C_FAILS,
         # the failure touched nothing: c's last good record stands (reverting costs nothing)
         results(a="up_to_date", b="up_to_date", c="failed")),
    Case("callable-not-callable-dynamic", both(write("code/consts.py", "join = int('3')\n"),
                                               edit("code/stages.py:join", "code/consts.py:join")),
         ("--json",), 1, ("✗ c: failed", "code/consts.py:join is not callable (it is a int)",
                          "hint: name a function"), C_FAILS, failed_untouched("c", "not callable")),
    Case("module-raises-on-import", both(
        write("code/bad.py", "raise RuntimeError('import boom')\ndef join(ctx): pass\n"),
        edit("code/stages.py:join", "code/bad.py:join")), ("--json",), 1,
        ("✗ c: failed", "cannot load code/bad.py: RuntimeError: import boom", "hint: code/bad.py raised while being imported"),
        C_FAILS, failed_untouched("c", "import boom")),
    Case("module-exits-on-import", both(  # fixed: sys.exit(3) ended dd-build with exit 3
        write("code/bad.py", "import sys\nsys.exit(3)\ndef join(ctx): pass\n"),
        edit("code/stages.py:join", "code/bad.py:join")), ("--json",), 1,
        ("✗ c: failed", "cannot load code/bad.py: SystemExit: 3", "hint: code/bad.py raised while being imported"),
        C_FAILS, failed_untouched("c", "SystemExit")),
    Case("function-calls-sys-exit", both(  # fixed: left the record `running`, exit 1 "bye"
        write("code/bad.py", "import sys\ndef rows(ctx):\n    sys.exit('bye')\n"),
        edit("    generate: code/stages.py:rows\n    seed: a",
             "    generate: code/bad.py:rows\n    seed: a")), ("--json",), 1,
        ("✗ b: failed", "batch 0 called sys.exit('bye')", "hint: raise an exception instead"),
        (*B_FAILS, *B_BATCH_FILES), all_of(results(b="failed", c="not_run"),
                                           failed_record("b", "sys.exit"))),
    Case("module-not-found", edit("code/stages.py:join", "nosuchpkg.mod:join"), ("--json",), 1,
         ("✗ c: failed", "cannot load nosuchpkg.mod: ModuleNotFoundError",
          "hint: no module `nosuchpkg.mod`"), C_FAILS, failed_untouched("c", "ModuleNotFoundError")),
    # ---- YAML that must be bounded or refused
    Case("yaml-billion-laughs", edit("    params: {tag: x}\n", BILLION_LAUGHS), (), 2,
         ("Workflowfile:", "a YAML alias bomb", "hint: write the values out"),
         timeout=30, memory_cap=True),
    Case("yaml-deep-nesting", edit("params: {tag: x}", "params: {x: " + "[" * 50_000 + "]" * 50_000
                                   + "}"), (), 2,
         ("Workflowfile:8:", "nested more than 64 levels deep", "hint: flatten"),
         timeout=30, memory_cap=True),
    Case("yaml-recursive-alias", edit("    params: {tag: x}\n", "    params: &p\n      me: *p\n"),
         (), 2, ("Workflowfile:8:", "stage 'a', key 'params'", "recursive")),
    Case("yaml-python-object-tag",
         edit("params: {tag: x}", "params: !!python/object/apply:os.system ['touch pwned']"), (), 2,
         ("Workflowfile:8:13, stage 'a', key 'params'", "could not determine a constructor",
          "hint: remove the tag"), check=absent("pwned")),
    Case("yaml-python-tag-on-name",
         edit("workflow: demo", "workflow: !!python/object/apply:os.system ['touch pwned']"), (), 2,
         ("Workflowfile:2:11, key 'workflow'", "could not determine a constructor",
          "hint: remove the tag"), check=absent("pwned")),
    # ---- stage records (DESIGN §5: unreadable or other format → the stage runs fresh, exit 0)
    Case("record-truncated", record_text("b", lambda raw: raw[:200]), ("--json",), 0,
         ("b: run: stage.json is not valid JSON",), B_RERUN,
         all_of(reasons("b", "record_unreadable"), results(b="completed", c="up_to_date"),
                same_as_template(*B_BATCH_FILES))),
    Case("record-garbage-bytes", record_text("b", b"\x00\xff\xfe garbage \x80"), ("--json",), 0,
         ("b: run: stage.json is not valid JSON",), B_RERUN,
         all_of(reasons("b", "record_unreadable"), results(b="completed", c="up_to_date"))),
    Case("record-newer-format", record("b", lambda r: r.update(format=99)), ("--json",), 0,
         ("stage.json has record format 99; this dd-build reads 1",), B_RERUN,
         all_of(reasons("b", "format_changed"), results(b="completed", c="up_to_date"))),
    Case("record-json-list", record_text("b", b"[1, 2, 3]"), ("--json",), 0,
         ("stage.json has no record format",), B_RERUN, reasons("b", "record_unreadable")),
    Case("record-wrong-shape-batches", record("b", lambda r: r.update(batches={"0": "x"})),
         ("--json",), 0, ("stage.json is incomplete",), B_RERUN,
         reasons("b", "record_unreadable")),
    Case("record-unknown-status", record("b", lambda r: r.update(status="paused")), ("--json",), 0,
         ("stage.json has an unknown status 'paused'",), B_RERUN,
         reasons("b", "record_unreadable")),
    Case("record-time-as-text-status",  # fixed: `status` crashed formatting the time
         record("b", lambda r: r.update(finished_at="yesterday")), ("status",), 0, (), (),
         stdout_has("b  out of date (run)", "stage.json is incomplete")),
    Case("record-batch-points-at-project-file",
         record("b", lambda r: r["batches"][0].update(file="../../code/stages.py")), ("--json",),
         0, ("b: resume",), (*B_RERUN, B_BATCH_FILES[0]),
         all_of(reasons("b", "output_modified", action="resume"), calls("b 0"),
                same_as_template("code/stages.py", *B_BATCH_FILES))),
    Case("record-is-a-folder",  # fixed: the failed-record write hid the first error (exit 2)
         replace_with_folder(f"{ART}/b/stage.json"), ("--json",), 1,
         ("✗ b: failed", "cannot write its output", "Is a directory",
          "its failed record could not be written either", "hint: fix the cause"),
         BOOKKEEPING, results(a="up_to_date", b="failed", c="not_run")),
    # ---- data files
    Case("batch-garbage-same-stat",  # fixed: an uncaught ArrowInvalid traceback
         CORRUPT_A1, ("--json", "--force", "b"), 1,
         ("✗ b: failed", f"cannot read {ART}/a/batches/batch-000001.parquet (the output of stage 'a')",
          "hint: rebuild it: dd-build --force a"), B_FAILS,
         all_of(results(a="up_to_date", b="failed", c="not_run"),
                failed_untouched("b", "batch-000001.parquet", "--force a"))),
    Case("batch-garbage-transform-input", CORRUPT_A1, ("--json", "--force", "c"), 1,
         ("✗ c: failed", f"{ART}/a/batches/batch-000001.parquet", "dd-build --force a"),
         (*C_FAILS, f"{ART}/c/batches/*"), results(c="failed")),
    Case("batch-garbage-show", CORRUPT_A1, ("show", "a"), 2,
         (f"cannot read {ART}/a/batches/batch-000001.parquet", "hint: rebuild it: dd-build --force a")),
    Case("batch-garbage-export", CORRUPT_A1, ("export", "a", "a.csv"), 2,
         (f"{ART}/a/batches/batch-000001.parquet", "dd-build --force a"), check=absent("a.csv")),
    Case("batch-truncated", truncate(f"{ART}/a/batches/batch-000001.parquet"), ("--json",), 0,
         ("a: resume", "output file a/batches/batch-000001.parquet"),  # batch paths are
         # recorded relative to artifacts/demo/
         (f"{ART}/a/stage.json", f"{ART}/a/batches/batch-000001.parquet", *BOOKKEEPING),
         all_of(reasons("a", "output_modified", action="resume"), calls("a 1"),
                results(b="up_to_date", c="up_to_date"),
                same_as_template(f"{ART}/a/batches/batch-000001.parquet"))),
    Case("seed-file-garbage-parquet", both(
        write("data/seed.parquet", b"PAR1 this is not parquet PAR1"),
        lambda p: p.write("Workflowfile", CHAIN + SEED_STAGE.format(seed="data/seed.parquet"))),
        ("--json", "d"), 1, ("✗ d: failed", "cannot read data/seed.parquet", "hint: replace the file"),
        (f"{ART}/d/*", *BOOKKEEPING), results(d="failed")),
    Case("seed-file-ragged-csv", both(
        write("data/seed.csv", "id,name\n1,x\n2,y,extra\n"),
        lambda p: p.write("Workflowfile", CHAIN + SEED_STAGE.format(seed="data/seed.csv"))),
        ("--json", "d"), 1, ("✗ d: failed", "cannot read data/seed.csv", "hint:"),
        (f"{ART}/d/*", *BOOKKEEPING), results(d="failed")),
    # ---- override files
    Case("override-text-as-parquet", write("review.parquet", "looks fine to me\n"),
         ("override", "b", "review.parquet"), 2,
         ("review.parquet is not a readable parquet file", "hint: export with"), LOCK),
    Case("override-csv", write("review.csv", "id,value\n1,2\n"), ("override", "b", "review.csv"), 2,
         ("review.csv is not a readable parquet file", "hint: export with"), LOCK),
    Case("override-missing-columns", parquet_file("review.parquet", {"zzz": [1]}),
         ("override", "b", "review.parquet"), 2,
         ("review.parquet lacks the columns id, value, tag, seed_id", "hint: keep every column"),
         LOCK),
    Case("override-missing-file", nothing, ("override", "b", "nope.parquet"), 2,
         ("no file nope.parquet", "hint: name the reviewed parquet file"), LOCK),
    Case("override-unknown-stage", parquet_file("review.parquet", {"id": [1]}),
         ("override", "bb", "review.parquet"), 2,
         ("override names no stage 'bb'", "did you mean `b`?")),
    # ---- the command line
    Case("file-option-missing", nothing, ("-f", "nope.yaml"), 2,
         ("no Workflowfile at nope.yaml", "hint: -f names a file relative to the working folder")),
    Case("file-option-a-folder", nothing, ("-f", "code"), 2,
         ("the Workflowfile code is a folder", "hint:")),
    Case("directory-option-missing", nothing, ("-C", "nowhere"), 2,
         ("-C nowhere: no such folder", "hint: name the project folder")),
    Case("directory-option-a-file", nothing, ("-C", "Workflowfile"), 2,
         ("-C Workflowfile:", "hint: name the project folder")),
    Case("target-like-a-command", nothing, ("stutus",), 2,
         ("target names no stage 'stutus'", "did you mean the command `dd-build status`?")),
    Case("resume-sometimes", nothing, ("--resume", "sometimes"), 2,
         ("argument --resume: invalid choice: 'sometimes'", "choose from")),
    Case("force-unknown-stage", nothing, ("--force", "zz"), 2,
         ("--force zz: no such stage", "hint: name a stage listed by `dd-build -n`")),
    Case("force-outside-targets", nothing, ("a", "--force", "c"), 2,
         ("--force c: no such stage among the stages this build needs", "hint:")),
    Case("rerun-from-unknown-stage", nothing, ("--rerun-from", "zz"), 2,
         ("--rerun-from zz: no such stage", "hint:")),
    Case("show-unknown-stage", nothing, ("show", "zz"), 2,
         ("show names no stage 'zz'", "hint: run `dd-build dag` to list stages")),
    # A stage name like a command's (`nosuch` ~ `touch`) is not taken for a misspelt command
    # outside a build's targets, nor in them unless it is close.
    Case("show-unknown-stage-like-a-command", nothing, ("show", "nosuch"), 2,
         ("show names no stage 'nosuch'", "hint: run `dd-build dag` to list stages")),
    Case("touch-unknown-stage-like-a-command", nothing, ("touch", "nosuch"), 2,
         ("touch names no stage 'nosuch'", "hint: run `dd-build dag` to list stages")),
    Case("target-unknown-stage-like-a-command", nothing, ("nosuch",), 2,
         ("target names no stage 'nosuch'", "hint: run `dd-build dag` to list stages")),
    Case("show-negative-rows", nothing, ("show", "b", "-n", "-3"), 2,
         ("argument -n/--rows: must be 0 or more, got -3",)),
    Case("export-unknown-stage", nothing, ("export", "bb", "out.csv"), 2,
         ("export names no stage 'bb'", "did you mean `b`?"), check=absent("out.csv")),
    Case("export-unsupported-extension", nothing, ("export", "b", "out.xlsx"), 2,
         ("cannot export to out.xlsx: unsupported format '.xlsx'",
          "hint: end the path with one of .parquet, .csv, .jsonl"), check=absent("out.xlsx")),
    Case("export-into-missing-folder", nothing, ("export", "b", "nope/out.csv"), 2,
         ("cannot export to nope/out.csv: no folder nope", "hint: create it first"),
         check=absent("nope")),
    Case("dag-unknown-format", nothing, ("dag", "--format", "png"), 2,
         ("argument --format: invalid choice: 'png'",)),
]


# ---------------------------------------------------------------- the test

TEMPLATE_ROOT: list[Path] = []  # the built template, for same_as_template


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CHAIN built once; each case copies it (copy2 keeps mtimes, so it stays up to date)."""
    proj = Project(tmp_path_factory.mktemp("hostile") / "template")
    proj.write("code/stages.py", STAGE_CODE)
    proj.write("Workflowfile", CHAIN)
    built = proj.run()
    assert built.code == 0, built.stderr
    proj.clear_calls()
    TEMPLATE_ROOT[:] = [proj.root]
    return proj.root


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file, but the compiled workflow (a cache any command that reads the Workflowfile
    may write: tests/test_nbcompile_*.py check it)."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
            and not p.relative_to(root).as_posix().startswith("artifacts/.compiled/")}


def _run(project: Project, case: Case) -> tuple[Result, float]:
    def cap_memory() -> None:  # enough for Python, yaml and networkx; not for a blow-up
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "buildtool", *case.args], cwd=project.root,
                          env=project.env(), capture_output=True, encoding="utf-8",
                          errors="replace", timeout=case.timeout,
                          preexec_fn=cap_memory if case.memory_cap else None)
    return Result(proc.returncode, proc.stdout, proc.stderr), time.monotonic() - started


def test_template_copy_is_up_to_date(template: Path, tmp_path: Path) -> None:
    """The premise of every case: an undamaged copy is a null build."""
    project = Project(tmp_path / "proj")
    shutil.copytree(template, project.root, symlinks=True)
    before = _snapshot(project.root)
    result = project.run("--json")
    assert result.code == 0, result.stderr
    assert [s["result"] for s in result.json()["stages"]] == ["up_to_date"] * 3
    after = _snapshot(project.root)
    assert {k: v for k, v in after.items() if k not in BOOKKEEPING} == \
        {k: v for k, v in before.items() if k not in BOOKKEEPING}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_hostile_input(template: Path, tmp_path: Path, case: Case) -> None:
    project = Project(tmp_path / "proj")
    shutil.copytree(template, project.root, symlinks=True)
    case.damage(project)
    before = _snapshot(project.root)

    result, elapsed = _run(project, case)

    shown = f"exit {result.code} after {elapsed:.1f}s\nstdout:\n{result.stdout[-3000:]}\n" \
            f"stderr:\n{result.stderr[-3000:]}"
    assert result.code == case.code, shown
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, shown
    for text in case.stderr:
        assert text in result.stderr, f"{text!r} not in stderr\n{shown}"
    after = _snapshot(project.root) if project.root.is_dir() else {}
    for rel, data in before.items():
        if any(fnmatch.fnmatch(rel, pattern) for pattern in case.rewrites):
            continue
        assert rel in after, f"{rel} was deleted\n{shown}"
        assert after[rel] == data, f"{rel} was changed\n{shown}"
    leftovers = [rel for rel in after if ".tmp." in rel.rsplit("/", 1)[-1]]
    assert not leftovers, f"temp files left behind: {leftovers}"
    if case.check is not None:
        case.check(project, result)


def test_catalogue_size() -> None:
    """Issue 4 asks for at least 40 hostile inputs; ids are unique so each reads on its own."""
    ids = [c.id for c in CASES]
    assert len(ids) >= 45 and len(set(ids)) == len(ids)
