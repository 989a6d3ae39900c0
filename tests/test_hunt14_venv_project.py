"""A project folder that is itself a virtual environment (`python -m venv .`) still has its
own files' bytecode made safe before a run command (found by the issue 14 bug hunt: the walk
pruned the project folder as a venv, so a same-second same-size edit ran the old code)."""

from __future__ import annotations

import importlib.util
import py_compile
import sys
from pathlib import Path

import pytest
from conftest import Project
from test_nbcheckpoint_bytecode import (
    BYTECODE_ON,
    PY,
    TAG,
    edit_keeping_stats,
    flags,
    make_module,
    value_project,
)

from buildtool import pycache


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


# Every place a virtual environment's marker can sit relative to the project's modules: the
# project folder itself, a folder above a module, a sibling, a folder below one.
VENV_PLACES = ["", "a", "a/b", "c", "a/b/d"]
MODULE_PLACES = ["", "a", "a/b", "c", "a/b/d", "a/x"]


def _under_a_venv(module: str, venv: str) -> bool:
    """Whether the walk treats `module`'s folder as a library: inside a venv that is not the
    project folder itself."""
    return venv != "" and (module == venv or module.startswith(venv + "/"))


@pytest.mark.parametrize("venv", VENV_PLACES)
def test_exactly_the_modules_outside_a_nested_venv_are_made_checked(tmp_path: Path,
                                                                    venv: str) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / venv / "pyvenv.cfg").parent.mkdir(parents=True, exist_ok=True)
    (root / venv / "pyvenv.cfg").write_text("")
    caches = {}
    for place in MODULE_PLACES:
        src = make_module(root / place, name=f"m{len(caches)}")
        py_compile.compile(str(src), doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
        caches[place] = Path(importlib.util.cache_from_source(str(src)))

    assert pycache.prepare(root, root / "artifacts", {})

    for place, pyc in caches.items():
        assert (flags(pyc) == 0) == _under_a_venv(place, venv), (place, venv)
