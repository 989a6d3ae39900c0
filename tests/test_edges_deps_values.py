"""A change of a value's type is a change: 1, 1.0 and true are three different specs.

Unit tests of the typed comparison and of the pure planner, then the CLI on a temp project.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
from conftest import Project, find_reason, reason_codes
from test_plan import facts, record, spec

from buildtool.fingerprint import canonical_spec, spec_fingerprint
from buildtool.jsonvalues import json_type, same_value, type_change
from buildtool.model import Stage
from buildtool.plan import Options, decide


@pytest.fixture(autouse=True)
def _no_build_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests pin what reruns on its own; with the build cache (issue 11) a revert
    among them is restored instead (tests/test_c11cache_*.py)."""
    monkeypatch.setenv("DD_BUILD_CACHE", "off")


NAN = float("nan")

# --------------------------------------------------------------------------------- same_value


@pytest.mark.parametrize(("a", "b", "same"), [
    pytest.param(1, 1, True, id="int-int"),
    pytest.param(1, 1.0, False, id="int-float"),
    pytest.param(1, True, False, id="int-bool"),
    pytest.param(1.0, True, False, id="float-bool"),
    pytest.param(0, False, False, id="zero-false"),
    pytest.param("1", 1, False, id="str-int"),
    pytest.param(None, None, True, id="null-null"),
    pytest.param(None, 0, False, id="null-zero"),
    pytest.param(NAN, NAN, True, id="nan-nan"),
    pytest.param(NAN, float("nan"), True, id="nan-other-nan-object"),
    pytest.param(0.0, -0.0, False, id="zero-negative-zero"),
    pytest.param(0.1 + 0.2, 0.30000000000000004, True, id="float-same-repr"),
    pytest.param([1, 2], (1, 2), True, id="list-tuple-one-json-array"),
    pytest.param([1, 2], [1, True], False, id="list-holding-bool"),
    pytest.param([1], [1, 1], False, id="list-length"),
    pytest.param({"a": 1}, {"a": 1.0}, False, id="dict-value-type"),
    pytest.param({"a": 1, "b": [2]}, {"b": [2], "a": 1}, True, id="dict-order-ignored"),
    pytest.param({"a": {"b": [1, {"c": 0}]}}, {"a": {"b": [1, {"c": False}]}}, False,
                 id="deeply-nested"),
    pytest.param({1: "x"}, {True: "x"}, False, id="dict-key-type"),
    pytest.param({"a": 1}, {"a": 1, "b": 1}, False, id="dict-extra-key"),
    pytest.param([], {}, False, id="empty-list-empty-dict"),
])
def test_same_value_is_typed(a: Any, b: Any, same: bool) -> None:
    assert same_value(a, b) is same
    assert same_value(b, a) is same


def test_json_type_names() -> None:
    assert [json_type(v) for v in (None, True, 1, 1.0, "s", [1], (1,), {"a": 1})] == \
        ["null", "bool", "int", "float", "str", "list", "list", "dict"]


def test_type_change_finds_the_first_typed_difference() -> None:
    assert type_change(1, 1.0) == ("", "int", "float")
    assert type_change([{"drop": [1]}], [{"drop": [True]}]) == ("[0].drop[0]", "int", "bool")
    assert type_change({"a": 1}, {"a": 2}) is None


# ---------------------------------------------------------------------------------- planner


def _decide(old_params: dict[str, Any], new_params: dict[str, Any], **kw: Any) -> Any:
    rec = record(spec_=spec(params=old_params, **kw))
    return decide(facts(rec, spec_=spec(params=new_params, **kw)), {}, Options())


@pytest.mark.parametrize(("old", "new", "note"), [
    pytest.param(1, 1.0, "(int → float)", id="int-to-float"),
    pytest.param(1.0, True, "(float → bool)", id="float-to-bool"),
    pytest.param(True, 1, "(bool → int)", id="bool-to-int"),
    pytest.param(0, False, "(int → bool)", id="zero-to-false"),
    pytest.param(1, "1", "(int → str)", id="int-to-str"),
])
def test_param_type_change_is_a_change(old: Any, new: Any, note: str) -> None:
    d = _decide({"x": old}, {"x": new})
    assert d.action == "run"
    assert d.codes == ["spec_changed"]
    reason = d.reasons[0]
    assert reason.detail["key"] == "params.x"
    assert json_type(reason.detail["old"]) == json_type(old)
    assert json_type(reason.detail["new"]) == json_type(new)
    assert reason.message == f"params.x changed: {json.dumps(old)} → {json.dumps(new)} {note}"
    # JSON keeps the types: the document says 1 and 1.0 and true
    doc = json.loads(json.dumps(reason.to_json()))
    assert json_type(doc["old"]) == json_type(old) and json_type(doc["new"]) == json_type(new)


def test_nested_param_type_change_names_the_dotted_key() -> None:
    d = _decide({"llm": {"temp": 1, "model": "m"}}, {"llm": {"temp": 1.0, "model": "m"}})
    assert d.codes == ["spec_changed"]
    assert d.reasons[0].detail["key"] == "params.llm.temp"
    assert "(int → float)" in d.reasons[0].message


def test_list_param_type_change_says_where() -> None:
    d = _decide({"xs": [1, 2]}, {"xs": [1, True]})
    assert d.codes == ["spec_changed"]
    assert d.reasons[0].detail == {"key": "params.xs", "old": [1, 2], "new": [1, True]}
    assert d.reasons[0].message.endswith("(at [1]: int → bool)")


def test_type_change_in_a_non_param_key() -> None:
    """Processors hold lists and values too: `limit: 1` → `limit: true` is a boundary change."""
    rec = record(spec_=spec(processors=[{"limit": 1}]))
    d = decide(facts(rec, spec_=spec(processors=[{"limit": True}])), {}, Options())
    assert d.codes == ["spec_changed"]
    assert d.reasons[0].detail["key"] == "processors"
    assert "(at [0].limit: int → bool)" in d.reasons[0].message
    assert d.action == "resume" and d.keep == (0, 1, 2, 3)  # boundary only: batches kept


def test_equal_values_stay_up_to_date() -> None:
    same = {"x": 1, "f": 1.5, "b": True, "nan": NAN, "xs": [1, [2.0]], "d": {"k": None}}
    assert _decide(same, json.loads(json.dumps(same))).action == "up_to_date"
    # a tuple is a JSON array like a list: the same value
    assert _decide({"xs": [1, 2]}, {"xs": (1, 2)}).action == "up_to_date"


def test_unset_and_null_are_told_apart() -> None:
    d = _decide({"x": None}, {})
    assert d.codes == ["spec_changed"]
    assert d.reasons[0].message == "params.x changed: null → (unset)"


def test_fingerprint_backstop_when_no_key_differs() -> None:
    """A fingerprint that differs while every key compares equal still gives a reason."""
    rec = dataclasses.replace(record(), spec_fingerprint="sha256:other")
    d = decide(facts(rec), {}, Options())
    assert d.action == "run"
    assert d.codes == ["spec_changed"]
    assert d.reasons[0].detail == {"key": "spec_fingerprint", "old": "sha256:other",
                                   "new": "sha256:fp"}


# ------------------------------------------------------------------------------ fingerprint


def _stage(params: dict[str, Any]) -> Stage:
    return Stage(name="s", kind="generate", target="code/stages.py:rows", params=params,
                 num_records=3, batch_size=3)


def test_canonical_fingerprint_differs_for_each_type() -> None:
    values = [1, 1.0, True, "1", [1], {"1": 1}, None, 0, False, 0.0, -0.0, [True], [1.0]]
    fps = {spec_fingerprint(canonical_spec(_stage({"x": v}))) for v in values}
    assert len(fps) == len(values)


def test_canonical_spec_keeps_types_and_nan_through_a_record() -> None:
    spec_ = canonical_spec(_stage({"i": 1, "f": 1.0, "b": True, "nan": NAN, "t": (1, 2)}))
    again = json.loads(json.dumps(spec_))  # as a record reads it back
    assert [json_type(again["params"][k]) for k in "ifbt"] == ["int", "float", "bool", "list"]
    assert math.isnan(again["params"]["nan"])
    assert same_value(spec_, again)
    assert spec_fingerprint(again) == spec_fingerprint(spec_)


# ---------------------------------------------------------------------------------- the CLI

TYPED_CODE = '''
def rows(ctx):
    x = ctx.params["x"]
    return [{"i": ctx.offset + i, "xtype": type(x).__name__} for i in range(ctx.size)]
'''

TYPED_FLOW = """
workflow: demo
stages:
  g:
    generate: code/typed.py:rows
    num_records: 2
    params: {{x: {x}}}
"""


def _typed(project: Project, x: str) -> None:
    project.write("Workflowfile", TYPED_FLOW.format(x=x))


def test_cli_type_only_edits_rerun_and_explain(project: Project) -> None:
    project.write("code/typed.py", TYPED_CODE)
    _typed(project, "1")
    assert project.run().code == 0
    for written, type_name, old, new, note in [
        ("1.0", "float", 1, 1.0, "(int → float)"),
        ("true", "bool", 1.0, True, "(float → bool)"),
        ("1", "int", True, 1, "(bool → int)"),
    ]:
        _typed(project, written)
        explain = project.run("--explain", "-n")
        assert explain.code == 0, explain.stderr
        assert f"params.x changed: {json.dumps(old)} → {json.dumps(new)} {note}" \
            in explain.stdout, explain.stdout
        built = project.run("--json")
        assert built.code == 0, built.stderr
        st = built.stage("g")
        assert reason_codes(st) == ["spec_changed"] and st["result"] == "completed"
        reason = find_reason(st, "spec_changed")
        assert (reason["key"], json_type(reason["old"]), json_type(reason["new"])) == \
            ("params.x", json_type(old), json_type(new))
        # the output is what a build from scratch gives: the code saw the new type
        assert set(project.table("g").column("xtype").to_pylist()) == {type_name}
        again = project.run("--json")
        assert again.stage("g")["action"] == "up_to_date"

