"""`-j/--jobs`, the Workflowfile's `jobs:` and the API's `jobs=`: values, usage errors, the
cap, and the compiled workflow carrying `jobs:` (a hit builds as a miss does)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from c10b_support import jobs_project
from conftest import Project
from test_c10b_jobs_outputs import MEET
from test_nbcompile_cache import run

SMALL = """
workflow: demo
stages:
  a: {generate: code/jobs.py:rows, num_records: 4, batch_size: 2}
  b: {generate: code/jobs.py:rows, num_records: 4, batch_size: 2}
"""


@pytest.mark.parametrize("args", [("-j", "0"), ("-j", "-1"), ("--jobs", "-3"), ("-j", "1.5"),
                                  ("--jobs=1.5",), ("-j0",), ("--jobs=a",)])
def test_jobs_that_are_not_a_whole_number_of_1_or_more_are_usage_errors(
        tmp_path: Path, args: tuple[str, ...]) -> None:
    proj = jobs_project(tmp_path / "p", SMALL)
    result = proj.run(*args)
    assert result.code == 2
    assert "-j/--jobs" in result.stderr and "1 or more" in result.stderr
    assert not (proj.root / "artifacts").exists()  # nothing ran
    doc = proj.run("--json", *args)
    assert doc.code == 2 and json.loads(doc.stdout)["error"]["exit_code"] == 2


@pytest.mark.parametrize("args", [("-j",), ("--jobs",), ("-j", "--", "a", "b"), ("-j32",),
                                  ("a", "b", "--jobs", "3"), ("--jobs=2",)])
def test_jobs_forms_that_build(tmp_path: Path, args: tuple[str, ...]) -> None:
    proj = jobs_project(tmp_path / "p", SMALL)
    result = proj.run("--json", *args)
    assert result.code == 0, result.stderr
    assert {s["result"] for s in result.json()["stages"]} == {"completed"}
    assert "cap" not in result.stderr  # -j alone is the cap: nothing is clamped


@pytest.mark.parametrize("args", [("-j", "a"), ("--jobs", "a"), ("-j", "a", "-k")])
def test_jobs_before_a_target_is_jobs_alone_as_in_make(tmp_path: Path, args: tuple[str, ...]
                                                       ) -> None:
    proj = jobs_project(tmp_path / "p", SMALL)
    result = proj.run("--json", *args)
    assert result.code == 0, result.stderr
    assert [s["stage"] for s in result.json()["stages"]] == ["a"]  # the target, and only it
    named = jobs_project(tmp_path / "q", SMALL.replace("  b:", "  nan:"))
    assert [s["stage"] for s in named.run("--json", "-j", "nan").json()["stages"]] == ["nan"]
    unknown = proj.run("-j", "nosuch")
    assert unknown.code == 2 and "nosuch" in unknown.stderr  # a word is a target, not N


def test_jobs_above_the_cap_is_clamped_with_one_note(tmp_path: Path) -> None:
    proj = jobs_project(tmp_path / "p", SMALL)
    result = proj.run("-j", "100")
    assert result.code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "cap" in line]
    assert notes == ["  demo: -j 100 is more than the cap of 32: running up to 32 stages at once"]
    assert "cap" not in proj.run("-q", "-j", "100", "--force", "a").stderr  # -q: errors only


def test_the_help_names_the_option(tmp_path: Path) -> None:
    proj = jobs_project(tmp_path / "p", SMALL)
    result = proj.run("--help")
    assert "-j [N], --jobs [N]" in result.stdout


@pytest.mark.parametrize(("value", "said"), [
    ("0", "integer 0"), ("-2", "integer -2"), ("'4'", "string '4'"), ("true", "boolean true"),
    ("2.5", "2.5"), ("[2]", "a list"), ("", "null")])
def test_workflowfile_jobs_must_be_a_whole_number_of_1_or_more(
        tmp_path: Path, value: str, said: str) -> None:
    proj = jobs_project(tmp_path / "p", SMALL.replace("workflow: demo", f"workflow: demo\njobs: {value}"))
    result = proj.run("-n")
    assert result.code == 2
    assert "Workflowfile:3:" in result.stderr  # file:line of the value
    assert "`jobs` must be a whole number of 1 or more" in result.stderr
    assert said in result.stderr


def test_a_misspelt_jobs_key_is_suggested(tmp_path: Path) -> None:
    proj = jobs_project(tmp_path / "p", "job: 2\n" + SMALL)
    result = proj.run("-n")
    assert result.code == 2 and "did you mean `jobs`?" in result.stderr


def test_workflowfile_jobs_above_the_cap_is_clamped_with_a_note(tmp_path: Path) -> None:
    proj = jobs_project(tmp_path / "p", "jobs: 40\n" + SMALL)
    result = proj.run()
    assert result.code == 0, result.stderr
    assert "jobs: 40 is more than the cap of 32" in result.stderr
    assert "cap" not in proj.run("--force", "a", "-j", "2").stderr  # -j wins over jobs:


def test_the_schema_knows_jobs(tmp_path: Path) -> None:
    proj = jobs_project(tmp_path / "p", SMALL)
    schema = json.loads(proj.run("schema").stdout)
    assert schema["properties"]["jobs"]["type"] == "integer"
    assert schema["properties"]["jobs"]["minimum"] == 1


def test_a_compiled_workflow_carries_jobs(tmp_path: Path) -> None:
    """A hit of the compiled workflow (no YAML read) still runs two stages at once: the
    meeting stages finish only then."""
    proj = jobs_project(tmp_path / "p", "jobs: 2\n" + MEET)
    assert proj.run("-q").code == 0
    assert run(proj, "status")[0].code == 0  # stores the compiled workflow
    result, hit = run(proj, "--json", "--force", "x", "--force", "y", env={"WAIT_S": "30"})
    assert hit
    assert result.code == 0, result.stderr


def test_a_compiled_hit_equals_a_miss_with_jobs(tmp_path: Path) -> None:
    from buildtool import compiled

    proj = jobs_project(tmp_path / "p", "jobs: 7\n" + SMALL)
    (proj.root / "artifacts").mkdir()
    path = proj.root / "Workflowfile"
    miss = compiled.load(path, "Workflowfile")
    assert list((proj.root / "artifacts" / ".compiled").glob("*.bin"))
    hit = compiled.load(path, "Workflowfile")
    assert miss.jobs == hit.jobs == 7
    assert repr(miss) == repr(hit)
    none = jobs_project(tmp_path / "q", SMALL)
    (none.root / "artifacts").mkdir()
    compiled.load(none.root / "Workflowfile", "Workflowfile")
    assert compiled.load(none.root / "Workflowfile", "Workflowfile").jobs is None


def test_the_api_takes_jobs(tmp_path: Path) -> None:
    import buildtool
    from buildtool.errors import UsageError

    proj = jobs_project(tmp_path / "p", MEET)
    report = buildtool.build(proj.root, jobs=2)
    assert report.ok, [s.error for s in report.stages]
    assert [s.stage for s in report.stages] == ["x", "y", "after"]
    with pytest.raises(UsageError, match="jobs=0"):
        buildtool.build(proj.root, jobs=0)
    with pytest.raises(TypeError, match="jobs"):
        buildtool.build(proj.root, jobs="2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="jobs"):
        buildtool.build(proj.root, jobs=True)


def test_the_api_prints_nothing_of_stage_code_under_jobs(tmp_path: Path,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    import buildtool

    proj = jobs_project(tmp_path / "p", SMALL)
    assert buildtool.build(proj.root, jobs=2).ok
    out, err = capfd.readouterr()
    assert "out a" not in out + err and "err b" not in out + err
    assert "out a 0" in (proj.artifacts / "a" / "log.txt").read_text()


def test_j1_prints_what_a_build_without_j_prints(tmp_path: Path) -> None:
    def text(proj: Project, *args: str) -> tuple[int, str, str]:
        result = proj.run(*args)
        strip = [line.rsplit(" in ", 1)[0] for line in result.stdout.splitlines()]
        return result.code, "\n".join(strip), result.stderr

    one = jobs_project(tmp_path / "one", SMALL)
    plain = jobs_project(tmp_path / "plain", SMALL)
    assert text(one, "-j", "1", "-v") == text(plain, "-v")
