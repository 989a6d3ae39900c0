"""A project folder that is itself a virtual environment (`python -m venv .`) still has its
own files' bytecode made safe before a run command (found by the issue 14 bug hunt: the walk
pruned the project folder as a venv, so a same-second same-size edit ran the old code)."""

from __future__ import annotations

import py_compile
import sys

from conftest import Project
from test_nbcheckpoint_bytecode import BYTECODE_ON, PY, TAG, edit_keeping_stats, value_project


def test_a_project_that_is_a_venv_runs_the_new_code(project: Project) -> None:
    mod = value_project(project, f"{PY} code/run.py {{outputs}}")
    project.write("pyvenv.cfg", f"home = {sys.prefix}\ninclude-system-site-packages = false\n")
    assert project.run(**BYTECODE_ON).code == 0
    assert (project.root / "code" / "__pycache__" / f"mod.{TAG}.pyc").exists()
    assert (project.root / "value.txt").read_text() == "1"
    edit_keeping_stats(mod, "VALUE = 1", "VALUE = 2")
    result = project.run("--force", "r", **BYTECODE_ON)
    assert result.code == 0, result.stderr
    assert (project.root / "value.txt").read_text() == "2"


def test_a_venv_inside_the_project_is_still_a_library(project: Project) -> None:
    """Its packages keep their own (timestamp) bytecode, untouched."""
    value_project(project, f"{PY} code/run.py {{outputs}}")
    venv = project.root / "env"
    project.write("env/pyvenv.cfg", "home = /usr\n")
    project.write("env/lib/pkg/m.py", "A = 1\n")
    pyc = venv / "lib" / "pkg" / "__pycache__" / f"m.{TAG}.pyc"
    py_compile.compile(str(venv / "lib/pkg/m.py"), cfile=str(pyc), doraise=True)
    before = pyc.read_bytes()
    assert project.run(**BYTECODE_ON).code == 0
    assert pyc.read_bytes() == before
