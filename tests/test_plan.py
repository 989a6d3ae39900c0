"""The pure planner, scenario by scenario, on in-memory fakes (no disk).

Each scenario builds a stage's record (what was built) and its facts (what the probe sees now)
with the small factories below, where every default means "unchanged since the last build",
then checks the decision: action, every reason code in order, batches kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from buildtool.fingerprint import FileState
from buildtool.plan import (
    Decision,
    Options,
    StageFacts,
    Upstream,
    collect_reasons,
    decide,
    plan,
    strict_refusals,
)
from buildtool.records import BatchEntry, Output, RecordRead, StageRecord

# ---------------------------------------------------------------------------------------------
# Factories: a stage "s" as recorded and as seen now. Defaults mean "nothing changed".


def digest(tag: str) -> str:
    return f"sha256:{tag}"


def fstate(path: str, tag: str = "v1", size: int = 10, mtime_ns: int = 1) -> FileState:
    return FileState(path, size, mtime_ns, digest(tag))


def spec(kind: str = "generate", **changes: Any) -> dict[str, Any]:
    """A canonical spec as `canonical_spec` produces it (keys sorted, JSON values)."""
    base: dict[str, Any] = {"kind": kind, kind: "code/stages.py:rows", "params": {"tag": "x"},
                            "inputs": [], "outputs": []}
    if kind == "generate":
        base.update(num_records=20, batch_size=5, sampling="ordered", seed=None)
    if kind != "run":
        base.update(processors=[], on_success=None, on_success_version=None, allow_empty=False)
    base.update(changes)
    return dict(sorted(base.items()))


def batch(stage: str, index: int, tag: str | None = None) -> BatchEntry:
    return BatchEntry(index, f"{stage}/batches/batch-{index:06d}.parquet", 5, 100, 1,
                      digest(tag or f"{stage}-b{index}"))


CODE = {"code/stages.py": fstate("code/stages.py", "code1")}


def record(name: str = "s", *, kind: str = "generate", status: str = "completed",
           spec_: dict[str, Any] | None = None, code: dict[str, FileState] | None = None,
           file_inputs: dict[str, FileState] | None = None,
           stage_inputs: dict[str, str] | None = None, batches: int | None = None,
           done: int | None = None, rows: int | None = None, error: str | None = None,
           num_records: int | None = 20) -> StageRecord:
    """A record of `name`. Generate stages list `done` of `batches` batch files (default 4/4)."""
    total = (4 if batches is None else batches) if kind == "generate" else None
    listed = tuple(batch(name, i) for i in range(total if done is None else done)) if total else ()
    if kind == "generate":
        output = Output("batches", sum(b.rows for b in listed), digest(f"{name}-out"))
    else:
        output = Output("files", rows, digest(f"{name}-out"), (fstate(f"out/{name}.parquet"),))
    finished = status in ("completed", "completed_empty")
    return StageRecord(
        stage=name, status=status, kind=kind, spec=spec_ if spec_ is not None else spec(kind),
        spec_fingerprint="sha256:fp", code=dict(CODE if code is None else code),
        file_inputs=dict(file_inputs or {}), stage_inputs=dict(stage_inputs or {}),
        run_id="r1", batches=listed, batches_total=total,
        num_records=num_records if kind == "generate" else None,
        output=output if finished else None, error=error,
    )


def facts(rec: StageRecord | None, name: str | None = None, *, kind: str | None = None,
          spec_: dict[str, Any] | None = None, code: dict[str, FileState] | None = None,
          file_inputs: dict[str, FileState] | None = None,
          states: Mapping[str, str] | None = None, problem: tuple[str, str] | None = None
          ) -> StageFacts:
    """What the probe would see now. Defaults copy the record: code, inputs, files all ok.

    `states` overrides single output files: {"s/batches/batch-000002.parquet": "missing"}.
    """
    name = name or (rec.stage if rec else "s")
    kind = kind or (rec.kind if rec else "generate")
    damaged = {path: state for path, state in (states or {}).items() if state != "ok"}
    return StageFacts(
        name=name, kind=kind,
        spec=spec_ if spec_ is not None else (dict(rec.spec) if rec else spec(kind)),
        fingerprint="sha256:fp",
        code=dict(code if code is not None else (rec.code if rec else CODE)),
        file_inputs=dict(file_inputs if file_inputs is not None
                         else (rec.file_inputs if rec else {})),
        read=RecordRead(record=None if problem else rec, problem=problem),
        damaged=damaged,
    )


def bfile(index: int, stage: str = "s") -> str:
    return batch(stage, index).file


# ---------------------------------------------------------------------------------------------
# decide(): one stage, its upstreams as Upstream views.


@dataclass
class Case:
    facts: StageFacts
    action: str
    codes: list[str]
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    options: Options = field(default_factory=Options)
    keep: tuple[int, ...] = ()
    # (reason index, detail key, expected value) triples
    details: list[tuple[int, str, Any]] = field(default_factory=list)
    check: Callable[[Decision], None] | None = None


A_OUT = digest("a-out")
INPUT_FILE = "prompts/judge.txt"
RUNNING = record(status="running", done=3, batches=10)


def _rows_and_total(rows: int | None, total: int | None) -> Callable[[Decision], None]:
    def check(d: Decision) -> None:
        assert (d.rows, d.batches_total) == (rows, total)
    return check


def _messages_mention(*words: str) -> Callable[[Decision], None]:
    def check(d: Decision) -> None:
        text = " | ".join(r.message for r in d.reasons)
        for word in words:
            assert word in text, (word, text)
    return check


DECIDE_CASES = [
    pytest.param(Case(facts(None), "run", ["no_record"]), id="no-record"),
    pytest.param(Case(facts(record(rows=20)), "up_to_date", [], check=_rows_and_total(20, 4)),
                 id="up-to-date"),
    pytest.param(Case(facts(record(), spec_=spec(params={"tag": "y"})), "run", ["spec_changed"],
                      details=[(0, "key", "params.tag"), (0, "old", "x"), (0, "new", "y")],
                      check=_messages_mention("params.tag", "x → y")),
                 id="spec-param-changed-dotted-key"),
    pytest.param(Case(facts(record(spec_=spec(params={"llm": {"temp": 0.1, "model": "m"}})),
                            spec_=spec(params={"llm": {"temp": 0.7, "model": "m"}})),
                      "run", ["spec_changed"],
                      details=[(0, "key", "params.llm.temp"), (0, "old", 0.1), (0, "new", 0.7)]),
                 id="spec-nested-param-changed"),
    pytest.param(Case(facts(record(), spec_=spec(params={"tag": "x", "extra": 3})),
                      "run", ["spec_changed"],
                      details=[(0, "key", "params.extra"), (0, "old", None), (0, "new", 3)],
                      check=_messages_mention("(unset)")),
                 id="spec-param-added"),
    pytest.param(Case(facts(record(), spec_=spec(params={})), "run", ["spec_changed"],
                      details=[(0, "key", "params.tag"), (0, "old", "x"), (0, "new", None)]),
                 id="spec-param-removed"),
    pytest.param(Case(facts(record(), spec_=spec(num_records=40, batch_size=10)),
                      "run", ["spec_changed", "spec_changed"],
                      details=[(0, "key", "batch_size"), (0, "old", 5), (0, "new", 10),
                               (1, "key", "num_records"), (1, "old", 20), (1, "new", 40)]),
                 id="spec-two-keys-both-listed"),
    pytest.param(Case(
        facts(record(file_inputs={INPUT_FILE: fstate(INPUT_FILE)}, stage_inputs={"a": A_OUT}),
              spec_=spec(sampling="shuffle"),
              code={"code/stages.py": fstate("code/stages.py", "code2")},
              file_inputs={INPUT_FILE: fstate(INPUT_FILE, "v2")},
              states={bfile(1): "missing"}),
        "run", ["spec_changed", "code_changed", "input_changed", "input_changed",
                "output_missing"],
        upstreams={"a": Upstream(digest("a-out-2"))},
        details=[(0, "key", "sampling"), (1, "file", "code/stages.py"),
                 (2, "input", INPUT_FILE), (3, "input", "a"), (4, "file", bfile(1))]),
        id="several-reasons-all-listed"),
    pytest.param(Case(facts(record(), code={"code/stages.py": fstate("code/stages.py", "c2")}),
                      "run", ["code_changed"], details=[(0, "file", "code/stages.py")]),
                 id="code-file-changed"),
    pytest.param(Case(facts(record(), code={**CODE, "code/util.py": fstate("code/util.py")}),
                      "run", ["code_changed"], details=[(0, "file", "code/util.py")],
                      check=_messages_mention("is new")),
                 id="code-file-added"),
    pytest.param(Case(facts(record(code={**CODE, "code/util.py": fstate("code/util.py")}),
                            code=CODE),
                      "run", ["code_changed"], details=[(0, "file", "code/util.py")],
                      check=_messages_mention("no longer used")),
                 id="code-file-removed"),
    pytest.param(Case(facts(record(code={"code/stages.py": fstate("code/stages.py", mtime_ns=1)}),
                            code={"code/stages.py": fstate("code/stages.py", mtime_ns=99)}),
                      "up_to_date", []),
                 id="code-stats-moved-same-content"),
    pytest.param(Case(facts(record(file_inputs={INPUT_FILE: fstate(INPUT_FILE)}),
                            file_inputs={INPUT_FILE: fstate(INPUT_FILE, "v2")}),
                      "run", ["input_changed"], details=[(0, "input", INPUT_FILE)]),
                 id="file-input-changed"),
    pytest.param(Case(facts(record(), file_inputs={INPUT_FILE: fstate(INPUT_FILE)}),
                      "run", ["input_changed"], details=[(0, "input", INPUT_FILE)]),
                 id="file-input-added"),
    pytest.param(Case(facts(record(kind="transform", stage_inputs={"a": A_OUT})),
                      "run", ["upstream_will_run"], upstreams={"a": Upstream(None)},
                      details=[(0, "input", "a")]),
                 id="upstream-pending-will-run"),
    pytest.param(Case(facts(RUNNING), "resume", ["upstream_will_run", "incomplete"],
                      upstreams={"a": Upstream(None)}, keep=(0, 1, 2)),
                 id="running-with-pending-upstream-resumes"),
    pytest.param(Case(facts(record(stage_inputs={"a": A_OUT})), "run", ["input_changed"],
                      upstreams={"a": Upstream(digest("a-out-2"), 20)},
                      details=[(0, "input", "a")]),
                 id="upstream-digest-differs"),
    pytest.param(Case(facts(record(stage_inputs={})), "run", ["input_changed"],
                      upstreams={"a": Upstream(A_OUT, 20)}, check=_messages_mention("new input")),
                 id="upstream-new-input"),
    pytest.param(Case(facts(record(stage_inputs={"a": A_OUT})), "up_to_date", [],
                      upstreams={"a": Upstream(A_OUT, 20)}),
                 id="early-cutoff-same-upstream-digest"),
    pytest.param(Case(facts(RUNNING), "resume", ["incomplete"], keep=(0, 1, 2),
                      details=[(0, "batches_done", 3)], check=_messages_mention("3 of 10")),
                 id="running-resumes-keeping-batches"),
    pytest.param(Case(facts(record(status="interrupted", done=3, batches=10),
                            states={bfile(1): "missing"}),
                      "resume", ["incomplete"], keep=(0, 2), details=[(0, "batches_done", 2)]),
                 id="interrupted-resumes-keeping-ok-batches-only"),
    pytest.param(Case(facts(record(status="failed", done=2, error="boom at s:2")),
                      "resume", ["failed_before"], keep=(0, 1),
                      details=[(0, "error", "boom at s:2")], check=_messages_mention("boom")),
                 id="failed-resumes"),
    pytest.param(Case(facts(RUNNING, spec_=spec(params={"tag": "y"})),
                      "run", ["spec_changed", "incomplete"]),
                 id="resumable-but-spec-changed-runs-fresh"),
    pytest.param(Case(facts(RUNNING, code={"code/stages.py": fstate("code/stages.py", "c2")}),
                      "run", ["code_changed", "incomplete"]),
                 id="resumable-but-code-changed-runs-fresh"),
    pytest.param(Case(facts(record(status="running", stage_inputs={"a": A_OUT}, done=2)),
                      "run", ["input_changed", "incomplete"],
                      upstreams={"a": Upstream(digest("a-out-2"))}),
                 id="resumable-but-upstream-changed-runs-fresh"),
    pytest.param(Case(facts(record(status="interrupted", done=0)), "run", ["incomplete"]),
                 id="interrupted-with-no-batches-runs"),
    pytest.param(Case(facts(record(), states={bfile(2): "missing"}), "resume",
                      ["output_missing"], keep=(0, 1, 3), details=[(0, "file", bfile(2))]),
                 id="completed-missing-batch-resumes-keeping-others"),
    pytest.param(Case(facts(record(), states={bfile(0): "modified"}), "resume",
                      ["output_modified"], keep=(1, 2, 3), details=[(0, "file", bfile(0))]),
                 id="completed-modified-batch-resumes-keeping-others"),
    pytest.param(Case(facts(record(kind="transform", rows=3),
                            states={"out/s.parquet": "missing"}),
                      "run", ["output_missing"]),
                 id="transform-output-missing-runs"),
    pytest.param(Case(facts(record(), problem=("record_unreadable", "not valid JSON")), "run",
                      ["record_unreadable"]),
                 id="record-unreadable"),
    pytest.param(Case(facts(None, problem=("format_changed", "record format 99")), "run",
                      ["format_changed"]),
                 id="format-changed"),
    pytest.param(Case(facts(record()), "run", ["forced"],
                      options=Options(forced={"s": "--force s"}),
                      details=[(0, "message", "--force s")]),
                 id="forced-up-to-date-stage"),
    pytest.param(Case(facts(RUNNING, spec_=spec(params={"tag": "y"})), "run",
                      ["forced", "spec_changed", "incomplete"],
                      options=Options(forced={"s": "--rerun-from a"})),
                 id="forced-keeps-its-other-reasons"),
    pytest.param(Case(facts(RUNNING), "run", ["forced", "incomplete"],
                      options=Options(forced={"s": "--force s"})),
                 id="forced-running-stage-does-not-resume"),
    pytest.param(Case(facts(record()), "run", ["forced"], options=Options(resume="never")),
                 id="resume-never-forces-up-to-date"),
    pytest.param(Case(facts(RUNNING), "run", ["forced", "incomplete"],
                      options=Options(resume="never"), check=_messages_mention("never")),
                 id="resume-never-forces-resumable"),
    pytest.param(Case(facts(record(kind="transform", status="failed", error="x")), "run",
                      ["failed_before"]),
                 id="transform-failed-before-runs"),
    pytest.param(Case(facts(record(spec_=spec(num_records=None, seed="stage:a"),
                                   stage_inputs={"a": A_OUT}, num_records=None),
                            spec_=spec(num_records=None, seed="stage:a", batch_size=10)),
                      "run", ["spec_changed", "input_changed"],
                      upstreams={"a": Upstream(digest("a-out-2"), 45)},
                      check=_rows_and_total(None, 5)),
                 id="batches-total-from-upstream-rows"),
    pytest.param(Case(facts(None, spec_=spec(num_records=30, batch_size=7)), "run",
                      ["no_record"], check=_rows_and_total(None, 5)),
                 id="batches-total-from-num-records"),
    pytest.param(Case(facts(None, spec_=spec(num_records=None, seed="stage:a")), "run",
                      ["no_record"], upstreams={"a": Upstream(None)},
                      check=_rows_and_total(None, None)),
                 id="batches-total-unknown-while-upstream-pending"),
]


@pytest.mark.parametrize("case", DECIDE_CASES)
def test_decide(case: Case) -> None:
    d = decide(case.facts, case.upstreams, case.options)
    assert d.stage == case.facts.name
    assert (d.action, d.codes) == (case.action, case.codes), [r.message for r in d.reasons]
    assert d.keep == case.keep
    for index, key, value in case.details:
        reason = d.reasons[index]
        actual = reason.message if key == "message" else reason.detail[key]
        assert actual == value, (reason, key)
    for reason in d.reasons:
        assert reason.message, reason
        assert reason.to_json()["code"] == reason.code
    if case.check:
        case.check(d)


def test_completed_stage_with_only_pending_upstream_is_planned_as_run() -> None:
    # Nothing of its own to resume: at build time it ends `up_to_date` (early cutoff) or `run`.
    d = decide(facts(record(stage_inputs={"a": A_OUT})), {"a": Upstream(None)}, Options())
    assert (d.action, d.codes, d.keep) == ("run", ["upstream_will_run"], ())


def test_collect_reasons_problem_hides_everything_else() -> None:
    f = facts(record(), spec_=spec(params={"tag": "y"}), problem=("record_unreadable", "bad"))
    assert [r.code for r in collect_reasons(f, {"a": Upstream(None)})] == ["record_unreadable"]


def test_reason_to_json_flattens_detail() -> None:
    d = decide(facts(record(), spec_=spec(params={"tag": "y"})), {}, Options())
    assert d.reasons[0].to_json() == {"code": "spec_changed", "message": d.reasons[0].message,
                                      "key": "params.tag", "old": "x", "new": "y",
                                      "step": "batches"}


# ---------------------------------------------------------------------------------------------
# plan(): a whole closure in order; a stage that will run is pending for its dependants.

CHAIN_UPS = {"a": (), "b": ("a",), "c": ("b",)}


def chain(a: StageFacts | None = None, b: StageFacts | None = None,
          c: StageFacts | None = None) -> dict[str, StageFacts]:
    """a -> b -> c, all up to date unless replaced."""
    return {
        "a": a or facts(record("a")),
        "b": b or facts(record("b", stage_inputs={"a": digest("a-out")})),
        "c": c or facts(record("c", kind="transform", rows=1, stage_inputs={"b": digest("b-out")})),
    }


def planned(world: dict[str, StageFacts], ups: Mapping[str, tuple[str, ...]] = CHAIN_UPS,
            options: Options | None = None) -> dict[str, tuple[str, list[str]]]:
    decisions = plan(list(world), world, ups, options or Options())
    assert [d.stage for d in decisions] == list(world)
    return {d.stage: (d.action, d.codes) for d in decisions}


PLAN_CASES = [
    pytest.param(chain(), {}, {"a": ("up_to_date", []), "b": ("up_to_date", []),
                               "c": ("up_to_date", [])}, id="all-up-to-date"),
    pytest.param(chain(a=facts(None, "a")), {},
                 {"a": ("run", ["no_record"]), "b": ("run", ["upstream_will_run"]),
                  "c": ("run", ["upstream_will_run"])}, id="pending-propagates-down-chain"),
    pytest.param(chain(b=facts(record("b", stage_inputs={"a": digest("a-out")}),
                               spec_=spec(params={"tag": "z"}))), {},
                 {"a": ("up_to_date", []), "b": ("run", ["spec_changed"]),
                  "c": ("run", ["upstream_will_run"])}, id="middle-change-pends-only-below"),
    pytest.param(chain(b=facts(record("b", status="running", done=2,
                                      stage_inputs={"a": digest("a-out")}))), {},
                 {"a": ("up_to_date", []), "b": ("resume", ["incomplete"]),
                  "c": ("run", ["upstream_will_run"])}, id="resumed-stage-is-pending-too"),
    pytest.param(chain(), {"b": "--force b"},
                 {"a": ("up_to_date", []), "b": ("run", ["forced"]),
                  "c": ("run", ["upstream_will_run"])}, id="force-one-stage"),
    pytest.param(chain(a=facts(record("a"), states={bfile(0, "a"): "missing"})), {},
                 {"a": ("resume", ["output_missing"]), "b": ("run", ["upstream_will_run"]),
                  "c": ("run", ["upstream_will_run"])}, id="missing-batch-upstream"),
]


@pytest.mark.parametrize(("world", "forced", "expected"), PLAN_CASES)
def test_plan_chain(world: dict[str, StageFacts], forced: dict[str, str],
                    expected: dict[str, tuple[str, list[str]]]) -> None:
    assert planned(world, options=Options(forced=forced)) == expected


def test_plan_fan_in_lists_only_the_pending_upstream() -> None:
    world = {
        "a": facts(record("a")),
        "b": facts(None, "b"),
        "c": facts(record("c", kind="transform", rows=1,
                          stage_inputs={"a": digest("a-out"), "b": digest("b-out")})),
    }
    decisions = plan(["a", "b", "c"], world, {"a": (), "b": (), "c": ("a", "b")}, Options())
    c = decisions[2]
    assert (c.action, c.codes) == ("run", ["upstream_will_run"])
    assert c.reasons[0].detail == {"input": "b"}


def test_plan_batches_total_from_up_to_date_upstream_rows() -> None:
    world = {
        "a": facts(record("a", batches=9)),  # 9 batches of 5 rows: 45 rows
        "b": facts(None, "b", spec_=spec(num_records=None, seed="stage:a", batch_size=10)),
    }
    decisions = plan(["a", "b"], world, {"a": (), "b": ("a",)}, Options())
    assert decisions[0].rows == 45
    assert (decisions[1].action, decisions[1].batches_total) == ("run", 5)


def test_batches_total_from_record_when_seed_rows_are_not_known() -> None:
    # A file seed: planning reads no data, so the recorded num_records gives the total.
    seed_file = "data/seed.parquet"
    rec = record("b", spec_=spec(num_records=None, seed=f"file:{seed_file}"), batches=9,
                 file_inputs={seed_file: fstate(seed_file)}, num_records=45)
    d = decide(facts(rec, states={bfile(3, "b"): "missing"}), {}, Options())
    assert (d.action, d.batches_total) == ("resume", 9)
    assert d.keep == (0, 1, 2, 4, 5, 6, 7, 8)


# ---------------------------------------------------------------------------------------------
# strict_refusals(): what `--resume always` refuses, and what it lets run.


def refused(world: dict[str, StageFacts], ups: Mapping[str, tuple[str, ...]] = CHAIN_UPS,
            options: Options | None = None) -> dict[str, str]:
    decisions = plan(list(world), world, ups, options or Options())
    return {d.stage: reason.code for d, reason in strict_refusals(decisions, ups)}


RUNNING_A = facts(record("a", status="running", done=2))

STRICT_CASES = [
    pytest.param(chain(), {}, {}, id="null-build-allowed"),
    pytest.param(chain(a=facts(None, "a"), b=facts(None, "b"), c=facts(None, "c", kind="transform")),
                 {}, {"a": "no_record"}, id="no-prior-build-refused"),
    pytest.param(chain(a=RUNNING_A,
                       b=facts(record("b", stage_inputs={"a": digest("a-out")}),
                               spec_=spec(params={"tag": "changed"}))),
                 {}, {"b": "spec_changed"}, id="own-spec-change-refused-although-upstream-resumes"),
    pytest.param(chain(a=RUNNING_A), {}, {}, id="only-upstream-will-run-downstream-allowed"),
    pytest.param(chain(a=RUNNING_A, b=facts(None, "b"), c=facts(None, "c", kind="transform")),
                 {}, {}, id="no-record-below-resumed-upstream-allowed"),
    pytest.param(chain(c=facts(None, "c", kind="transform")), {}, {"c": "no_record"},
                 id="new-stage-over-reused-upstreams-refused"),
    pytest.param(chain(b=facts(record("b", stage_inputs={"a": digest("a-out")}),
                               spec_=spec(params={"tag": "changed"}))),
                 {"b": "--force b"}, {}, id="forced-allowed"),
    pytest.param(chain(a=facts(record("a", file_inputs={INPUT_FILE: fstate(INPUT_FILE)}),
                               file_inputs={INPUT_FILE: fstate(INPUT_FILE, "v2")})),
                 {}, {"a": "input_changed"}, id="file-input-change-refused"),
    pytest.param(chain(b=facts(record("b", stage_inputs={"a": digest("a-out-OLD")}))),
                 {}, {"b": "input_changed"}, id="stage-input-changed-upstream-reused-refused"),
    pytest.param(chain(c=facts(record("c", kind="transform", rows=1,
                                      stage_inputs={"b": digest("b-out")}),
                               states={"out/c.parquet": "modified"})),
                 {}, {"c": "output_modified"}, id="own-output-modified-refused"),
    pytest.param(chain(b=facts(record("b", stage_inputs={"a": digest("a-out")}),
                               states={bfile(1, "b"): "missing"})),
                 {}, {}, id="missing-batch-resumes-allowed"),
    pytest.param(chain(c=facts(record("c", kind="transform", status="failed", error="x",
                                      stage_inputs={"b": digest("b-out")}))),
                 {}, {}, id="failed-transform-rerun-allowed"),
]


@pytest.mark.parametrize(("world", "forced", "expected"), STRICT_CASES)
def test_strict_refusals(world: dict[str, StageFacts], forced: dict[str, str],
                         expected: dict[str, str]) -> None:
    assert refused(world, options=Options(forced=forced)) == expected


def test_strict_refusal_names_one_reason_per_stage() -> None:
    world = chain(b=facts(record("b", stage_inputs={"a": digest("a-out")}),
                          spec_=spec(params={"tag": "y"}, num_records=99),
                          code={"code/stages.py": fstate("code/stages.py", "c2")}))
    decisions = plan(list(world), world, CHAIN_UPS, Options())
    out = strict_refusals(decisions, CHAIN_UPS)
    assert [(d.stage, r.code) for d, r in out] == [("b", "spec_changed")]


def test_facts_factory_defaults_mean_unchanged() -> None:
    # The factories themselves: a record and facts made from it are up to date.
    rec = record(file_inputs={INPUT_FILE: fstate(INPUT_FILE)}, stage_inputs={"a": A_OUT})
    f = facts(rec)
    assert f.record is rec and not f.damaged
    assert list(collect_reasons(f, {"a": Upstream(A_OUT)})) == []
    assert replace(f, name="t").name == "t"
