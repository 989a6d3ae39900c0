"""Start-up: `dd-build --version` answers before the CLI is imported, as the CLI would; a null
build from the compiled workflow imports nothing it does not use."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import Project
from test_nbcompile_cache import run

# What the null build must not import: the Workflowfile's readers (the compiled workflow
# holds what they made), the data libraries, and what only other commands or errors use.
NOT_IN_A_NULL_BUILD = ("yaml", "networkx", "pyarrow", "pandas", "logging", "tempfile",
                       "shlex", "difflib", "buildtool.workflowfile", "buildtool.yamlsource",
                       "buildtool.claims", "buildtool.codenames", "buildtool.schema",
                       "buildtool.datasets")


def _imports(project: Project, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "buildtool", *args],
                          cwd=project.root, env=project.env(), capture_output=True, text=True,
                          timeout=300)
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:")}
    return proc, names


def _via_cli_main(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from buildtool.cli import main; raise SystemExit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=project.root,
                          env=project.env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [("--version",), ("--json", "--version"),
                                  ("--version", "--json"), ("status", "--version"),
                                  ("-q", "--version")])
def test_version_says_what_the_cli_says(project: Project, args: tuple[str, ...]) -> None:
    fast = project.run(*args)
    full = _via_cli_main(project, *args)
    assert (fast.code, fast.stdout, fast.stderr) == (full.returncode, full.stdout, full.stderr)
    assert fast.code == 0 and "0." in fast.stdout


def test_version_alone_imports_no_cli(project: Project) -> None:
    proc, names = _imports(project, "--version")
    assert proc.returncode == 0 and proc.stdout.startswith("dd-build ")
    assert {n for n in names if n.startswith("buildtool")} == {"buildtool"}
    assert not {"argparse", "dataclasses", "typing", "json"} & names - _startup(project)


def _startup(project: Project) -> set[str]:
    """What the interpreter imports by itself here (site, .pth files)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], cwd=project.root,
                          env=project.env(), capture_output=True, text=True, timeout=300)
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
            if line.startswith("import time:")}


def test_version_with_stdout_gone_is_silent(project: Project) -> None:
    closed = subprocess.run([sys.executable, "-m", "buildtool", "--version"], cwd=project.root,
                            env=project.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, timeout=300, close_fds=True,
                            preexec_fn=lambda: __import__("os").close(1))
    assert closed.returncode == 0 and closed.stderr == ""
    reader = subprocess.Popen([sys.executable, "-m", "buildtool", "--version"],
                              cwd=project.root, env=project.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()  # the reader went away before the answer
    assert reader.wait(timeout=300) == 0
    assert reader.stderr.read() == b""


def test_the_console_script_entry_point_is_the_fast_path() -> None:
    from conftest import REPO

    text = (REPO / "pyproject.toml").read_text()
    assert 'dd-build = "buildtool.__main__:main"' in text
    from buildtool.__main__ import main

    assert callable(main)


def test_a_null_build_from_the_cache_imports_only_what_it_uses(project: Project) -> None:
    assert project.run().code == 0
    assert project.run("status").code == 0
    result, hit = run(project, "-q")
    assert result.code == 0 and hit
    proc, names = _imports(project, "-q")
    assert proc.returncode == 0
    names -= _startup(project)  # what site imported here is not the build's
    assert not {n for n in names for heavy in NOT_IN_A_NULL_BUILD
                if n == heavy or n.startswith(heavy + ".")}
