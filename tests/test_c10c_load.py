"""`rate_limits:` and `rate_limit:` in the Workflowfile: what is refused (with did-you-mean, at
file:line:col), that neither is part of the fingerprint (changing a limit reruns nothing), that
the compiled workflow carries them (a hit equals a miss), and `dd-build schema`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import STAGE_CODE, Project

from buildtool import compiled
from buildtool.errors import WorkflowError
from buildtool.fingerprint import canonical_spec
from buildtool.model import RateLimit
from buildtool.workflowfile import load_workflow

HEAD = "workflow: demo\n"
STAGES = """\
stages:
  a:
    generate: code/stages.py:rows
    num_records: 4
    batch_size: 2
    rate_limit: openai
  j:
    transform: code/stages.py:join
    inputs: [a]
    rate_limit: local
  r:
    run: mkdir -p out && echo {inputs} > {outputs[0]}
    inputs: [a]
    outputs: [out/r.txt]
"""
LIMITS = """\
rate_limits:
  openai: {requests_per_second: 5, max_in_flight: 16}
  local:
    max_in_flight: 2
"""


def _errors(project: Project, text: str) -> list[WorkflowError]:
    path = project.write("Workflowfile", text)
    try:
        load_workflow(path, "Workflowfile")
    except WorkflowError as error:
        return list(getattr(error, "errors", [error]))
    return []


@pytest.fixture
def proj(project: Project) -> Project:
    project.write("code/stages.py", STAGE_CODE)
    return project


def test_a_valid_workflow_carries_its_limits(proj: Project) -> None:
    proj.write("Workflowfile", HEAD + LIMITS + STAGES)
    wf = load_workflow(proj.root / "Workflowfile")
    assert wf.rate_limits == {"openai": RateLimit("openai", 5.0, 16),
                              "local": RateLimit("local", None, 2)}
    assert isinstance(wf.rate_limits["openai"].requests_per_second, float)
    assert wf.stages["a"].rate_limit == "openai" and wf.stages["j"].rate_limit == "local"
    assert wf.stages["r"].rate_limit is None
    assert "rate_limit" not in canonical_spec(wf.stages["a"])


def test_a_default_rate_limit_applies_to_generate_and_transform_stages(proj: Project) -> None:
    text = HEAD + LIMITS + "defaults:\n  rate_limit: local\n" + \
        STAGES.replace("    rate_limit: openai\n", "").replace("    rate_limit: local\n", "")
    proj.write("Workflowfile", text)
    wf = load_workflow(proj.root / "Workflowfile")
    assert [wf.stages[n].rate_limit for n in "ajr"] == ["local", "local", None]


# (text to replace, its replacement, (line, column, stage, key) of the one error, words of it)
MISTAKES = [
    pytest.param("rate_limit: openai", "rate_limit: opnai", (11, 17, "a", "rate_limit"),
                 "did you mean `openai`?", id="unknown-name"),
    pytest.param("rate_limit: openai", "rate_limit: [openai]", (11, 17, "a", "rate_limit"),
                 "must be", id="name-not-a-string"),
    pytest.param("    max_in_flight: 2\n", "    max_in_flght: 2\n", (5, 5, None, "rate_limits"),
                 "did you mean `max_in_flight`?", id="unknown-subkey"),
    pytest.param("max_in_flight: 16", "max_in_flight: 0", (3, 51, None, "rate_limits"),
                 "positive integer", id="cap-zero"),
    pytest.param("max_in_flight: 16", "max_in_flight: 1.5", (3, 51, None, "rate_limits"),
                 "positive integer", id="cap-float"),
    pytest.param("max_in_flight: 16", "max_in_flight: true", (3, 51, None, "rate_limits"),
                 "positive integer", id="cap-bool"),
    pytest.param("requests_per_second: 5", "requests_per_second: 0", (3, 33, None, "rate_limits"),
                 "number > 0", id="rate-zero"),
    pytest.param("requests_per_second: 5", "requests_per_second: -2", (3, 33, None,
                 "rate_limits"), "number > 0", id="rate-negative"),
    pytest.param("requests_per_second: 5", "requests_per_second: .inf", (3, 33, None,
                 "rate_limits"), "number > 0", id="rate-inf"),
    pytest.param("requests_per_second: 5", "requests_per_second: '5'", (3, 33, None,
                 "rate_limits"), "number > 0", id="rate-string"),
    pytest.param("    max_in_flight: 2\n", "    {}\n", (5, 5, None, "rate_limits"),
                 "sets no limit", id="empty-limit"),
    pytest.param("  local:\n    max_in_flight: 2\n", "  local: 3\n", (4, 10, None,
                 "rate_limits"), "must be a mapping", id="limit-not-a-mapping"),
    pytest.param("  local:\n", "  lo cal:\n", (4, 3, None, "rate_limits"),
                 "invalid rate limit name", id="bad-name"),
    pytest.param("    inputs: [a]\n    outputs:", "    inputs: [a]\n    rate_limit: openai\n"
                 "    outputs:", (19, 5, "r", "rate_limit"), "applies to generate and "
                 "transform stages only", id="on-a-run-stage"),
]


@pytest.mark.parametrize(("old", "new", "where", "words"), MISTAKES)
def test_each_mistake_is_one_error_at_its_place(proj: Project, old: str, new: str,
                                                  where: tuple[int, int, str | None, str],
                                                  words: str) -> None:
    text = HEAD + LIMITS + STAGES
    assert text.count(old) == 1, old
    text = text.replace(old, new)
    if "lo cal" in new:  # the stage names the limit by its (invalid) name: not a 2nd error
        text = text.replace("rate_limit: local", "rate_limit: lo cal")
    errors = _errors(proj, text)
    assert [(e.line, e.column, e.stage, e.key) for e in errors] == [where], \
        "\n".join(e.render() for e in errors)
    assert words in errors[0].render()


def test_without_rate_limits_a_stage_naming_one_is_told_how_to_define_it(proj: Project) -> None:
    errors = _errors(proj, HEAD + STAGES.replace("rate_limit: local", "rate_limit: openai"))
    assert [(e.stage, e.key) for e in errors] == [("a", "rate_limit"), ("j", "rate_limit")]
    assert "define it: rate_limits:" in errors[0].render()


@pytest.mark.parametrize("top", ["rate_limit:\n  openai: {max_in_flight: 1}\n",
                                 "rate_limits: [openai]\n"])
def test_a_wrong_rate_limits_is_one_error_not_one_per_stage(proj: Project, top: str) -> None:
    errors = _errors(proj, HEAD + top + STAGES)
    assert [(e.line, e.stage) for e in errors] == [(2, None)], \
        "\n".join(e.render() for e in errors)
    assert "rate_limits" in errors[0].render()


def test_the_cli_shows_file_line_column_and_did_you_mean(proj: Project) -> None:
    proj.write("Workflowfile", HEAD + LIMITS + STAGES.replace("rate_limit: local",
                                                              "rate_limit: locl"))
    result = proj.run("-n")
    assert result.code == 2
    assert "Workflowfile:15:17, stage 'j', key 'rate_limit': unknown rate limit `locl`" \
        in result.stderr
    assert "did you mean `local`?" in result.stderr


def test_the_schema_lists_the_keys(proj: Project) -> None:
    result = proj.run("schema")
    assert result.code == 0
    schema = json.loads(result.stdout)
    limits = schema["properties"]["rate_limits"]
    assert set(limits["additionalProperties"]["properties"]) == {"requests_per_second",
                                                                 "max_in_flight"}
    assert limits["additionalProperties"]["additionalProperties"] is False
    stage = schema["$defs"]["stage"]
    assert "rate_limit" in stage["properties"]
    run_branch = next(b for b in stage["oneOf"] if b["required"] == ["run"])
    assert "rate_limit" not in run_branch["propertyNames"]["enum"]
    assert "rate_limit" in schema["properties"]["defaults"]["properties"]


# ---------------------------------------------------------------- not in the fingerprint


def _edit(project: Project, old: str, new: str) -> None:
    path = project.root / "Workflowfile"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(("old", "new"), [
    ("requests_per_second: 5", "requests_per_second: 50"),
    ("max_in_flight: 16", "max_in_flight: 1"),
    ("    rate_limit: openai\n", ""),
    ("    rate_limit: local\n", "    rate_limit: openai\n"),
    (LIMITS, "rate_limits: {openai: {max_in_flight: 3}}\n"),
])
def test_changing_a_limit_reruns_nothing(proj: Project, old: str, new: str) -> None:
    proj.write("Workflowfile", HEAD + LIMITS + STAGES)
    assert proj.run().code == 0
    if old == LIMITS:
        _edit(proj, "    rate_limit: local\n", "")
    _edit(proj, old, new)
    plan = proj.run("-n", "--json")
    assert plan.code == 0, plan.stderr
    assert {s["stage"]: s["action"] for s in plan.json()["stages"]} == \
        {"a": "up_to_date", "j": "up_to_date", "r": "up_to_date"}
    build = proj.run("--json")
    assert build.code == 0 and all(s["result"] == "up_to_date" for s in build.json()["stages"])


def test_adding_limits_to_a_built_workflow_reruns_nothing(proj: Project) -> None:
    plain = STAGES.replace("    rate_limit: openai\n", "").replace("    rate_limit: local\n", "")
    proj.write("Workflowfile", HEAD + plain)
    assert proj.run().code == 0
    proj.write("Workflowfile", HEAD + LIMITS + STAGES)
    build = proj.run("--json")
    assert build.code == 0 and all(s["result"] == "up_to_date" for s in build.json()["stages"])


# ---------------------------------------------------------------- the compiled workflow


def test_a_compiled_hit_equals_a_miss(proj: Project) -> None:
    path = proj.write("Workflowfile", HEAD + LIMITS + STAGES)
    (proj.root / "artifacts").mkdir()
    miss = compiled.load(path, "Workflowfile")
    file = compiled.cache_file(path.resolve(), "Workflowfile", "artifacts")
    assert file.is_file()
    hit = compiled.load(path, "Workflowfile")
    assert compiled._read(file) is not None
    assert repr(hit) == repr(miss) and hit.rate_limits == miss.rate_limits
    assert hit.rate_limits["openai"] == RateLimit("openai", 5.0, 16)
    assert hit.stages["a"].rate_limit == "openai"
    # an edited limit is a miss: the new values are read
    path.write_text(textwrap.dedent(path.read_text()).replace("max_in_flight: 16",
                                                              "max_in_flight: 7"))
    again = compiled.load(path, "Workflowfile")
    assert again.rate_limits["openai"].max_in_flight == 7


def test_a_hit_from_the_cli_still_limits(proj: Project) -> None:
    """Build twice from the cache with a rate of 1 per 100 s: the second request of each
    build waits, so a build whose limit were lost would finish; with it, the stage records
    only its first batch before the test ends it (no timing: the batch count decides)."""
    from test_nbcompile_cache import run  # reports whether the cache was hit

    proj.write("code/one.py", "def make(ctx):\n    with ctx.request():\n        pass\n"
                              "    return [{'i': ctx.batch_index}]\n")
    proj.write("Workflowfile", HEAD + "rate_limits:\n  slow: {requests_per_second: 100}\n"
               "stages:\n  a:\n    generate: code/one.py:make\n    num_records: 3\n"
               "    batch_size: 1\n    rate_limit: slow\n")
    assert proj.run().code == 0
    assert run(proj, "status")[0].code == 0
    result, hit = run(proj, "--force", "a", "--json")
    assert hit and result.code == 0
    path = proj.root / "Workflowfile"
    path.write_text(path.read_text().replace("100}", "0.01}"))
    assert run(proj, "status")[0].code == 0
    proc = proj.start("--force", "a")
    try:
        stage = proj.root / "artifacts" / "demo" / "a"
        _wait_for_batches(stage, 1)
        assert proc.poll() is None  # the second request waits ~100 s
    finally:
        proc.terminate()
        proc.wait(60)


def _wait_for_batches(stage: Path, n: int) -> None:
    import time

    deadline = time.monotonic() + 60
    while len(list(stage.rglob("*.parquet"))) < n:
        assert time.monotonic() < deadline, "no batch written"
        time.sleep(0.02)
