"""A `run` stage that fails says what ran and shows the end of its output; with -v its command
and its output as they come; a command that changes one of its own inputs is warned about;
`{inputs[NAME]}`, `{inputs.stages}` and `{inputs.files}` pass only some inputs (issue 9,
"When something fails, show where")."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Project, Result

PY = sys.executable

NOISY = """\
import sys
for i in range(30):
    print("line", i)
print("oops on stderr", file=sys.stderr)
sys.exit(3)
"""


def stage_json(result: Result, name: str) -> dict[str, Any]:
    return next(s for s in json.loads(result.stdout)["stages"] if s["stage"] == name)


def failure_lines(err: str, stage: str) -> list[str]:
    lines = err.splitlines()
    start = lines.index(f"✗ {stage}: failed")
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")),
               len(lines))
    return lines[start:end]


@pytest.fixture
def noisy(tmp_path: Path) -> Project:
    proj = Project(tmp_path / "proj")
    proj.write("scripts/noisy.py", NOISY)
    proj.write("Workflowfile", "workflow: demo\nstages:\n  report:\n"
               f"    run: {PY} scripts/noisy.py {{outputs}} {{params.title}}\n"
               "    params: {title: my report}\n    outputs: [out.txt]\n")
    return proj


def test_a_failing_command_shows_the_command_and_the_last_20_lines(noisy: Project) -> None:
    result = noisy.run()
    assert result.code == 1
    lines = failure_lines(result.stderr, "report")
    assert "exited with status 3" in lines[1] and "stage 'report'" not in lines[1]
    # the exact string handed to the shell: placeholders expanded and quoted
    assert lines[2].strip() == f"command: {PY} scripts/noisy.py out.txt 'my report'"
    shown = [line.strip()[2:] for line in lines if line.strip().startswith("| ")]
    assert shown == [f"line {i}" for i in range(11, 30)] + ["oops on stderr"]
    assert any("the last 20 lines of its output" in line and "report/log.txt" in line
               for line in lines)
    log = (noisy.artifacts / "report" / "log.txt").read_text()
    assert "line 0\n" in log and "oops on stderr" in log  # the whole output stays in the log


def test_json_error_of_a_failing_command_names_it(noisy: Project) -> None:
    result = noisy.run("--json")
    assert result.code == 1
    stage = stage_json(result, "report")
    assert f"command: {PY} scripts/noisy.py out.txt 'my report'" in stage["error"]
    assert "oops on stderr" in stage["error"] and stage["log"].endswith("report/log.txt")


def test_verbose_says_the_command_at_start_and_streams_its_output(noisy: Project) -> None:
    result = noisy.run("-v")
    assert result.code == 1
    err = result.stderr
    start = err.index(f"  report: $ {PY} scripts/noisy.py out.txt 'my report'\n")
    streamed = err[start:err.index("✗ report: failed")].splitlines()[1:]
    assert streamed == [f"    | line {i}" for i in range(30)] + ["    | oops on stderr"]
    log = (noisy.artifacts / "report" / "log.txt").read_text()  # still kept in the log
    assert log.splitlines() == [f"line {i}" for i in range(30)] + ["oops on stderr"]


def test_without_verbose_nothing_of_a_good_command_is_printed(noisy: Project) -> None:
    noisy.write("scripts/noisy.py", "import sys\nprint('quietly')\n"
                "open(sys.argv[1], 'w').write('x')\n")
    result = noisy.run()
    assert result.code == 0, result.stderr
    assert "quietly" not in result.stdout + result.stderr
    assert "$ " not in result.stderr
    assert (noisy.artifacts / "report" / "log.txt").read_text() == "quietly\n"


LIVE = """\
import sys, time
from pathlib import Path
print("first", flush=True)
go = Path("go")
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        print("never streamed", flush=True)
        sys.exit(1)
    time.sleep(0.02)
sys.stdout.write("second, without a newline")
sys.stdout.flush()
open(sys.argv[1], "w").write("done")
"""


def test_verbose_output_streams_while_the_command_runs(tmp_path: Path) -> None:
    """The command waits for a file the test writes only once dd-build has printed the
    command's first line: were its output not streamed, the command would give up."""
    proj = Project(tmp_path / "proj")
    proj.write("scripts/live.py", LIVE)
    proj.write("Workflowfile", "workflow: demo\nstages:\n  live:\n"
               f"    run: {PY} scripts/live.py {{outputs}}\n    outputs: [out.txt]\n")
    proc = subprocess.Popen([PY, "-m", "buildtool", "-v"], cwd=proj.root, env=proj.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line == "    | first\n":
            (proj.root / "go").write_text("")
            break
    out, rest = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(seen) + rest
    assert "    | first\n" in seen
    # a last line without its newline is ended before dd-build's next line
    assert rest.endswith("    | second, without a newline\n")
    assert "✓ live: completed" in out
    assert "never streamed" not in rest


def test_verbose_streaming_survives_a_command_that_leaves_a_process_behind(
        tmp_path: Path) -> None:
    """A background process holding the output pipe must not keep the build waiting."""
    proj = Project(tmp_path / "proj")
    proj.write("Workflowfile", "workflow: demo\nstages:\n  bg:\n"
               "    run: (sleep 300 & echo $! > bg.pid); echo started; echo x > out.txt\n"
               "    outputs: [out.txt]\n")
    try:
        result = proj.run("-v")
    finally:
        pid = proj.root / "bg.pid"
        if pid.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid.read_text()), signal.SIGKILL)
    assert result.code == 0, result.stderr
    assert "    | started\n" in result.stderr


# ----------------------------------------------------------- a command that writes its input

ARGV2 = """\
import sys
src, out = sys.argv[1], sys.argv[2]   # the user's bug: argv[2] is this script under {inputs}
with open(out, "a") as fh:
    fh.write("# report\\n")
open("reports/summary.md", "w").write("summary")
"""

TRAP = """\
workflow: demo
stages:
  a:
    run: PY -c "open('a.txt', 'w').write('a')"
    outputs: [a.txt]
  report:
    run: PY scripts/report.py {inputs} {outputs}
    inputs: [a, scripts/report.py]
    outputs: [reports/summary.md]
""".replace("PY", PY)


@pytest.fixture
def trap(tmp_path: Path) -> Project:
    proj = Project(tmp_path / "proj")
    proj.write("scripts/report.py", ARGV2)
    proj.write("Workflowfile", TRAP)
    (proj.root / "reports").mkdir()
    return proj


def test_a_command_that_changes_its_own_input_is_warned_about(trap: Project) -> None:
    result = trap.run()
    assert result.code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: stage 'report': the command changed scripts/report.py, an "
                        "input of this stage; the next build runs the stage again"]
    assert "{inputs[NAME]}" in result.stderr  # the hint names the way out
    plan = trap.run("-n", "--json")
    report = stage_json(plan, "report")
    assert report["action"] == "run"
    assert any(r["code"] == "input_changed" and r["input"] == "scripts/report.py"
               for r in report["reasons"])


def test_the_warning_is_in_json_and_shown_with_quiet(trap: Project) -> None:
    result = trap.run("--json", "-q")
    assert result.code == 0, result.stderr
    assert stage_json(result, "report")["warnings"] == [{
        "code": "input_changed_by_command", "file": "scripts/report.py",
        "message": "the command changed scripts/report.py, an input of this stage; the next "
                   "build runs the stage again",
        "hint": stage_json(result, "report")["warnings"][0]["hint"]}]
    assert "warning: stage 'report'" in result.stderr
    assert "warnings" not in stage_json(result, "a")


def test_a_command_that_removes_its_code_file_is_warned_about(trap: Project) -> None:
    trap.write("scripts/report.py", "import os\nos.remove('scripts/helper.txt')\n"
               "open('reports/summary.md', 'w').write('x')\n")
    trap.write("scripts/helper.txt", "data")
    wf = trap.root / "Workflowfile"
    wf.write_text(wf.read_text().replace("    inputs: [a, scripts/report.py]\n",
                                         "    inputs: [a]\n    code: [scripts/report.py, "
                                         "scripts/helper.txt]\n"))
    result = trap.run("--json")
    assert result.code == 0, result.stderr
    [warning] = stage_json(result, "report")["warnings"]
    assert warning["file"] == "scripts/helper.txt"
    assert warning["message"].startswith("the command removed scripts/helper.txt, a code file")


def test_a_command_that_leaves_its_inputs_alone_gets_no_warning(trap: Project) -> None:
    trap.write("scripts/report.py", "import sys\nopen(sys.argv[-1], 'w').write('ok')\n")
    result = trap.run("--json")
    assert result.code == 0, result.stderr
    assert "warnings" not in stage_json(result, "report")
    assert "warning" not in result.stderr
    assert {s["result"] for s in json.loads(trap.run("--json").stdout)["stages"]} == \
        {"up_to_date"}


# ---------------------------------------------------------------- inputs by name and by kind

ARGS = """\
import json, sys
*args, out = sys.argv[1:]
open(out, "w").write(json.dumps(args))
"""

BY_NAME = """\
workflow: demo
stages:
  a:
    run: PY -c "open('a.txt', 'w').write('a')"
    outputs: [a.txt]
  b:
    run: PY -c "import os; os.makedirs('b', exist_ok=True); open('b/x.txt', 'w').write('b')"
    outputs: [b/x.txt]
  args:
    run: PY scripts/args.py COMMAND {outputs}
    inputs: [a, b, notes.txt, ./data/*.csv]
    code: [scripts/args.py]
    outputs: [args.json]
""".replace("PY", PY)


def run_args(project: Project, command: str) -> list[str]:
    project.write("scripts/args.py", ARGS)
    project.write("notes.txt", "n")
    project.write("data/one.csv", "x\n1\n")
    project.write("data/two.csv", "x\n2\n")
    project.write("Workflowfile", BY_NAME.replace("COMMAND", command))
    result = project.run()
    assert result.code == 0, result.stderr
    return json.loads((project.root / "args.json").read_text())


@pytest.mark.parametrize(("command", "expected"), [
    ("{inputs[a]}", ["a.txt"]),
    ("{inputs[b]}", ["b/x.txt"]),
    ("{inputs[stage:a]}", ["a.txt"]),
    ("{inputs[notes.txt]}", ["notes.txt"]),
    ("{inputs[./data/*.csv]}", ["data/one.csv", "data/two.csv"]),
    ("{inputs[data/*.csv]}", ["data/one.csv", "data/two.csv"]),
    ("{inputs.stages}", ["a.txt", "b/x.txt"]),
    ("{inputs.files}", ["notes.txt", "data/one.csv", "data/two.csv"]),
    ("{inputs[b]} -- {inputs}", ["b/x.txt", "--", "a.txt", "b/x.txt", "notes.txt",
                                 "data/one.csv", "data/two.csv"]),
    ("{inputs[2]}", ["notes.txt"]),
])
def test_inputs_by_name_and_by_kind(tmp_path: Path, command: str, expected: list[str]) -> None:
    assert run_args(Project(tmp_path / "proj"), command) == expected


def test_a_named_input_with_a_space_is_quoted(tmp_path: Path) -> None:
    proj = Project(tmp_path / "proj")
    proj.write("scripts/args.py", ARGS)
    proj.write("my notes.txt", "n")
    proj.write("Workflowfile", "workflow: demo\nstages:\n  args:\n"
               f"    run: {PY} scripts/args.py {{inputs[my notes.txt]}} {{outputs}}\n"
               "    inputs: ['my notes.txt']\n    outputs: [args.json]\n")
    result = proj.run()
    assert result.code == 0, result.stderr
    assert json.loads((proj.root / "args.json").read_text()) == ["my notes.txt"]


@pytest.mark.parametrize(("command", "inputs", "message", "hint"), [
    ("{inputs[joind]}", "[joined, notes.txt]", "`joind` is not an input of the stage",
     "did you mean `joined`?"),
    ("{inputs[other]}", "[joined]", "`other` is not an input of the stage", "joined"),
    ("{inputs[x]}", None, "`x` is not an input of the stage", "the stage has no inputs"),
    ("{inputs.stage}", "[joined]", "did you mean `{inputs.stages}`?", "{inputs.stages}"),
    ("{inputs.files}", "[joined]", "the stage has no file inputs", "inputs:"),
    ("{inputs.stages}", "[notes.txt]", "the stage has no stage inputs", "inputs:"),
    ("{outputs[name]}", "[joined]", "outputs are named by number", "{outputs[N]}"),
])
def test_a_misnamed_input_is_refused_at_load(tmp_path: Path, command: str,
                                             inputs: str | None, message: str,
                                             hint: str) -> None:
    proj = Project(tmp_path / "proj")
    proj.write("notes.txt", "n")
    stage = f"    inputs: {inputs}\n" if inputs else ""
    proj.write("Workflowfile", "workflow: demo\nstages:\n  joined:\n"
               f"    run: {PY} -c pass > j.txt\n    outputs: [j.txt]\n  report:\n"
               f"    run: cat {command} > r.txt\n{stage}    outputs: [r.txt]\n")
    result = proj.run("--json")
    assert result.code == 2
    error = json.loads(result.stdout)["error"]
    assert error["stage"] == "report" and error["key"] == "run"
    assert error["line"] == 7
    assert message in error["message"] and hint in error["hint"]
    assert not (proj.root / "artifacts").exists()  # nothing ran


# ---------------------------------------------------------------- the example sets no trap


def test_the_example_passes_only_the_joined_output_to_its_script(tmp_path: Path) -> None:
    proj = Project(tmp_path / "example")
    shutil.copytree(REPO / "examples", proj.root / "examples")
    shutil.copy(REPO / "Workflowfile.example", proj.root / "Workflowfile")
    result = proj.run("-v")
    assert result.code == 0, result.stderr
    assert "  report: $ python3 examples/scripts/report.py " \
           "artifacts/persona-conversations/joined/batches reports/summary.md\n" in result.stderr
    assert "warning" not in result.stderr
    script = proj.root / "examples" / "scripts" / "report.py"
    script.write_text(script.read_text() + "\n# edited\n")  # a code file: the stage reruns
    plan = stage_json(proj.run("-n", "--json"), "report")
    assert plan["action"] == "run" and plan["reasons"][0]["code"] == "code_changed"


def test_the_api_logs_the_command_and_the_warning(trap: Project,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    import buildtool

    caplog.set_level(logging.INFO, logger="buildtool")
    report = buildtool.build(trap.root)
    assert report.ok
    assert [w.file for w in report.stage("report").warnings] == ["scripts/report.py"]
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.INFO, f"report: $ {PY} scripts/report.py a.txt scripts/report.py "
                          "reports/summary.md") in messages
    assert any(level == logging.WARNING and "the command changed scripts/report.py" in text
               for level, text in messages)
