"""The pure parts of discovered code dependencies: the planner's reasons, the tracker's rules,
and the record's round trip. No disk, no subprocess."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from test_plan import CODE, facts, fstate, record, spec

from buildtool.codedeps import CodeTracker, ImportGraph
from buildtool.plan import Options, StageFacts, decide
from buildtool.records import Discovered, StageRecord

TEXT = "helpers/text.py"
DEEP = "helpers/deep.py"
STAGE_FILE = "code/stages.py"


def _with_imports(rec: StageRecord, deps: dict[str, tuple[str, str | None]]) -> StageRecord:
    """`rec` whose code imported each path: (content tag, importer)."""
    found = {path: Discovered(fstate(path, tag), by) for path, (tag, by) in deps.items()}
    return dataclasses.replace(rec, discovered=found)


def _now(f: StageFacts, tags: dict[str, str]) -> StageFacts:
    """`f` with the discovered files the probe finds now, by content tag (absent: gone)."""
    return dataclasses.replace(f, discovered={path: fstate(path, t) for path, t in tags.items()})


REC = _with_imports(record(), {TEXT: ("t1", STAGE_FILE), DEEP: ("d1", TEXT)})


def test_unchanged_imports_are_up_to_date() -> None:
    d = decide(_now(facts(REC), {TEXT: "t1", DEEP: "d1"}), {}, Options())
    assert d.action == "up_to_date"


def test_changed_import_names_file_and_importer() -> None:
    d = decide(_now(facts(REC), {TEXT: "t1", DEEP: "d2"}), {}, Options())
    assert d.action == "run" and d.codes == ["code_changed"]
    reason = d.reasons[0]
    assert reason.message == f"code file {DEEP} changed (imported by {TEXT})"
    assert reason.to_json() == {"code": "code_changed", "message": reason.message,
                                "file": DEEP, "imported_by": TEXT, "step": "batches"}


def test_gone_import_is_a_reason() -> None:
    d = decide(_now(facts(REC), {TEXT: "t1"}), {}, Options())
    assert d.codes == ["code_changed"]
    assert d.reasons[0].message == f"code file {DEEP} is gone (imported by {TEXT})"


def test_import_without_a_project_importer() -> None:
    init = "pkg/__init__.py"
    rec = _with_imports(record(), {init: ("i1", None)})
    d = decide(_now(facts(rec), {init: "i2"}), {}, Options())
    assert d.reasons[0].message == "code file pkg/__init__.py changed (loaded with the stage's code)"
    assert d.reasons[0].detail["imported_by"] is None


def test_import_that_is_now_a_declared_code_file_gives_one_reason() -> None:
    code = {**CODE, TEXT: fstate(TEXT, "t2")}
    d = decide(_now(facts(REC, code=code), {TEXT: "t2", DEEP: "d1"}), {}, Options())
    assert d.codes == ["code_changed"]
    assert d.reasons[0].message == f"code file {TEXT} is new"


def test_a_changed_import_is_not_resumable() -> None:
    """A failed stage whose helper changed runs fresh: its kept batches came from old code."""
    rec = _with_imports(record(status="failed", done=2, error="boom"),
                        {TEXT: ("t1", STAGE_FILE)})
    d = decide(_now(facts(rec), {TEXT: "t2"}), {}, Options())
    assert d.action == "run" and d.codes == ["code_changed", "failed_before"]
    assert decide(_now(facts(rec), {TEXT: "t1"}), {}, Options()).action == "resume"


def test_callback_file_imported_by_the_stage_code_reruns_fresh() -> None:
    """The callback-only file changed: boundary only, unless the stage's code imported it."""
    cb = "code/cb.py"
    rec = record(spec_=spec(on_success=f"{cb}:done"), code={**CODE, cb: fstate(cb, "c1")})
    changed = {**CODE, cb: fstate(cb, "c2")}
    alone = dataclasses.replace(facts(rec, code=changed), callback_code=frozenset({cb}))
    assert decide(alone, {}, Options()).action == "resume"

    imported = dataclasses.replace(rec, discovered={cb: Discovered(fstate(cb, "c1"), STAGE_FILE)})
    both = dataclasses.replace(facts(imported, code=changed), callback_code=frozenset({cb}),
                               discovered={cb: fstate(cb, "c2")})
    d = decide(both, {}, Options())
    assert d.codes == ["code_changed", "code_changed"]
    assert d.reasons[1].detail == {"file": cb, "imported_by": STAGE_FILE}
    assert d.action == "run"


@pytest.mark.parametrize(("kind", "codes"), [
    pytest.param("generate", ["format_changed"], id="generate"),
    pytest.param("transform", ["format_changed"], id="transform"),
    pytest.param("run", [], id="run-stage-loads-no-python"),
])
def test_record_written_before_discovery(kind: str, codes: list[str]) -> None:
    rec = dataclasses.replace(record(kind=kind, rows=3), discovered=None)
    d = decide(facts(rec), {}, Options())
    assert d.codes == codes


# ------------------------------------------------------------------------------ the tracker


def _state(path: str) -> Any:
    return fstate(path, "x")


def _graph(edges: list[tuple[str, str]]) -> ImportGraph:
    """A graph of project files, each with a state, and these import edges."""
    g = ImportGraph()
    for importer, imported in edges:
        for node in (importer, imported):
            g.set_state(node, node, _state(node))
        g.add_edge(importer, imported)
    return g


def test_tracker_keeps_undeclared_files_once() -> None:
    g = _graph([(STAGE_FILE, TEXT), ("other.py", TEXT)])
    g.set_state(TEXT, TEXT, fstate(TEXT, "later"))  # the first execution counts
    t = CodeTracker([STAGE_FILE], frozenset(), graph=g)
    t.add_roots([STAGE_FILE])  # declared: the record lists it already
    assert t.discovered() == {TEXT: Discovered(_state(TEXT), STAGE_FILE)}


def test_tracker_follows_edges_from_its_roots_only() -> None:
    g = _graph([(STAGE_FILE, TEXT), (TEXT, DEEP), ("other.py", "helpers/other.py")])
    t = CodeTracker([STAGE_FILE], frozenset(), graph=g)
    assert t.discovered() == {}  # no code loaded yet
    t.add_roots([STAGE_FILE])
    assert t.discovered() == {TEXT: Discovered(_state(TEXT), STAGE_FILE),
                              DEEP: Discovered(_state(DEEP), TEXT)}
    g.add_edge(DEEP, "helpers/late.py")  # a lazy import, later: seen on the next read
    g.set_state("helpers/late.py", "helpers/late.py", _state("helpers/late.py"))
    assert t.discovered()["helpers/late.py"].by == DEEP


def test_tracker_callback_rules() -> None:
    cb, only_cb = "code/cb.py", "helpers/report.py"
    g = _graph([(STAGE_FILE, cb), (cb, only_cb)])  # the stage's own code imports the callback
    t = CodeTracker([STAGE_FILE, cb], frozenset({cb}), graph=g)
    t.add_roots([STAGE_FILE])
    t.enter_callback()
    t.add_roots([cb])
    assert set(t.discovered()) == {cb, only_cb}

    g = _graph([(cb, only_cb), (STAGE_FILE, TEXT)])
    t = CodeTracker([STAGE_FILE, cb], frozenset({cb}), graph=g)
    t.add_roots([STAGE_FILE])
    t.enter_callback()
    t.add_roots([cb])  # loading the callback itself: declared, not discovered
    assert t.discovered() == {TEXT: Discovered(_state(TEXT), STAGE_FILE),
                              only_cb: Discovered(_state(only_cb), cb)}


def test_tracker_names_outside_modules_by_their_key() -> None:
    g = _graph([])
    g.set_state("ext:mylib", "module:mylib", fstate("module:mylib", "m1"), "mylib")
    g.add_edge(STAGE_FILE, "ext:mylib")
    t = CodeTracker([STAGE_FILE], frozenset(), graph=g)
    t.add_roots([STAGE_FILE])
    assert t.discovered() == {
        "module:mylib": Discovered(fstate("module:mylib", "m1"), STAGE_FILE, "mylib")}
    declared = CodeTracker([STAGE_FILE, "module:mylib"], frozenset(), graph=g)
    declared.add_roots([STAGE_FILE])
    assert declared.discovered() == {}


def test_tracker_keeps_what_a_resume_kept_and_stops_when_closed() -> None:
    kept = {TEXT: Discovered(_state(TEXT), STAGE_FILE)}
    g = _graph([])
    closed: list[bool] = []
    t = CodeTracker([STAGE_FILE], frozenset(), kept, graph=g,
                    on_close=lambda: closed.append(True))
    t.add_roots([STAGE_FILE])
    assert t.close() == kept and closed == [True]
    g.set_state(DEEP, DEEP, _state(DEEP))
    g.add_edge(STAGE_FILE, DEEP)
    assert t.discovered() == kept
    assert t.close() == kept and closed == [True]


# ------------------------------------------------------------------------------- the record


def test_record_round_trips_discovered_and_unknown() -> None:
    rec = REC
    again = StageRecord.from_json(json.loads(json.dumps(rec.to_json())))
    assert again.discovered == rec.discovered
    old = rec.to_json()
    del old["discovered"]
    assert StageRecord.from_json(old).discovered is None
    assert StageRecord.from_json({**old, "discovered": None}).discovered is None
