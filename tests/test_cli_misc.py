"""Start-up stays light, and --keep-going lets independent stages finish."""

from __future__ import annotations

import subprocess
import sys

from conftest import Project

INDEPENDENT = """
workflow: demo
stages:
  a:
    generate: code/stages.py:rows
    num_records: 4
    batch_size: 2
  b:
    generate: code/stages.py:rows
    seed: a
  c:
    generate: code/stages.py:rows
    num_records: 4
    batch_size: 2
"""


def _imported_modules(project: Project, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "buildtool", *args],
                          cwd=project.root, env=project.env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


def test_version_imports_no_heavy_module(project: Project) -> None:
    imports = _imported_modules(project, "--version")
    for heavy in ("pyarrow", "networkx", "yaml", "pandas"):
        assert f" {heavy}\n" not in imports and f" {heavy}." not in imports, heavy


def test_null_build_imports_no_pyarrow(project: Project) -> None:
    assert project.run().code == 0
    imports = _imported_modules(project, "-q")
    assert "networkx" in imports  # the probe did run
    assert "pyarrow" not in imports


def test_keep_going_builds_independent_stages(project: Project) -> None:
    project.write("Workflowfile", INDEPENDENT)
    stopped = project.run("--json", FAIL_AT="a:1")
    assert stopped.code == 1
    results = {s["stage"]: s["result"] for s in stopped.json()["stages"]}
    assert results == {"a": "failed", "b": "not_run", "c": "not_run"}
    kept_going = project.run("--json", "--keep-going", FAIL_AT="a:1")
    assert kept_going.code == 1
    results = {s["stage"]: s["result"] for s in kept_going.json()["stages"]}
    assert results == {"a": "failed", "b": "not_run", "c": "completed"}

