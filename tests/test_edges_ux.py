"""What a new user trips over (issue 7, UX slice): late placeholder errors in `run`, a closed
output pipe failing a build, `no` read as false, input keys that depend on spelling, and
messages that say too much or too little."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Project

from buildtool.errors import WorkflowError
from buildtool.workflowfile import load_workflow


def load_error(root: Path, text: str) -> WorkflowError:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Workflowfile").write_text(text)
    with pytest.raises(WorkflowError) as info:
        load_workflow(root / "Workflowfile", "Workflowfile")
    return info.value


def load(root: Path, text: str) -> object:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Workflowfile").write_text(text)
    return load_workflow(root / "Workflowfile", "Workflowfile")


# ---------------------------------------------------------------- 3. `no` is not false


@pytest.mark.parametrize("word", ["no", "No", "NO", "yes", "on", "Off", "y", "N"])
def test_yes_no_param_values_are_refused_at_their_line(tmp_path: Path, word: str) -> None:
    text = ("workflow: demo\nstages:\n  a:\n    run: echo hi > o.txt\n    outputs: [o.txt]\n"
            f"    params:\n      lang: {word}\n")
    if word.lower() in ("y", "n"):  # PyYAML's resolver reads only yes/no/on/off, not y/n
        load(tmp_path, text)  # a string: nothing to refuse
        return
    err = load_error(tmp_path, text)
    assert (err.line, err.column, err.stage, err.key) == (7, 13, "a", "params")
    assert f"`params.lang` is `{word}`" in err.message
    assert err.hint and "write true/false" in err.hint and f'"{word}"' in err.hint


def test_yes_no_inside_lists_and_flow_mappings(tmp_path: Path) -> None:
    err = load_error(tmp_path, "workflow: demo\nstages:\n  a:\n    run: echo\n    outputs: [o]\n"
                     "    params: {langs: [en, no]}\n")
    assert err.line == 6 and "`params.langs[1]` is `no`" in err.message


@pytest.mark.parametrize("word", ["true", "False", "TRUE", '"no"', "'yes'"])
def test_true_false_and_quoted_words_stay(tmp_path: Path, word: str) -> None:
    wf = load(tmp_path, "workflow: demo\nstages:\n  a:\n    run: echo\n    outputs: [o]\n"
              f"    params: {{v: {word}}}\n")
    value = wf.stages["a"].params["v"]  # type: ignore[attr-defined]
    assert value == ({"true": True, "false": False}.get(word.lower(), word.strip("'\"")))


# ---------------------------------------------------------------- 4. ctx.inputs keys


def test_ctx_inputs_keyed_by_normalised_path_and_as_written(project: Project) -> None:
    project.write("prompts/judge.txt", "be fair\n")
    project.write("code/t.py", """
        import pyarrow as pa

        def t(ctx):
            return pa.table({"keys": [sorted(ctx.inputs)],
                             "text": [open(ctx.inputs["prompts/judge.txt"]).read()]})
        """)
    project.write("Workflowfile", """
        workflow: demo
        stages:
          t:
            transform: code/t.py:t
            inputs: [./prompts/judge.txt]
        """)
    res = project.run("--json")
    assert res.code == 0, res.stderr
    row = project.table("t").to_pylist()[0]
    assert row["keys"] == ["./prompts/judge.txt", "prompts/judge.txt"]
    assert row["text"] == "be fair\n"
    # the other spelling is the same input: up to date, and the key still works
    project.write("Workflowfile", project.root.joinpath("Workflowfile").read_text()
                  .replace("./prompts", "prompts"))
    assert project.run("--json").stage("t")["action"] == "up_to_date"


# ---------------------------------------------------------------- 1. run placeholders at load

RUN = "workflow: demo\nstages:\n  a:\n    run: {cmd}\n    outputs: [o.txt, p.txt]\n" \
      "    params: {{title: T, model: {{name: m, temp: 0}}}}\n"


def run_error(root: Path, cmd: str, extra: str = "") -> WorkflowError:
    return load_error(root, RUN.format(cmd=cmd) + extra)


@pytest.mark.parametrize(("cmd", "message", "hint"), [
    ("echo {params.titel} > o.txt", "no parameter `titel`", "did you mean `title`?"),
    ("echo {params.model.nme}", "no parameter `model.nme`", "did you mean `model.name`?"),
    ("echo {params.title.x}", "no parameter `title.x`", None),
    ("cp x {outputs[2]}", "only 2 outputs", "`{outputs[1]}`"),
    ("echo {input}", "unknown placeholder `{input}`; did you mean `{inputs}`?", None),
    ("echo {output}", "unknown placeholder `{output}`; did you mean `{outputs}`?", None),
    ("cat {input[0]}", "did you mean `{inputs[0]}`?", None),
    ("echo {param.title}", "did you mean `{params.title}`?", None),
    ("echo {params}", "unknown placeholder `{params}`", None),
    ("echo {inputs.x}", "unknown placeholder `{inputs.x}`", None),
    ("echo {outputs[x]}", "unknown placeholder `{outputs[x]}`", None),
])
def test_bad_placeholders_fail_at_load(tmp_path: Path, cmd: str, message: str,
                                       hint: str | None) -> None:
    err = run_error(tmp_path, cmd)
    assert (err.file, err.line, err.stage, err.key) == ("Workflowfile", 4, "a", "run")
    assert message in err.message
    if hint:
        assert err.hint and hint in err.hint


def test_params_placeholders_see_the_defaults(tmp_path: Path) -> None:
    text = ("workflow: demo\ndefaults:\n  params: {lang: en}\nstages:\n  a:\n"
            "    run: echo {params.lang} > o.txt\n    outputs: [o.txt]\n")
    assert load(tmp_path, text)
    err = load_error(tmp_path, text.replace("{params.lang}", "{params.lnag}"))
    assert err.line == 6 and err.hint == "did you mean `lang`?"


def test_input_index_checked_only_when_the_count_is_known(tmp_path: Path) -> None:
    for name in ("x.txt", "y.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    err = run_error(tmp_path, "cat {inputs[2]}", "    inputs: [x.txt, y.txt]\n")
    assert "only 2 inputs" in err.message and err.key == "run"
    assert load(tmp_path, RUN.format(cmd="cat {inputs[1]}") + "    inputs: [x.txt, y.txt]\n")
    # a glob's matches: known only when the stage runs
    assert load(tmp_path, RUN.format(cmd="cat {inputs[5]}") + "    inputs: ['[xy].txt']\n")
    # a run stage input's paths are its outputs: at most that many (test_loadcheck_*.py)
    err = run_error(tmp_path, "cat {inputs[5]}",
                    "    inputs: [b]\n  b:\n    run: echo > q\n    outputs: [q]\n")
    assert "at most 1 input" in err.message and err.key == "run"


@pytest.mark.parametrize("cmd", [
    "echo {a,b}", "echo ${HOME} ${input}", "awk '{print $1}' x", "find . -exec echo {} ';'",
    "echo {input,output}.txt", "awk '{input=$1} END {print input}' x",
    "echo {inputs} {outputs} {outputs[1]} {params.title} {params.model.temp}",
])
def test_shell_braces_are_left_alone(tmp_path: Path, cmd: str) -> None:
    assert load(tmp_path, RUN.format(cmd=f'"{cmd}"'))


def test_a_misspelt_placeholder_fails_before_upstream_runs(project: Project) -> None:
    project.write("Workflowfile", """
        workflow: demo
        stages:
          a:
            generate: code/stages.py:rows
            num_records: 2
          b:
            run: echo {params.titel} > o.txt
            inputs: [a]
            outputs: [o.txt]
            params: {title: x}
        """)
    res = project.run()
    assert res.code == 2
    assert "Workflowfile:8:" in res.stderr and "did you mean `title`?" in res.stderr
    assert project.calls() == []  # nothing ran


# ---------------------------------------------------------------- 2. a closed output pipe

SLOW = '''
import time
from pathlib import Path

def rows(ctx):
    if ctx.batch_index == 1:  # wait until the test has closed dd-build's output
        go = Path(__file__).parent / "go"
        while not go.exists():
            time.sleep(0.02)
    return [{"id": ctx.offset + i} for i in range(ctx.size)]
'''

SLOW_FLOW = """
workflow: demo
stages:
  a:
    generate: code/slow.py:rows
    num_records: 6
    batch_size: 1
  b:
    run: echo done > b.txt
    inputs: [a]
    outputs: [b.txt]
"""


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_a_reader_that_goes_away_does_not_fail_the_build(project: Project, closed: str) -> None:
    project.write("code/slow.py", SLOW)
    project.write("Workflowfile", SLOW_FLOW)
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "buildtool", "-v", "--explain"],
                            cwd=project.root, env=project.env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pipe, other = (proc.stdout, proc.stderr) if closed == "stdout" else (proc.stderr, proc.stdout)
    assert pipe is not None and other is not None
    assert pipe.readline()  # like `head -1`: one line, then the reader is gone
    pipe.close()
    (project.root / "code" / "go").write_text("")
    rest = other.read()
    assert proc.wait(timeout=120) == 0, rest
    assert "Broken pipe" not in rest and "Traceback" not in rest
    assert project.record("a")["status"] == "completed"
    assert (project.root / "b.txt").read_text() == "done\n"


def test_status_into_a_closed_pipe_exits_0(project: Project) -> None:
    assert project.run().code == 0
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "buildtool", "status"], cwd=project.root,
                            env=project.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before dd-build has written anything: its first line meets EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""


# ---------------------------------------------------------------- 5. messages


def test_spec_changes_are_spelt_as_yaml() -> None:
    from buildtool.reasons import _show, _type_note

    assert f"{_show(False)} → {_show(0)}{_type_note(False, 0)}" == "false → 0 (bool → int)"
    assert _show(None) == "null" and _show("x") == "x" and _show({"a": [1.0]}) == "{a: [1.0]}"


def test_singular_batch_words() -> None:
    from buildtool.plan import batches

    assert (batches(1), batches(0), batches(2), batches(None)) == ("batch", "batches", "batches",
                                                                   "batches")


def test_failed_before_reason_is_one_line(project: Project) -> None:
    project.write("code/t.py", "def t(ctx):\n    raise ValueError('line one\\nline two')\n")
    project.write("Workflowfile", "workflow: demo\nstages:\n  t:\n    transform: code/t.py:t\n")
    assert project.run().code == 1
    status = project.run("status")
    line = next(ln for ln in status.stdout.splitlines() if "failed last time" in ln)
    assert "line one" in line and line.rstrip().endswith("it is called again")
    assert "line two" not in status.stdout
    doc = project.run("status", "--json").stage("t")
    assert "line two" in doc["reasons"][0]["error"]  # the whole error stays in the JSON


def test_an_interrupted_run_stage_says_so(project: Project) -> None:
    import signal

    project.write("Workflowfile", "workflow: demo\nstages:\n  r:\n    run: touch reached; "
                  "while true; do sleep 0.05; done\n    outputs: [o.txt]\n")
    proc = project.start()
    project.wait_for("reached", proc)
    proc.send_signal(signal.SIGTERM)  # dd-build ends the command's group and records it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted in 'r'; run dd-build again to rerun it" in err
    status = project.run("status").stdout
    assert "the last run was interrupted" in status and "?" not in status


def test_incomplete_words_by_kind() -> None:
    from buildtool.reasons import _incomplete

    assert _incomplete("run", "killed", 0, None) == "the last run was killed while its command ran"
    assert _incomplete("transform", "interrupted", 0, 1) == \
        "the last run was interrupted while its function ran"
    assert _incomplete("generate", "interrupted", 1, 1) == \
        "the last run was interrupted with 1 of 1 batch done"
    assert _incomplete("generate", "killed", 2, 5) == "the last run was killed with 2 of 5 batches done"


def test_force_and_rerun_from_suggest_a_stage(project: Project) -> None:
    res = project.run("--force", "bb")
    assert res.code == 2 and "did you mean `b`?" in res.stderr
    res = project.run("--rerun-from", "aa", "-n")
    assert res.code == 2 and "did you mean `a`?" in res.stderr
    res = project.run("a", "--force", "c")
    assert res.code == 2 and "not needed by these targets" in res.stderr


def test_clean_of_a_removed_stage_points_at_orphans(project: Project) -> None:
    assert project.run().code == 0
    project.write("Workflowfile", CHAIN_WITHOUT_C)
    res = project.run("clean", "c")
    assert res.code == 2 and "dd-build clean --orphans" in res.stderr
    assert (project.artifacts / "c").is_dir()  # nothing removed


CHAIN_WITHOUT_C = """
workflow: demo
stages:
  a:
    generate: code/stages.py:rows
    num_records: 20
    batch_size: 5
    params: {tag: x}
"""


def test_help_lists_the_commands(project: Project) -> None:
    out = project.run("--help").stdout
    for command in ("status", "dag", "show", "export", "override", "clean", "schema"):
        assert f"\n  {command} " in out


def test_singular_in_result_lines(project: Project) -> None:
    project.write("Workflowfile", "workflow: demo\nstages:\n  a:\n    generate: "
                  "code/stages.py:rows\n    num_records: 2\n")
    out = project.run().stdout
    assert "1 of 1 batch run" in out
