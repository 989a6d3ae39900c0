"""Message hygiene (issue 9): every user error and failure names its stage once, and every
count agrees with its noun (`1 batch`, `2 batches`, `1 row`).

One table of cases, each a small project and the commands that make dd-build report a
problem; every line dd-build prints (stderr, stdout, the `--json` error message and the
status that follows) is checked. The checks look only at dd-build's own words (`stage 'x'`,
counts), never at a dependency's wording.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Project, Result

CODE = '''
import os
from pathlib import Path

import pyarrow as pa


def rows(ctx):
    if os.environ.get("FAIL_AT") == f"{ctx.stage_name}:{ctx.batch_index}":
        raise RuntimeError("boom")
    return [{"id": ctx.offset + i, "tags": ["x"]} for i in range(ctx.size)]


def one(ctx):
    return [{"id": 0, "tags": ["x"]}]


def join(ctx):
    if os.environ.get("FAIL_AT") == f"{ctx.stage_name}:0":
        raise RuntimeError("boom")
    return pa.table({"n": [1]})


def cb_raises(ctx):
    raise ValueError("callback boom")


def cb_number(ctx):
    return 5


def cb_missing(ctx):
    return str(Path(ctx.out_dir) / "nope.parquet")


def cb_text(ctx):
    path = Path(ctx.out_dir) / "x.txt"
    path.write_text("x")
    return str(path)


def exits(ctx):
    raise SystemExit(3)
'''

BASE = """
workflow: demo
stages:
  a:
    generate: code/s.py:rows
    num_records: 4
    batch_size: 2
{extra}
"""


@dataclass
class Case:
    name: str
    extra: str = ""  # stage entries added under `stages:` (indented by two spaces)
    before: tuple[tuple[str, ...], ...] = ()  # commands run first (their output is checked too)
    args: tuple[str, ...] = ()
    code: int | None = None  # the exit code the last command must have (None: not 0)
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Project], None] | None = None


def stage(name: str, body: str) -> str:
    lines = [f"  {name}:"] + [f"    {line}" for line in body.strip().splitlines()]
    return "\n".join(lines)


def parquet(rel: str, columns: dict[str, list[object]]) -> Callable[[Project], None]:
    def write(project: Project) -> None:
        (project.root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), project.root / rel)
    return write


def text(rel: str, content: str) -> Callable[[Project], None]:
    return lambda project: project.write(rel, content) and None


GEN_B = "generate: code/s.py:rows\nseed: a"
RUN_TXT = "run: echo hi > {outputs}\noutputs: [notes.md]"

CASES = [
    # ---- stages that fail while they run
    Case("generate-raises", args=("--json",), code=1, env={"FAIL_AT": "a:1"}),
    Case("generate-exits", stage("b", "generate: code/s.py:exits\nnum_records: 1"), code=1),
    Case("transform-raises", stage("t", "transform: code/s.py:join\ninputs: [a]"), code=1,
         env={"FAIL_AT": "t:0"}),
    Case("run-exits-nonzero", stage("r", "run: exit 3\noutputs: [o.txt]"), code=1),
    Case("run-writes-nothing", stage("r", "run: 'true'\noutputs: [o.txt]"), code=1),
    Case("callback-raises", stage("b", GEN_B + "\non_success: code/s.py:cb_raises"), code=1),
    Case("callback-returns-a-number", stage("b", GEN_B + "\non_success: code/s.py:cb_number"),
         code=1),
    Case("callback-returns-a-missing-path",
         stage("b", GEN_B + "\non_success: code/s.py:cb_missing"), code=1),
    Case("callback-returns-not-parquet", stage("b", GEN_B + "\non_success: code/s.py:cb_text"),
         code=1),
    Case("filter-on-an-unknown-column",
         stage("b", GEN_B + "\nprocessors: [{filter: 'nope > 1'}]"), code=1),
    Case("drop-an-unknown-column", stage("b", GEN_B + "\nprocessors: [{drop: [nope]}]"), code=1),
    Case("empty-selected-output", stage("b", GEN_B + "\nprocessors: [{filter: 'id < 0'}]"),
         code=1),
    Case("export-copy-cannot-hold", stage("b", GEN_B + "\noutputs: [out/b.csv]"), code=1),
    Case("module-fails-at-import", stage("b", "generate: code/bad.py:rows\nnum_records: 1"),
         code=1, setup=text("code/bad.py", "raise ImportError('nope')\ndef rows(ctx):\n"
                                            "    return []\n")),
    # ---- commands on stages
    Case("show-unknown-stage", args=("show", "aa"), code=2),
    Case("show-never-built", args=("show", "a"), code=2),
    Case("show-not-a-table", stage("r", RUN_TXT), before=(("r",),), args=("show", "r"), code=2),
    Case("show-a-failed-stage", before=(("-q",),), args=("show", "a"), code=2,
         env={"FAIL_AT": "a:1"}),
    Case("export-unknown-format", before=((),), args=("export", "a", "a.txt"), code=2),
    Case("export-no-folder", before=((),), args=("export", "a", "nope/a.csv"), code=2),
    Case("export-cannot-hold", before=((),), args=("export", "a", "a.csv"), code=2),
    Case("override-missing-file", before=((),), args=("override", "a", "nope.parquet"), code=2),
    Case("override-unreadable", before=((),), args=("override", "a", "r.parquet"), code=2,
         setup=text("r.parquet", "not parquet")),
    Case("override-missing-columns", before=((),), args=("override", "a", "r.parquet"), code=2,
         setup=parquet("r.parquet", {"zzz": [1]})),
    Case("override-incompatible-type", before=((),), args=("override", "a", "r.parquet"),
         code=2, setup=parquet("r.parquet", {"id": ["x"], "tags": [["x"]]})),
    Case("override-not-a-table", stage("r", RUN_TXT), before=(("r",),),
         args=("override", "r", "r.parquet"), code=2, setup=parquet("r.parquet", {"id": [1]})),
    Case("release-without-override", before=((),), args=("override", "--release", "a"),
         code=2),
    Case("clean-a-removed-stage", stage("gone", RUN_TXT), before=((),),
         setup=text("Workflowfile", BASE.format(extra="")), args=("clean", "gone"), code=2),
    Case("force-unknown-stage", args=("--force", "aa"), code=2),
    Case("rerun-from-unknown-stage", args=("--rerun-from", "aa", "-n"), code=2),
    Case("unknown-target", args=("aa",), code=2),
    # ---- the Workflowfile
    Case("unknown-stage-key", stage("b", GEN_B + "\nnum_record: 3"), code=2),
    Case("two-kinds", stage("b", GEN_B + "\ntransform: code/s.py:join"), code=2),
    Case("seed-names-no-stage", stage("b", "generate: code/s.py:rows\nseed: zz"), code=2),
    Case("cycle", stage("b", "generate: code/s.py:rows\nseed: c") + "\n"
         + stage("c", "generate: code/s.py:rows\nseed: b"), code=2),
    Case("unknown-param-placeholder", stage("r", "run: echo {params.x} > {outputs}\n"
                                                 "outputs: [o.txt]"), code=2),
    Case("missing-function", stage("b", "generate: code/s.py:nope\nnum_records: 1")),
    Case("missing-code-file", stage("b", "generate: code/nope.py:rows\nnum_records: 1"), code=2),
    Case("batch-size-zero", stage("b", GEN_B + "\nbatch_size: 0"), code=2),
    Case("params-not-a-mapping", stage("b", GEN_B + "\nparams: [1]"), code=2),
]


_STAGE = re.compile(r"stage '([^']+)'")
_RESULT = re.compile(r"^[✗✓=○▶-] (\S+?): ")
_HEADER = re.compile(r"^(\S+)  ")  # a stage's line in status and --explain


def doubled(text: str) -> list[str]:
    """Lines that name a stage a second time where it is already named: twice in one line,
    or on the line under a line that names it (`✗ b: failed` / `stage 'b': …`, a status
    line and its reasons)."""
    found = []
    lines = text.splitlines()
    current: str | None = None
    for i, line in enumerate(lines):
        names = _STAGE.findall(line)
        if any(names.count(n) > 1 for n in names):
            found.append(line)
        if (m := _RESULT.match(line)) and i + 1 < len(lines) and \
                lines[i + 1].lstrip().startswith(f"stage '{m.group(1)}'"):
            found.append(f"{line} / {lines[i + 1]}")
        if (h := _HEADER.match(line)) and not line.startswith(("warning", "hint")):
            current = h.group(1)
        elif current and line.startswith(" ") and f"stage '{current}'" in line:
            found.append(f"{current}: {line}")
    return found


# A count and the noun it counts: `1 rows`, `2 batch` are wrong.
_COUNT = re.compile(r"\b(\d+) (?:of \d+ )?(row|batch|stage|line|file|column|input|output|"
                    r"copy|attempt|error)(es|s)?\b")


def disagreeing(text: str) -> list[str]:
    found = []
    for m in _COUNT.finditer(text):
        count, plural = int(m.group(1)), bool(m.group(3))
        if "of" in m.group(0).split():  # `1 of 2 batches`: the noun agrees with the total
            count = int(m.group(0).split()[2])
        if plural != (count != 1):
            found.append(m.group(0))
    return found


def check(result: Result, where: str) -> None:
    for stream in (result.stdout, result.stderr):
        assert doubled(stream) == [], (where, stream)
        assert disagreeing(stream) == [], (where, stream)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_message_names_its_stage_once(project: Project, case: Case) -> None:
    project.write("code/s.py", CODE)
    project.write("Workflowfile", BASE.format(extra=case.extra))
    for args in case.before:
        check(project.run(*args, **case.env), f"{case.name}: {args}")
    if case.setup is not None:
        case.setup(project)
    result = project.run(*case.args, **case.env)
    assert result.code == case.code if case.code is not None else result.code != 0, \
        (result.stdout, result.stderr)
    check(result, case.name)
    json_result = project.run(*case.args, "--json", **case.env)
    if json_result.stdout.strip():
        error = json_result.json().get("error")
        if error:
            assert doubled(error["message"]) == [], error
            assert disagreeing(error["message"]) == [], error
        for entry in json_result.json().get("stages", []):
            assert doubled(entry.get("error") or "") == [], entry
    if result.code == 1:  # a failed stage: status explains it
        check(project.run("status"), f"{case.name}: status")


def test_the_checks_can_fail() -> None:
    assert doubled("stage 'report': stage 'report' has no output")
    assert doubled("✗ report: failed\n    stage 'report': command exited")
    assert doubled("b  out of date (run)\n     - failed last time (stage 'b': boom)")
    assert not doubled("c  run\n     - upstream stage 'b' will run first")
    assert disagreeing("(1 rows)") == ["1 rows"] and disagreeing("2 batch kept") == ["2 batch"]
    assert disagreeing("1 of 2 batch") == ["1 of 2 batch"]
    assert disagreeing("1 of 1 batch done; 0 rows, 1 row, 3 stages") == []
