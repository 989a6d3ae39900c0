"""When a stage's code raises, the failure says where (issue 9, "When something fails, show
where"): the stage, the batch, the exception, and the user's own frame (`stages/x.py:7 in
make`, project-relative, never a dd-build frame); the full traceback in the stage's log.txt
(generate, transform and callbacks alike) and on stderr with -v; one line per retry."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Project, Result

HELPER = """\
def explode(value):
    raise ValueError(f"bad value {value}")  # RAISE
"""

ANSWERS = """\
from stages.helper import explode


def make(ctx):
    if ctx.batch_index == 1:
        print("about to fail")
        return explode(ctx.batch_index)  # CALL
    return [{"i": ctx.offset + k} for k in range(ctx.size)]


def fine(ctx):
    return [{"i": ctx.offset + k} for k in range(ctx.size)]
"""

JOIN = """\
import json


def join(ctx):
    return json.loads("not json")  # LIBRARY
"""

CALLBACK = """\
def after(ctx):
    raise KeyError("no such column")  # CALLBACK
"""

WORKFLOW = """\
workflow: demo
stages:
  answers:
    generate: stages/answers.py:make
    num_records: 6
    batch_size: 2
  fine:
    generate: stages/answers.py:fine
    num_records: 2
  joined:
    transform: stages/join.py:join
    inputs: [fine]
  checked:
    generate: stages/answers.py:fine
    num_records: 2
    on_success: stages/cb.py:after
"""


def line_of(project: Project, rel: str, marker: str) -> int:
    """The 1-based line of `rel` holding `# MARKER`."""
    lines = (project.root / rel).read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if f"# {marker}" in text)


@pytest.fixture
def failing(tmp_path: Path) -> Project:
    proj = Project(tmp_path / "proj")
    proj.write("stages/__init__.py", "")
    proj.write("stages/helper.py", HELPER)
    proj.write("stages/answers.py", ANSWERS)
    proj.write("stages/join.py", JOIN)
    proj.write("stages/cb.py", CALLBACK)
    proj.write("Workflowfile", WORKFLOW)
    return proj


def failed(result: Result) -> str:
    assert result.code == 1, f"exit {result.code}\n{result.stdout}\n{result.stderr}"
    return result.stderr


def block(err: str, stage: str) -> list[str]:
    """The lines of a stage's failure, from `✗ stage: failed` to the next stage's line."""
    lines = err.splitlines()
    start = lines.index(f"✗ {stage}: failed")
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")),
               len(lines))
    return lines[start:end]


def stage_json(result: Result, name: str) -> dict[str, Any]:
    return next(s for s in json.loads(result.stdout)["stages"] if s["stage"] == name)


def test_a_raising_batch_names_stage_batch_exception_and_the_users_frame(
        failing: Project) -> None:
    err = failed(failing.run("answers"))
    lines = block(err, "answers")
    # the stage is named by `✗ answers: failed`, not again on the line under it
    assert "batch 1" in lines[1] and "ValueError" in lines[1] and "answers" not in lines[1]
    assert "bad value 1" in lines[1]
    raise_at = line_of(failing, "stages/helper.py", "RAISE")
    call_at = line_of(failing, "stages/answers.py", "CALL")
    assert lines[2].strip() == (f"at stages/helper.py:{raise_at} in explode "
                                f"(called from stages/answers.py:{call_at} in make)")
    assert "buildtool" not in "\n".join(lines[:3])
    assert "Traceback" not in err  # without -v the traceback is only in the log
    assert any("the traceback is in" in line and "answers/log.txt" in line for line in lines)


def test_the_traceback_goes_to_the_log_without_dd_builds_frames(failing: Project) -> None:
    failed(failing.run("answers"))
    log = (failing.artifacts / "answers" / "log.txt").read_text()
    assert "about to fail" in log  # the code's output stays first
    trace = log[log.index("Traceback (most recent call last)"):]
    assert "stages/answers.py" in trace and "stages/helper.py" in trace
    assert "ValueError: bad value 1" in trace
    assert "buildtool" not in trace  # starts at the user's code, not dd-build's call of it


def test_verbose_prints_the_full_traceback_on_stderr(failing: Project) -> None:
    err = failed(failing.run("-v", "answers"))
    trace = err[err.index("Traceback (most recent call last)"):err.index("✗ answers: failed")]
    assert "stages/answers.py" in trace and "stages/helper.py" in trace
    assert "ValueError: bad value 1" in trace
    assert "buildtool" not in trace


def test_json_carries_the_users_frame(failing: Project) -> None:
    result = failing.run("--json", "answers")
    assert result.code == 1
    stage = stage_json(result, "answers")
    assert stage["result"] == "failed" and "ValueError" in stage["error"]
    assert stage["at"] == {
        "file": "stages/helper.py", "line": line_of(failing, "stages/helper.py", "RAISE"),
        "function": "explode",
        "called_from": {"file": "stages/answers.py",
                        "line": line_of(failing, "stages/answers.py", "CALL"),
                        "function": "make"}}
    assert stage["log"].endswith("answers/log.txt")
    # the shape stays: every key of before is still there
    assert {"stage", "action", "step", "reasons", "rows", "batches_total", "batches_run",
            "result", "error"} <= set(stage)


def test_a_raising_transform_points_at_its_own_line_not_the_librarys(failing: Project) -> None:
    result = failing.run("--json", "joined")
    assert result.code == 1
    stage = stage_json(result, "joined")
    line = line_of(failing, "stages/join.py", "LIBRARY")
    # raised inside json: the innermost frame of the project is the line that called it
    assert stage["at"] == {"file": "stages/join.py", "line": line, "function": "join"}
    lines = block(result.stderr, "joined")
    assert "JSONDecodeError" in lines[1] and "stage 'joined'" not in lines[1]
    assert lines[2].strip() == f"at stages/join.py:{line} in join"
    log = (failing.artifacts / "joined" / "log.txt").read_text()  # a transform gets a log too
    assert "Traceback (most recent call last)" in log and "JSONDecodeError" in log


def test_a_raising_callback_points_at_the_callback(failing: Project) -> None:
    result = failing.run("--json", "checked")
    assert result.code == 1
    stage = stage_json(result, "checked")
    line = line_of(failing, "stages/cb.py", "CALLBACK")
    assert stage["at"] == {"file": "stages/cb.py", "line": line, "function": "after"}
    lines = block(result.stderr, "checked")
    assert "on_success" in lines[1] and "KeyError" in lines[1] and "no such column" in lines[1]
    assert lines[2].strip() == f"at stages/cb.py:{line} in after"
    log = (failing.artifacts / "checked" / "log.txt").read_text()
    assert "Traceback (most recent call last)" in log and "KeyError" in log


def test_code_that_raises_on_import_points_at_the_module_line(failing: Project) -> None:
    failing.write("stages/join.py", 'import json\n\nraise RuntimeError("no config")  # IMPORT\n'
                  "\n\ndef join(ctx):\n    return None\n")
    result = failing.run("--json", "joined")
    assert result.code == 1
    stage = stage_json(result, "joined")
    assert stage["at"]["file"] == "stages/join.py"
    assert stage["at"]["line"] == line_of(failing, "stages/join.py", "IMPORT")
    assert "RuntimeError" in stage["error"] and "no config" in stage["error"]
    log = (failing.artifacts / "joined" / "log.txt").read_text()
    trace = log[log.index("Traceback (most recent call last)"):].splitlines()
    assert trace[1].strip().startswith('File "') and "stages/join.py" in trace[1]  # no
    # frames of dd-build or of the import system above the user's module


def test_the_frame_is_relative_to_the_project_when_built_from_elsewhere(
        failing: Project) -> None:
    result = Project(failing.root.parent).run("-C", "proj", "--json", "answers")
    assert result.code == 1
    at = stage_json(result, "answers")["at"]
    assert at["file"] == "stages/helper.py" and at["called_from"]["file"] == "stages/answers.py"


def test_code_outside_the_project_is_named_by_its_path(failing: Project, tmp_path: Path
                                                       ) -> None:
    lib = tmp_path / "lib"
    (lib / "extlib").mkdir(parents=True)
    (lib / "extlib" / "__init__.py").write_text("")
    (lib / "extlib" / "gen.py").write_text("def make(ctx):\n    raise OSError('offline')\n")
    failing.write("Workflowfile", "workflow: demo\nstages:\n  ext:\n"
                  "    generate: extlib.gen:make\n    num_records: 1\n")
    result = failing.run("--json", PYTHONPATH=f"{REPO}{os.pathsep}{lib}")  # this dd-build
    assert result.code == 1
    at = stage_json(result, "ext")["at"]
    assert Path(at["file"]).resolve() == (lib / "extlib" / "gen.py").resolve()
    assert (at["line"], at["function"]) == (2, "make")


def test_a_failure_of_dd_builds_own_checks_points_nowhere(failing: Project) -> None:
    """A return value that cannot be stored is the stage's failure, not an exception of the
    user's code: no frame is claimed for it."""
    failing.write("stages/answers.py", "def make(ctx):\n    return [{'x': object()}]\n")
    failing.write("Workflowfile", "workflow: demo\nstages:\n  answers:\n"
                  "    generate: stages/answers.py:make\n    num_records: 1\n")
    result = failing.run("--json")
    assert result.code == 1
    stage = stage_json(result, "answers")
    assert stage["result"] == "failed" and "at" not in stage


# ------------------------------------------------------------------------------- retries

FLAKY = """\
from pathlib import Path


def make(ctx):
    counter = Path(__file__).parent / f"attempts-{ctx.batch_index}"
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    if ctx.batch_index == 1 and n <= FAILS:
        raise ConnectionError("upstream hiccup\\nsecond line of the message")  # FLAKY
    return [{"i": ctx.offset + k} for k in range(ctx.size)]
"""


def flaky(project: Project, fails: int, retries: int) -> None:
    project.write("stages/flaky.py", FLAKY.replace("FAILS", str(fails)))
    project.write("Workflowfile", "workflow: demo\nstages:\n  flaky:\n"
                  "    generate: stages/flaky.py:make\n    num_records: 6\n    batch_size: 2\n"
                  f"    retries: {retries}\n")


def retry_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "retrying in" in line]


def test_each_retry_is_one_line_without_verbose(tmp_path: Path) -> None:
    proj = Project(tmp_path / "proj")
    flaky(proj, fails=2, retries=3)
    result = proj.run(DD_BUILD_RETRY_BASE_S="0.001")
    assert result.code == 0, result.stderr
    lines = retry_lines(result.stderr)
    line = line_of(proj, "stages/flaky.py", "FLAKY")
    assert len(lines) == 2
    for n, text in enumerate(lines, 1):
        assert text.startswith(f"  flaky: batch 1, attempt {n} of 4 failed: ConnectionError: ")
        assert "upstream hiccup second line of the message" in text  # the exception, one line
        assert f"(at stages/flaky.py:{line} in make)" in text
    assert "Traceback" not in result.stderr


def test_a_batch_that_fails_every_retry_reports_each_then_fails(tmp_path: Path) -> None:
    proj = Project(tmp_path / "proj")
    flaky(proj, fails=9, retries=1)
    result = proj.run("--json", DD_BUILD_RETRY_BASE_S="0.001")
    assert result.code == 1
    assert [text.split(": ConnectionError")[0] for text in retry_lines(result.stderr)] == \
        ["  flaky: batch 1, attempt 1 of 2 failed"]
    stage = stage_json(result, "flaky")
    assert "after 2 attempts" in stage["error"]
    assert stage["at"]["file"] == "stages/flaky.py"
    # the frame follows the whole message, also one of several lines
    lines = stage["error"].splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  at stages/flaky.py:"))
    assert "second line of the message" in lines[at - 1]


def test_quiet_hides_retries_but_not_the_failure(tmp_path: Path) -> None:
    proj = Project(tmp_path / "proj")
    flaky(proj, fails=9, retries=1)
    result = proj.run("-q", DD_BUILD_RETRY_BASE_S="0.001")
    assert result.code == 1
    assert retry_lines(result.stderr) == []
    assert "at stages/flaky.py:" in result.stderr


def test_sys_exit_in_stage_code_points_at_the_call(failing: Project) -> None:
    failing.write("stages/answers.py", ANSWERS.replace("def make(ctx):", "def _make(ctx):")
                  + "\n\nimport sys\n\n\ndef make(ctx):\n    sys.exit(5)  # EXIT\n")
    result = failing.run("--json", "answers")
    assert result.code == 1
    stage = stage_json(result, "answers")
    assert "sys.exit(5)" in stage["error"]
    assert stage["at"] == {"file": "stages/answers.py",
                           "line": line_of(failing, "stages/answers.py", "EXIT"),
                           "function": "make"}


def test_the_api_carries_the_users_frame(failing: Project) -> None:
    import buildtool

    report = buildtool.build(failing.root, "answers")
    answers = report.stage("answers")
    assert answers.result == "failed" and answers.at is not None
    assert str(answers.at) == (
        f"at stages/helper.py:{line_of(failing, 'stages/helper.py', 'RAISE')} in explode "
        f"(called from stages/answers.py:{line_of(failing, 'stages/answers.py', 'CALL')} "
        "in make)")
    assert answers.to_json()["at"]["function"] == "explode"
