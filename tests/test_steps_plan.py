"""The planner's step decisions, on in-memory fakes: for every step kind, which step runs
first, what is kept, and every reason with its step. Traces are made with the same key
functions the executor uses (steps.py), so a fake trace is exactly what a build records."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from test_plan import CODE, digest, facts, fstate, record, spec

from buildtool.facts import StageFacts, Upstream
from buildtool.fingerprint import digest_strings
from buildtool.plan import Decision, Options, decide, plan
from buildtool.records import Output, StageRecord
from buildtool.steps import KEEP_OUTPUT, chain, step_key, step_of_key

CB_FILE = "code/cb.py"
FULL = {"processors": [{"limit": 3}], "on_success": f"{CB_FILE}:keep",
        "outputs": ["out/s.csv"]}
CODE_CB = {**CODE, CB_FILE: fstate(CB_FILE, "cb1")}


def traced(kind: str = "generate", status: str = "completed", **changes: Any) -> StageRecord:
    """A record of stage `s` with processors, a callback and an export copy, whose later
    steps' traces are keyed as the executor keys them."""
    sp = spec(kind, **{**FULL, **changes})
    rec = record(kind=kind, spec_=sp, code=CODE_CB, status=status)
    if kind == "transform":  # a transform's call writes one batch
        rec = replace(rec, batches=record(batches=1).batches, batches_total=1)
    digest_in = digest_strings([b.digest for b in rec.batches])
    steps: dict[str, Output] = {}
    files = {"processors": "s/processed/data.parquet", "on_success": "s/callback/kept.parquet"}
    for step, name in (("processors", "processed"), ("on_success", "callback")):
        if not sp.get(step):
            continue
        key = step_key(step, sp, CODE_CB[CB_FILE].digest, digest_in)
        out = Output(name, 3, digest(f"{name}-out"), (fstate(files[step], name),), key)
        steps[name] = out
        digest_in = out.digest
    selected = steps.get("callback") or steps.get("processed") or \
        Output("batches", 20, digest_in)
    if sp.get("outputs"):
        steps["exports"] = Output("exports", None, digest("exports"),
                                  (fstate("out/s.csv", "csv"),),
                                  step_key("outputs", sp, "", selected.digest))
    return replace(rec, steps=steps, output=selected if status.startswith("completed") else None)


GROUPS = {"s/processed/data.parquet": "processed", "s/callback/kept.parquet": "callback",
          "out/s.csv": "exports"}


def now(rec: StageRecord, *, spec_changes: dict[str, Any] | None = None,
        damaged: dict[str, str] | None = None, code: dict[str, Any] | None = None,
        callback_code: bool = True) -> StageFacts:
    f = facts(rec, spec_=dict(rec.spec, **(spec_changes or {})),
              code=code if code is not None else rec.code, states=damaged)
    groups = dict(GROUPS)
    if rec.output is not None and rec.output.kind == "override":
        groups.update({x.path: "override" for x in rec.output.files})
    return replace(f, callback_file=CB_FILE, file_groups=groups,
                   callback_code=frozenset({CB_FILE}) if callback_code else frozenset())


def check(d: Decision, action: str, step: str | None, codes: list[str], steps: list[str],
          keep: tuple[int, ...] | None = None) -> None:
    assert (d.action, d.step) == (action, step), [r.message for r in d.reasons]
    assert d.codes == codes and [r.step for r in d.reasons] == steps
    if keep is not None:
        assert d.keep == keep


ALL4 = (0, 1, 2, 3)


def test_every_trace_as_recorded_is_up_to_date() -> None:
    check(decide(now(traced()), {}, Options()), "up_to_date", None, [], [])


@pytest.mark.parametrize(("change", "step"), [
    ({"processors": [{"limit": 2}]}, "processors"),
    ({"processors": []}, "processors"),
    ({"on_success": f"{CB_FILE}:other"}, "on_success"),
    ({"on_success": None}, "on_success"),
    ({"on_success_version": "2"}, "on_success"),
    ({"allow_empty": True}, "allow_empty"),
    ({"outputs": ["out/s.jsonl"]}, "outputs"),
    ({"outputs": []}, "outputs"),
])
def test_a_later_key_reruns_from_its_step_and_keeps_every_batch(change: dict[str, Any],
                                                                 step: str) -> None:
    d = decide(now(traced(), spec_changes=change), {}, Options())
    check(d, "resume", step, ["spec_changed"], [step], ALL4)


def test_keys_of_the_main_step_run_it_fresh_whatever_else_changed() -> None:
    d = decide(now(traced(), spec_changes={"params": {"tag": "y"}, "on_success": None}), {},
               Options())
    # keys in canonical (sorted) order: on_success, then params
    check(d, "run", "batches", ["spec_changed", "spec_changed"], ["on_success", "batches"], ())


@pytest.mark.parametrize(("path", "state", "code", "step"), [
    ("s/processed/data.parquet", "missing", "output_missing", "processors"),
    ("s/callback/kept.parquet", "modified", "output_modified", "on_success"),
    ("out/s.csv", "missing", "output_missing", "outputs"),
    ("s/batches/batch-000002.parquet", "missing", "output_missing", "batches"),
])
def test_a_damaged_file_reruns_the_step_that_wrote_it(path: str, state: str, code: str,
                                                      step: str) -> None:
    d = decide(now(traced(), damaged={path: state}), {}, Options())
    keep = (0, 1, 3) if step == "batches" else ALL4
    check(d, "resume", step, [code], [step], keep)


def test_callback_only_code_reruns_from_on_success_else_from_the_batches() -> None:
    changed = {**CODE_CB, CB_FILE: fstate(CB_FILE, "cb2")}
    check(decide(now(traced(), code=changed), {}, Options()), "resume", "on_success",
          ["code_changed"], ["on_success"], ALL4)
    shared = now(traced(), code=changed, callback_code=False)
    check(decide(shared, {}, Options()), "run", "batches", ["code_changed"], ["batches"], ())


def test_a_stale_trace_alone_names_its_step() -> None:
    rec = traced()
    bad = replace(rec, steps={**rec.steps, "callback": replace(rec.steps["callback"], key="x")})
    check(decide(now(bad), {}, Options()), "resume", "on_success", ["step_stale"],
          ["on_success"], ALL4)
    stale = replace(rec, steps={**rec.steps, "exports": replace(rec.steps["exports"], key="x")})
    check(decide(now(stale), {}, Options()), "resume", "outputs", ["exports_stale"],
          ["outputs"], ALL4)


def test_a_stale_trace_explained_by_a_change_is_not_listed_twice() -> None:
    d = decide(now(traced(), spec_changes={"processors": []}), {}, Options())
    assert d.codes == ["spec_changed"]


def test_transform_keeps_its_call_for_later_steps() -> None:
    rec = traced("transform")
    check(decide(now(rec, spec_changes={"on_success": None}), {}, Options()), "resume",
          "on_success", ["spec_changed"], ["on_success"], (0,))


def test_failed_in_a_later_step_resumes_there() -> None:
    rec = traced("transform", status="failed")
    failed = replace(rec, error="boom", extra={"stopped_in": "on_success"})
    d = decide(now(failed), {}, Options())
    check(d, "resume", "on_success", ["failed_before"], ["on_success"], (0,))
    assert "in on_success" in d.reasons[0].message
    in_call = replace(rec, error="boom")  # the call itself failed: called again
    check(decide(now(in_call), {}, Options()), "run", "call", ["failed_before"], ["call"], ())


def test_interrupted_in_a_later_step_resumes_there() -> None:
    rec = replace(traced(status="interrupted"), extra={"stopped_in": "outputs"})
    check(decide(now(rec), {}, Options()), "resume", "outputs", ["incomplete"], ["outputs"],
          ALL4)


def test_a_run_stage_has_one_step() -> None:
    assert chain("run") == ("command",)
    assert step_of_key("run", "outputs") == "command"
    assert step_of_key("generate", "outputs") == "outputs"
    assert step_of_key("generate", "params.x") == "batches"
    assert step_of_key("generate", "description") == "batches"  # not fingerprinted: never
    rec = record(kind="run", spec_=spec("run", outputs=["a.txt"]))
    d = decide(facts(rec, spec_=spec("run", outputs=["b.txt"])), {}, Options())
    check(d, "run", "command", ["spec_changed"], ["command"], ())


def test_dependants_of_a_stage_whose_output_stays_are_up_to_date() -> None:
    up = traced()
    down = record("d", stage_inputs={"s": up.output.digest})  # type: ignore[union-attr]
    for change in ({"outputs": []}, {"allow_empty": True}):
        decisions = plan(["s", "d"], {"s": now(up, spec_changes=change), "d": facts(down)},
                         {"s": (), "d": ("s",)}, Options())
        assert decisions[0].step in KEEP_OUTPUT
        assert decisions[1].action == "up_to_date"
    decisions = plan(["s", "d"], {"s": now(up, spec_changes={"processors": []}),
                                  "d": facts(down)}, {"s": (), "d": ("s",)}, Options())
    assert decisions[1].codes == ["upstream_will_run"]


# ---------------------------------------------------------------- held overrides


def overridden(**changes: Any) -> StageRecord:
    rec = traced(**changes)
    review = Output("override", 2, digest("review"), (fstate("artifacts/demo/s/override/u/x"
                                                             ".parquet", "review"),))
    exports = replace(rec.steps["exports"], key=step_key("outputs", rec.spec, "", review.digest))
    return replace(rec, output=review, steps={**rec.steps, "exports": exports})


def test_an_override_with_nothing_changed_is_up_to_date() -> None:
    check(decide(now(overridden()), {}, Options()), "up_to_date", None, [], [])


def test_own_and_upstream_changes_of_an_overridden_stage_are_held() -> None:
    f = now(overridden(), spec_changes={"params": {"tag": "y"}},
            damaged={"out/s.csv": "missing"})
    d = decide(f, {"a": Upstream(digest("new"))}, Options())
    check(d, "held", "outputs", ["spec_changed", "input_changed", "output_missing"],
          ["batches", "batches", "outputs"], ALL4)
    assert d.rows == 2
    dependant = plan(["s", "d"], {"s": f, "d": facts(record("d", stage_inputs={
        "s": digest("review")}))}, {"s": (), "d": ("s",)}, Options())
    assert dependant[1].action == "up_to_date"


def test_only_export_copies_of_an_overridden_stage_resume_from_outputs() -> None:
    f = now(overridden(), damaged={"out/s.csv": "missing"})
    check(decide(f, {}, Options()), "resume", "outputs", ["output_missing"], ["outputs"], ALL4)


def test_forcing_holds_unless_the_stage_is_named() -> None:
    f = now(overridden(), spec_changes={"processors": []})
    never = decide(f, {}, Options(resume="never"))
    assert never.action == "held" and never.codes[0] == "forced"
    named = decide(f, {}, Options(forced={"s": "--force s"}, released=frozenset({"s"})))
    check(named, "run", "batches", ["forced", "spec_changed"], ["batches", "processors"], ())


def test_a_lost_override_file_reruns_the_later_steps() -> None:
    rec = overridden()
    f = now(rec, damaged={rec.output.files[0].path: "missing"})  # type: ignore[union-attr]
    d = decide(f, {}, Options())  # the steps' traces give back the output it replaced
    check(d, "resume", "processors", ["output_missing"], ["processors"], ALL4)
    assert "the review is lost" in d.reasons[0].message
