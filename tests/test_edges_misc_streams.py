"""Stage code that replaces or closes sys.stdout / sys.stderr cannot lose or break dd-build's
own output (issue 7: "Hard edges").

dd-build prints to streams of its own, made at start-up on duplicates of fds 1 and 2; around
each call of stage code, capture puts back the sys.stdout / sys.stderr objects it found (a new
one on the same descriptor when the code closed it), so the next stage's prints still reach
its log.
"""

from __future__ import annotations

import json

import pytest
from conftest import Project

# How stage a's module treats the standard streams: at import, or inside its call.
TAMPERING = {
    "replaced at import": ("import io\nsys.stdout = io.StringIO()\nsys.stderr = io.StringIO()",
                           ""),
    "set to None at import": ("sys.stdout = None\nsys.stderr = None", ""),
    "closed in the call": ("", "sys.stdout.close()\n    sys.stderr.close()"),
    "replaced in the call": ("", "sys.stdout = open(os.devnull, 'w')\n"
                                 "    sys.stderr = open(os.devnull, 'w')"),
}

TAMPER = '''
import os, sys
{at_import}

def make(ctx):
    {in_call}
    if ctx.params.get("fail"):
        raise RuntimeError("a failed after touching the streams")
    return [{{"id": ctx.offset + i}} for i in range(ctx.size)]
'''

LOUD = '''
import sys

def make(ctx):
    print("b prints to stdout")
    print("b prints to stderr", file=sys.stderr)
    return ctx.seed_rows
'''

WORKFLOW = """
workflow: demo
stages:
  a:
    generate: code/tamper.py:make
    num_records: 4
    batch_size: 2
    params: {fail: FAIL}
  b:
    generate: code/loud.py:make
    seed: a
"""


def setup(project: Project, how: str, fail: bool = False) -> None:
    at_import, in_call = TAMPERING[how]
    project.write("code/tamper.py", TAMPER.format(at_import=at_import, in_call=in_call or "pass"))
    project.write("code/loud.py", LOUD)
    project.write("Workflowfile", WORKFLOW.replace("FAIL", "true" if fail else "false"))


@pytest.mark.parametrize("how", list(TAMPERING))
def test_the_json_document_survives_stage_code_touching_sys_stdout(project: Project,
                                                                     how: str) -> None:
    setup(project, how)
    result = project.run("--json")
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)  # the whole of stdout: one document
    assert doc["ok"] is True
    assert [(s["stage"], s["result"]) for s in doc["stages"]] == [("a", "completed"),
                                                                   ("b", "completed")]
    assert "✓ b: completed" in result.stderr  # the text still goes to stderr
    log = (project.artifacts / "b" / "log.txt").read_text()
    assert "b prints to stdout" in log and "b prints to stderr" in log  # b's prints: its log
    assert "prints" not in result.stdout + result.stderr

    again = project.run("--force", "a", "--force", "b")  # text output too
    assert again.code == 0, again.stderr
    assert "✓ a: completed" in again.stdout and "✓ b: completed" in again.stdout


@pytest.mark.parametrize("how", ["closed in the call", "replaced at import"])
def test_a_failure_after_touching_the_streams_is_reported(project: Project, how: str) -> None:
    setup(project, how, fail=True)
    result = project.run("--json")
    assert result.code == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["error"]["exit_code"] == 1
    a = next(s for s in doc["stages"] if s["stage"] == "a")
    assert a["result"] == "failed" and "a failed after touching the streams" in a["error"]
    assert "a failed after touching the streams" in result.stderr
