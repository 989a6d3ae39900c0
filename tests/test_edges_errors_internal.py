"""A bug in dd-build (an exception nobody anticipated) is caught, recorded and reported.

During a stage: the stage is recorded `failed` (never left `running`), the traceback goes to
its log, the build stops with a one-screen message and exit 70. Outside a stage: the same
message and exit code, the traceback in a file it names. The bug is injected for real: a
`python -c` that replaces a function of buildtool with one that raises, then runs the CLI.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, Result

INTERNAL = 70

# (module, attribute, replacement). The replacement's source is run in the patched process.
BUGS = {
    # a batch write that fails with a TypeError after the stage has begun
    "type-error": ("buildtool.stagerun", "StageRun.write_batch",
                   "def bug(*args, **kwargs):\n    raise TypeError('injected bug')"),
    # a converter that recurses for ever
    "recursion": ("buildtool.tables", "to_table",
                  "def bug(*args, **kwargs):\n    return bug(*args, **kwargs)"),
    # the boundary steps, after every batch is written
    "attribute-error": ("buildtool.execute", "run_boundary",
                        "def bug(*args, **kwargs):\n    return None.steps"),
}


def _run_with_bug(project: Project, module: str, attribute: str, source: str,
                  *args: str) -> Result:
    owner, _, name = attribute.rpartition(".")
    code = textwrap.dedent(f"""
        import importlib, sys
        target = importlib.import_module({module!r})
        owner = getattr(target, {owner!r}) if {owner!r} else target
        {textwrap.indent(source, " " * 8).strip()}
        setattr(owner, {name!r}, bug)
        from buildtool.cli import main
        raise SystemExit(main(sys.argv[1:]))
        """)
    env = project.env(TMPDIR=str(project.root.parent))  # where a traceback file goes
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=project.root, env=env,
                          capture_output=True, text=True, timeout=300)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _internal_exit(result: Result) -> dict[str, Any]:
    shown = f"exit {result.code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.code == INTERNAL, shown
    assert "dd-build internal error" in result.stderr, shown
    assert "please report it" in result.stderr, shown
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["error"]["exit_code"] == INTERNAL
    return doc


@pytest.mark.parametrize("bug", list(BUGS))
def test_a_bug_during_a_stage_fails_it_and_ends_the_build(project: Project, bug: str) -> None:
    result = _run_with_bug(project, *BUGS[bug], "--json")
    doc = _internal_exit(result)
    error_name = {"type-error": "TypeError", "recursion": "RecursionError",
                  "attribute-error": "AttributeError"}[bug]
    assert doc["error"]["stage"] == "a" and doc["error"]["log"] == "artifacts/demo/a/log.txt"
    assert f"while running stage 'a': {error_name}" in doc["error"]["message"]
    assert {s["stage"]: s["result"] for s in doc["stages"]} == \
        {"a": "failed", "b": "not_run", "c": "not_run"}
    assert "Traceback" not in result.stderr  # one screen; the traceback is in the log
    assert len(result.stderr.splitlines()) < 15, result.stderr
    record = project.record("a")
    assert record["status"] == "failed"  # never left `running`
    assert f"dd-build internal error: {error_name}" in record["error"]
    log = (project.artifacts / "a" / "log.txt").read_text()
    assert "Traceback (most recent call last)" in log and error_name in log
    # without the bug, the next build picks up from the failed record and finishes
    assert project.run("--json").code == 0
    assert project.record("a")["status"] == "completed"


def test_batches_written_before_the_bug_stay(project: Project) -> None:
    result = _run_with_bug(project, *BUGS["attribute-error"], "--json")
    _internal_exit(result)
    assert len(project.record("a")["batches"]) == 4  # every batch, then the bug
    project.clear_calls()
    assert project.run("--json").code == 0
    assert not [c for c in project.calls() if c.startswith("a ")]  # no batch of a again


def test_verbose_prints_the_traceback(project: Project) -> None:
    result = _run_with_bug(project, *BUGS["type-error"], "-v")
    assert result.code == INTERNAL, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert "TypeError: injected bug" in result.stderr


def test_keep_going_stops_at_a_bug(project: Project) -> None:
    project.write("Workflowfile", """
        workflow: demo
        stages:
          a:
            generate: code/stages.py:rows
            num_records: 4
          z:
            generate: code/stages.py:rows
            num_records: 4
        """)
    doc = _internal_exit(_run_with_bug(project, *BUGS["type-error"], "--json", "-k"))
    assert {s["stage"]: s["result"] for s in doc["stages"]} == {"a": "failed", "z": "not_run"}


def test_user_code_errors_stay_stage_failures(project: Project) -> None:
    result = project.run("--json", FAIL_AT="a:1")
    assert result.code == 1, result.stderr
    assert "internal error" not in result.stdout + result.stderr


@pytest.mark.parametrize("args", [("--json",), ("status", "--json"), ("-n", "--json")])
def test_a_bug_outside_any_stage(project: Project, args: tuple[str, ...]) -> None:
    result = _run_with_bug(project, "buildtool.execute", "plan",
                           "def bug(*args, **kwargs):\n    raise KeyError('injected bug')", *args)
    doc = _internal_exit(result)
    assert doc["workflow"] == "demo"
    assert "dd-build internal error: KeyError: 'injected bug'" in doc["error"]["message"]
    assert "Traceback" not in result.stderr
    path = Path(doc["error"]["traceback_file"])
    assert path.parent == project.root.parent and path.name in result.stderr
    assert "KeyError: 'injected bug'" in path.read_text()
    assert "Traceback (most recent call last)" in path.read_text()
    assert not (project.artifacts / "a" / "stage.json").exists()


def test_a_bug_outside_any_stage_with_verbose(project: Project) -> None:
    result = _run_with_bug(project, "buildtool.execute", "plan",
                           "def bug(*args, **kwargs):\n    raise KeyError('injected bug')", "-v")
    assert result.code == INTERNAL
    assert "Traceback (most recent call last)" in result.stderr
    assert re.search(r"the traceback is in \S+dd-build-internal-error-\S+\.txt\n", result.stderr)
    assert result.stdout == ""


def test_a_bug_in_the_reporter_after_a_stage(project: Project) -> None:
    """Outside _execute (here: printing a stage's result), the build still ends with exit 70,
    and the stage it had finished keeps its completed record."""
    result = _run_with_bug(project, "buildtool.reporter", "TextReporter.finished",
                           "def bug(self, result):\n    raise ValueError('injected bug')",
                           "--json")
    doc = _internal_exit(result)
    assert "ValueError: injected bug" in doc["error"]["message"]
    assert doc["stages"][0]["result"] == "completed"
    assert project.record("a")["status"] == "completed"
