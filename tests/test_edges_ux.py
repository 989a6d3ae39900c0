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
