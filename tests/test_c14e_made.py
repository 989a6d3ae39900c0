"""Objects the null-build path makes without their dataclass __init__ are the objects
__init__ makes: every field set, equal, and a field added to the class is noticed."""

from __future__ import annotations

from dataclasses import fields

import pytest

from buildtool.facts import StageFacts, made_facts
from buildtool.records import RecordRead, read_of


def _facts_values() -> dict[str, object]:
    return {"name": "a", "kind": "generate", "spec": {"kind": "generate"}, "fingerprint": "f",
            "code": {}, "file_inputs": {}, "discovered": {}, "read": RecordRead(),
            "damaged": {"x": "missing"}, "outputs_now": {}, "file_groups": {"y": "exports"},
            "callback_code": frozenset({"c.py"}), "callback_file": "c.py", "stats_moved": True}


def test_made_facts_equal_the_facts_init_makes() -> None:
    values = _facts_values()
    assert set(values) == {f.name for f in fields(StageFacts)}
    made = made_facts(dict(values))
    assert made == StageFacts(**values)  # type: ignore[arg-type]
    assert repr(made) == repr(StageFacts(**values))  # type: ignore[arg-type]


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_made_facts_refuses_values_that_are_not_its_fields(change: str) -> None:
    values = _facts_values()
    if change == "missing":
        del values["stats_moved"]
    else:
        values["stale"] = 1
    with pytest.raises(TypeError):
        made_facts(values)


@pytest.mark.parametrize("checked", [False, True])
def test_read_of_is_the_record_read_init_makes(checked: bool) -> None:
    assert {f.name for f in fields(RecordRead)} == {"record", "problem", "spec_checked"}
    made = read_of(None, checked)  # type: ignore[arg-type]
    assert made == RecordRead(record=None, spec_checked=checked)
    assert repr(made) == repr(RecordRead(record=None, spec_checked=checked))


def test_output_view_is_the_upstream_init_makes() -> None:
    from buildtool.facts import Upstream, output_view
    from buildtool.records import Output, StageRecord

    assert {f.name for f in fields(Upstream)} == {"digest", "rows", "overridden"}
    for kind in ("batches", "override", "files"):
        record = StageRecord("s", "completed", "generate", {}, "f", {}, {}, {}, "r",
                             output=Output(kind, 3, "d"))
        view = output_view(record)
        assert view == Upstream("d", 3, overridden=kind == "override")
        assert repr(view) == repr(Upstream("d", 3, overridden=kind == "override"))


def test_made_facts_carry_their_record() -> None:
    from buildtool.records import StageRecord

    record = StageRecord("s", "completed", "generate", {}, "f", {}, {}, {}, "r")
    values = {**_facts_values(), "read": RecordRead(record=record)}
    made = made_facts(values)
    assert made.record is record and StageFacts(**values).record is record  # type: ignore[arg-type]


def test_an_up_to_date_decision_is_the_decision_init_makes() -> None:
    from buildtool.plan import Decision, _up_to_date

    assert [f.name for f in fields(Decision)] == ["stage", "action", "reasons", "keep",
                                                  "batches_total", "rows", "step",
                                                  "restore"]
    for total, rows in ((None, None), (3, 0), (1, 20)):
        made = _up_to_date("s", total, rows)
        init = Decision("s", "up_to_date", (), batches_total=total, rows=rows)
        assert made == init and repr(made) == repr(init) and made.codes == []
